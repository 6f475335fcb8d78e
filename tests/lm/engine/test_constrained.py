"""Constrained decoding on the real embedded models: every completion parses, choices stay choices,
generation ends after the last field, and the reasoning budget holds."""

from __future__ import annotations

import pytest

from cotune.lm import registry
from cotune.lm.engine.constrain import GrammarEngine
from cotune.program import ChainOfThought, Predict
from cotune.program.format import parse
from cotune.tasks import load_task
from cotune.tasks.iris import signature as iris_signature

pytestmark = pytest.mark.integration

MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b"]


@pytest.fixture(scope="module", params=MODELS)
def lm(request):
    source = registry.MODELS[request.param]
    if not source.package_dirs():
        pytest.skip(f"{request.param} is not installed: {source.install}")
    model = registry.load(request.param, cache=False)
    yield model
    model.close()


@pytest.fixture(scope="module")
def iris():
    return load_task("iris")


def test_choice_field_only_ever_yields_its_choices(lm, iris):
    """100 sampled runs at temperature 2 (where free text is noise): every one parses to a species.

    4 rollouts of 25 flowers (a rollout after the first starts from its prompt's stored prefix), answering
    directly: the choice is sampled from the model's own distribution over the labels' tokens.
    """
    classify = Predict(iris_signature()).bind(lm)
    batch = [classify.messages(**ex.inputs()) for ex in list(iris.train)[:25]]
    out = [c for rollout in range(7, 11)
           for c in lm.generate(batch, constraint=classify.constraint(), temperature=2.0, rollout_id=rollout, max_tokens=16)]  # fmt: skip
    species = [parse(classify.signature, c.text)["species"] for c in out]
    assert len(species) == 100 and set(species) <= {"setosa", "versicolor", "virginica"}
    assert len(set(species)) >= 2  # samples, not one answer


def test_constrained_completions_parse_and_stop_after_the_last_field(lm, iris):
    classify = ChainOfThought(iris_signature(), reasoning_budget=16).bind(lm)  # short; the budget's own test is below
    batch = [classify.messages(**ex.inputs()) for ex in list(iris.dev)[:8]]
    for out in lm.generate(batch, constraint=classify.constraint(), max_tokens=48):
        fields = parse(classify.signature, out.text)
        assert fields["species"] in {"setosa", "versicolor", "virginica"}
        assert out.text.startswith("Reasoning: ")
        assert out.text.endswith("Species: " + fields["species"])  # nothing after the answer
        assert out.finish_reason == "stop"


def test_free_and_constrained_differ_in_the_cache_key(lm):
    qa = Predict("question -> answer: int")
    q = {"question": "What is 17 + 25?"}
    assert lm.cache_key(qa.messages(**q), lm.config.replace(constraint=qa.bind(lm).constraint())) != lm.cache_key(
        qa.messages(**q), lm.config
    )


def test_reasoning_budget_forces_the_answer(lm):
    cot = ChainOfThought("question -> answer: float", reasoning_budget=8).bind(lm)
    question = "Write a long essay about the history of numbers, then tell me what 6 times 7 is."
    out = lm(cot.messages(question=question), constraint=cot.constraint(), max_tokens=60)
    fields = parse(cot.signature, out.text)
    reasoning_tokens = len(lm.engine.tokenizer.encode(fields["reasoning"]))
    assert reasoning_tokens <= 8 + 3 and isinstance(fields["answer"], float)


def test_numbers_and_json_lists_are_well_formed(lm):
    qa = Predict("question -> total: int, parts: list[int]").bind(lm)
    pred = qa(question="Split 10 into two whole numbers and give the total and the parts.")
    assert isinstance(pred.total, int) and all(isinstance(p, int) for p in pred.parts)


def test_special_tokens_are_not_free_text(lm):
    engine = lm.engine.grammar
    assert isinstance(engine, GrammarEngine)
    ids = [i for i in lm.engine.tokenizer.all_special_ids if i < engine.vocab_size]
    encoded_empty = all(engine.info.decoded_vocab[i] == b"" for i in ids)
    assert ids and encoded_empty


def test_checking_the_proposed_token_first_chooses_what_masking_every_row_chooses(lm, iris):
    """Greedy: the optimistic path (fill a row's bitmask only when its argmax is refused) gives the very
    completions of the full mask, for a choice after a budgeted chain of thought and for a number."""
    classify = ChainOfThought(iris_signature(), reasoning_budget=12).bind(lm)
    solve = ChainOfThought("question -> answer: float", reasoning_budget=12).bind(lm)
    iris_batch = [classify.messages(**ex.inputs()) for ex in list(iris.dev)[:6]]
    math_batch = [solve.messages(question=f"A box holds {n} pens. How many pens are in 3 boxes?") for n in (4, 12, 25)]
    grammar = lm.engine.grammar

    def run():
        return ([c.text for c in lm.generate(iris_batch, constraint=classify.constraint(), max_tokens=40)],
                [c.text for c in lm.generate(math_batch, constraint=solve.constraint(), max_tokens=40)])  # fmt: skip

    run()  # once first: later runs start from stored prompt prefixes, whose bf16 numerics differ slightly
    steps0 = grammar.mask_steps
    optimistic = run()
    assert grammar.mask_steps > steps0  # the grammar ran
    grammar.optimistic = False
    try:
        full = run()
    finally:
        grammar.optimistic = True
    assert optimistic == full
    assert all(parse(solve.signature, t)["answer"] is not None for t in optimistic[1])


def test_sampling_by_rejection_draws_from_the_masked_distribution(lm):
    """At a temperature, a draw the grammar refuses is redrawn from the masked distribution: the first
    tokens' frequencies match those of sampling after masking every row (same logits, 600 draws each; a
    redraw that took the masked argmax instead would put ~all of them on "red", a distance of ~0.3)."""
    import torch

    from cotune.lm.engine.sampling import seeded_sampler as _seeded_sampler
    from cotune.program.grammar import constraint

    sig = Predict("question -> answer: Literal['red', 'green', 'blue']").signature
    engine = lm.engine.grammar
    tok = lm.engine.tokenizer
    prefix = tok.encode("Answer: ", add_special_tokens=False)
    rows = 600
    torch.manual_seed(0)
    logits = torch.randn(engine.vocab_size) * 2  # most of the mass on tokens the grammar refuses
    for word, bias in (("red", 3.0), ("green", 2.0), ("blue", 1.0)):
        logits[tok.encode(word, add_special_tokens=False)[0]] += bias

    def first_choice(optimistic: bool) -> list[str]:
        sampler = _seeded_sampler(list(range(rows)), 1.0, 1.0, "cpu")
        mask = engine.processor(constraint(sig), rows, 8, sampler=sampler, optimistic=optimistic)
        last = None
        for token in prefix:  # walk every row through the label
            forced = torch.full((rows, engine.vocab_size), float("-inf"))
            forced[:, token] = 0.0
            mask.step(range(rows), last, forced)
            last = [token] * rows
        picks = mask.step(range(rows), last, logits.repeat(rows, 1)).argmax(dim=-1).tolist()
        return [tok.decode([t]).strip() for t in picks]

    optimistic, full = first_choice(True), first_choice(False)
    assert all(p and any(w.startswith(p) for w in ("red", "green", "blue")) for p in optimistic + full)
    seen = set(optimistic) | set(full)
    distance = sum(abs(optimistic.count(t) - full.count(t)) for t in seen) / (2 * rows)
    assert distance < 0.12, (distance, {t: (optimistic.count(t), full.count(t)) for t in seen})


def test_a_proposed_special_token_is_masked_without_a_grammar_warning(lm, capfd):
    """A row whose most likely token is a special token (``<|im_start|>``) gets a grammar-allowed token, and
    xgrammar is not asked to accept the special one (it would print a warning on the user's terminal)."""
    import torch

    from cotune.program.grammar import constraint

    engine = lm.engine.grammar
    special = next(i for i in lm.engine.tokenizer.all_special_ids if i not in engine.info.stop_token_ids)
    mask = engine.processor(constraint(Predict("question -> answer: int").signature), 1, 8)
    scores = torch.zeros(1, engine.vocab_size)
    scores[0, special] = 10.0
    chosen = int(mask.step([0], None, scores).argmax())
    assert chosen != special and lm.engine.tokenizer.decode([chosen]) in "Answer: "
    assert "cannot accept" not in capfd.readouterr().err
