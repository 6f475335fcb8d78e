"""GPO on FakeLM: edit budgets, enforcement, scoring data, dedup, retrieval, multi-predictor, determinism."""

from __future__ import annotations

import re

import numpy as np
import pytest

import cotune as ct
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM
from cotune.optimize.edit import cosine_budget, edit_budget, normalize_instruction, word_edit_distance
from cotune.optimize.gpo import GPO, select_direction
from cotune.optimize.gpo_prompts import clean_instruction

# -- a toy task whose score is a known function of the instruction ------------------------------------
# The task LM answers question n right iff n % 4 < (number of KEYWORDS in the instruction), so an
# instruction with k keywords scores k/4 on any set of questions that is balanced mod 4.
KEYWORDS = ("carefully", "digits", "exactly", "check")
INITIAL = "Answer the question."


def quality(instruction: str) -> int:
    found = set(re.findall(r"[a-z]+", instruction.lower()))
    return sum(k in found for k in KEYWORDS)


def instruction_of(messages) -> str:
    return messages[0]["content"].split("\n\nReply in exactly this format")[0]


META_LABELS = ("Task Examples", "Past Instructions", "Current Instruction", "Current Score", "Edit Budget")


def meta_fields(messages) -> dict[str, str]:
    """The fields of a GPO meta-prompt's user message."""
    text = messages[-1]["content"]
    pattern = re.compile(rf"^({'|'.join(META_LABELS)}):[ \n]", re.MULTILINE)
    parts = pattern.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def is_meta(messages) -> bool:
    return "New Instruction:" in messages[0]["content"]


def add_keyword(current: str, n: int = 1) -> str:
    missing = [k for k in KEYWORDS if k not in current.lower()]
    return " ".join([current, *missing[:n]]) if missing else current + " please"


def make_lm(propose, seen: list | None = None) -> FakeLM:
    """One FakeLM playing both parts: ``propose(fields, config)`` writes instructions, the task part is fixed."""

    def respond(messages, config):
        if is_meta(messages):
            return f"New Instruction: {propose(meta_fields(messages), config)}"
        n = int(messages[-1]["content"].split(": ")[1])
        if seen is not None:
            seen.append(n)
        right = n % 4 < quality(instruction_of(messages))
        return f"Answer: {n if right else -1}"

    return FakeLM(respond)


def data(numbers) -> list[ct.Example]:
    return [ct.Example(question=str(n), answer=str(n)).with_inputs("question") for n in numbers]


def metric(example, prediction) -> float:
    return float(prediction["answer"] == example["answer"])


class QA(ct.Program):
    def __init__(self):
        self.answer = ct.Predict("question -> answer", instruction=INITIAL)

    def forward(self, question):
        return self.answer(question=question)


TRAIN, VAL = data(range(100, 108)), data(range(16))


def gpo(**kwargs) -> GPO:
    defaults = dict(num_steps=3, candidates_per_step=2, retrieval="recency", num_threads=2, minibatch_size=8)
    return GPO(metric, **(defaults | kwargs))


def replay_currents(trajectory):
    """The current instruction before each step, rebuilt from the ``accepted`` flags."""
    current, before = trajectory[0]["instruction"], {}
    for step in sorted({e["step"] for e in trajectory if e["step"] > 0}):
        before[step] = current
        moved = [e for e in trajectory if e["step"] == step and e["accepted"]]
        if moved:
            current = moved[0]["instruction"]
    return before


# -- edit distance and budgets -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("", "", 0),
        ("a b c", "a b c", 0),
        ("a b c", "", 3),
        ("", "x y", 2),
        ("a b c", "a x c", 1),
        ("a b c", "a c", 1),
        ("a b c", "b c d", 2),
        ("the cat sat", "sat the cat", 2),
        ("Classify the flower.", "classify the flower", 2),  # case and punctuation count
        ("a  b\n c", "a b c", 0),  # whitespace does not
    ],
)
def test_word_edit_distance(a, b, expected):
    assert word_edit_distance(a, b) == expected
    assert word_edit_distance(b, a) == expected


def test_cosine_schedule_starts_ends_and_decreases():
    for steps in (2, 3, 6, 10):
        values = [cosine_budget(t, steps, 50, 10) for t in range(steps)]
        assert values[0] == 50 and values[-1] == 10
        assert all(x >= y for x, y in zip(values, values[1:], strict=False))
    assert [cosine_budget(t, 6) for t in range(6)] == [50, 46, 36, 24, 14, 10]
    assert cosine_budget(0, 1, 50, 10) == 50  # one step: the start budget


def test_fixed_and_none_budgets_and_bad_values():
    assert [edit_budget("fixed", t, 4, 30, 5) for t in range(4)] == [30] * 4
    assert [edit_budget("none", t, 4) for t in range(4)] == [None] * 4
    with pytest.raises(UnknownChoiceError, match="cosine, fixed, none"):
        edit_budget("linear", 0, 4)
    with pytest.raises(ConfigError, match="budget_end"):
        edit_budget("cosine", 0, 4, start=5, end=10)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("Classify the flower.", "Classify the flower."),
        ('"Classify the flower."', "Classify the flower."),
        ("Instruction: Classify  the\nflower.", "Classify the flower."),
        ("New instruction: `Be brief.`", "Be brief."),
        ("Current Instruction: Be brief.", "Be brief."),
        ("```\nBe brief.\n```", "Be brief."),
        ("  ", ""),
        # the reply format's placeholder copied, and a quote left open (Qwen2.5-Coder-1.5B on BBH)
        ("<Add up all the distinct items listed.>", "Add up all the distinct items listed."),
        (
            '"To determine the total count, add up the quantities.',
            "To determine the total count, add up the quantities.",
        ),
        ("Add the items.'", "Add the items."),
        ("<Add the items. This helps when items repeat.", "Add the items. This helps when items repeat."),
        ("Compare <a> and <b>.", "Compare <a> and <b>."),
        ("Answer 'yes' or 'no'.", "Answer 'yes' or 'no'."),
        ("Don't repeat an item.", "Don't repeat an item."),
    ],
)
def test_clean_instruction(raw, clean):
    assert clean_instruction(raw) == clean


def test_normalize_instruction_for_dedup():
    assert normalize_instruction(' "Answer  the Question." ') == normalize_instruction("answer the question")
    assert normalize_instruction("Answer the question.") != normalize_instruction("Answer the questions.")


# -- retrieval ---------------------------------------------------------------------------------------
class DictEmbedder:
    def __init__(self, vectors):
        self.vectors, self.calls = vectors, []

    def embed(self, texts):
        self.calls.append(list(texts))
        rows = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


HISTORY = [("A", 0.1), ("B", 0.9), ("C", 0.5), ("D", 0.3), ("E", 0.7), ("CUR", 0.4)]
VECTORS = {"A": [1, 0], "B": [0, 1], "C": [0.9, 0.1], "D": [0.6, 0.4], "E": [0.2, 0.8], "CUR": [1, 0.05]}


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("relevance", ["A", "C", "D"]),  # most similar to CUR, whatever their scores
        ("recency", ["C", "D", "E"]),  # the last three before the current one
        ("topk", ["B", "E", "C"]),  # the best three scores
        ("none", []),
    ],
)
def test_retrieval_modes_pick_the_right_instructions(mode, expected):
    embedder = DictEmbedder(VECTORS)
    picked = select_direction(HISTORY, "CUR", mode, 3, embedder)
    assert sorted(text for text, _ in picked) == sorted(expected)
    assert [s for _, s in picked] == sorted(s for _, s in picked)  # shown worst to best
    assert "CUR" not in [t for t, _ in picked]
    assert bool(embedder.calls) == (mode == "relevance")


def test_retrieval_errors():
    with pytest.raises(UnknownChoiceError, match="none, recency, relevance, topk"):
        select_direction(HISTORY, "CUR", "nearest", 3)
    with pytest.raises(ConfigError, match="embedder"):
        select_direction(HISTORY, "CUR", "relevance", 3, None)


def test_relevance_mode_shows_the_retrieved_instructions_in_the_meta_prompt():
    shown = []

    def propose(fields, config):
        shown.append(fields["Past Instructions"])
        return add_keyword(fields["Current Instruction"])

    vectors = {}

    class WordEmbedder:  # similarity = shared keywords, so the direction is predictable
        def embed(self, texts):
            rows = np.array([[float(k in t) for k in KEYWORDS] + [1.0] for t in texts])
            vectors.update(zip(texts, rows, strict=True))
            return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    opt = gpo(retrieval="relevance", num_retrieved=1, candidates_per_step=1, embedder=WordEmbedder())
    opt.compile(QA().bind(make_lm(propose)), trainset=TRAIN, valset=VAL)
    assert shown[0] == "none yet"
    assert "Score 0.00: Answer the question." in shown[1]  # the only past instruction at step 2
    assert len(shown[2].splitlines()) == 1  # num_retrieved=1
    assert vectors  # the embedder was used


# -- the optimizer -----------------------------------------------------------------------------------
def test_improves_the_instruction_and_records_the_trajectory():
    events = []
    opt = gpo(num_steps=4)
    program = QA().bind(make_lm(lambda f, c: add_keyword(f["Current Instruction"])))
    best = opt.compile(program, trainset=TRAIN, valset=VAL, events=events.append)
    traj = opt.trajectory_["answer"]
    assert traj[0] == dict(step=0, instruction=INITIAL, score=0.0, budget=None, edit_distance=0, accepted=True)
    assert quality(best.answer.instruction) == 4 and opt.best_score_ == 1.0
    assert opt.best_instructions_ == {"answer": best.answer.instruction}
    assert [e["budget"] for e in traj if e["accepted"]][1:] == [edit_budget("cosine", t, 4) for t in range(4)]
    assert ct.evaluate(best, VAL, metric).score == opt.best_score_
    steps = [e for e in events if e.name == "gpo.step"]
    assert [e.fields["step"] for e in steps] == [1, 2, 3, 4]
    assert [e.fields["done"] for e in events if e.name == "progress.advance" and "step" in e.fields] == [1, 2, 3, 4]


def test_over_budget_rewrites_are_never_accepted():
    long = " ".join(f"word{i}" for i in range(60))
    opt = gpo(num_steps=3, candidates_per_step=3, max_retries=2)
    best = opt.compile(QA().bind(make_lm(lambda f, c: long)), trainset=TRAIN, valset=VAL)
    assert best.answer.instruction == INITIAL
    assert [e["instruction"] for e in opt.trajectory_["answer"]] == [INITIAL]
    assert opt.rejected_["answer"]["over_budget"] == 3 * 3 * 3  # steps x candidates x attempts


def test_over_budget_attempts_are_retried_with_a_reminder_and_a_new_rollout():
    asked = []

    def propose(fields, config):
        asked.append((fields["Edit Budget"], config.rollout_id, config.temperature, config.max_tokens))
        if "previous attempt" in fields["Edit Budget"]:
            return add_keyword(fields["Current Instruction"])
        return add_keyword(fields["Current Instruction"], 4) + " " + " ".join(["more"] * 60)

    opt = gpo(num_steps=2, candidates_per_step=2, max_retries=1)
    best = opt.compile(QA().bind(make_lm(propose)), trainset=TRAIN, valset=VAL)
    assert opt.rejected_["answer"]["over_budget"] == 2 * 2  # every first attempt
    assert quality(best.answer.instruction) == 2
    reminders = [b for b, *_ in asked if "previous attempt" in b]
    # 4 missing keywords + 60 words at step 1; 3 + 60 at step 2
    assert sorted(re.search(r"changed (\d+) words", b).group(1) for b in reminders) == ["63", "63", "64", "64"]
    assert len({a[1] for a in asked}) == len(asked)  # every request a distinct rollout
    assert {a[2] for a in asked} == {0.7}
    # room for the current instruction plus the budget, two tokens a word: 3 + 50 words, then 4 + 10
    assert {a[3] for a in asked} == {2 * (3 + 50) + 16, 2 * (4 + 10) + 16}


def test_every_accepted_instruction_is_within_its_budget():
    # Proposes two keywords (2 words) or a 5-word rewrite, depending on the rollout; budgets 4, 3, 2, 1.
    def propose(fields, config):
        current = fields["Current Instruction"]
        if config.rollout_id % 3 == 0:
            return current + " and then also verify"
        missing = [k for k in KEYWORDS if k not in current]
        return " ".join([current, *(missing + ["more", "care"])[:2]])  # always two more words

    opt = gpo(num_steps=4, candidates_per_step=3, budget_start=4, budget_end=1, max_retries=1)
    opt.compile(QA().bind(make_lm(propose)), trainset=TRAIN, valset=VAL)
    traj = opt.trajectory_["answer"]
    before = replay_currents(traj)
    assert [edit_budget("cosine", t, 4, 4, 1) for t in range(4)] == [4, 3, 2, 1]
    for entry in traj[1:]:
        distance = word_edit_distance(before[entry["step"]], entry["instruction"])
        assert distance == entry["edit_distance"] <= entry["budget"]
    assert not [e for e in traj if e["step"] == 4]  # budget 1 admits none of the proposals
    assert opt.rejected_["answer"]["over_budget"] >= 3 * 2


def test_no_budget_accepts_any_rewrite():
    rewrite = " ".join(KEYWORDS) + " " + " ".join(f"w{i}" for i in range(60))
    opt = gpo(edit_budget="none", num_steps=1, candidates_per_step=1)
    best = opt.compile(QA().bind(make_lm(lambda f, c: rewrite)), trainset=TRAIN, valset=VAL)
    assert best.answer.instruction == rewrite
    assert opt.trajectory_["answer"][1]["budget"] is None and opt.rejected_["answer"]["over_budget"] == 0


def test_candidates_are_scored_on_the_valset_only():
    seen = []
    train, val = data(range(100, 140)), data(range(40))
    opt = gpo(minibatch_size=8, num_steps=2)
    opt.compile(
        QA().bind(make_lm(lambda f, c: add_keyword(f["Current Instruction"]), seen)), trainset=train, valset=val
    )
    assert seen and set(seen) <= set(range(40))  # the task LM never saw a training question
    assert set(seen) == set(range(40))  # the final confirmation covers the full valset


def test_minibatch_scores_then_full_valset_confirmation():
    calls = []
    opt = gpo(minibatch_size=8, num_steps=2, num_confirm=2)
    program = QA().bind(make_lm(lambda f, c: add_keyword(f["Current Instruction"]), calls))
    best = opt.compile(program, trainset=TRAIN, valset=data(range(40)))
    confirmed = opt.confirmed_["answer"]
    assert list(confirmed)[0] == INITIAL and len(confirmed) == 3
    assert opt.best_score_ == max(confirmed.values()) == confirmed[best.answer.instruction]


def test_moves_to_the_best_candidate_but_returns_the_best_seen():
    # The optimizer only ever proposes worse instructions: each step still moves (a gradient step is always
    # taken), but the final program keeps the better initial instruction.
    start = "Answer carefully with digits exactly."

    def propose(fields, config):
        current = fields["Current Instruction"]
        return re.sub("|".join(KEYWORDS), "quickly", current, count=1)

    class Good(QA):
        def __init__(self):
            self.answer = ct.Predict("question -> answer", instruction=start)

    opt = gpo(num_steps=2, candidates_per_step=1)
    best = opt.compile(Good().bind(make_lm(propose)), trainset=TRAIN, valset=VAL)
    traj = opt.trajectory_["answer"]
    assert all(e["accepted"] for e in traj) and traj[1]["score"] < traj[0]["score"]
    assert best.answer.instruction == start and opt.best_score_ == 0.75


def test_duplicates_are_scored_once():
    seen = []
    variants = ["Answer carefully.", "answer  carefully", '"Answer carefully."']
    opt = gpo(num_steps=2, candidates_per_step=3, minibatch_size=16)

    def propose(fields, config):
        return variants[config.rollout_id % 3]

    opt.compile(QA().bind(make_lm(propose, seen)), trainset=TRAIN, valset=VAL)
    traj = opt.trajectory_["answer"]
    assert [e["instruction"] for e in traj] == [INITIAL, traj[1]["instruction"]]
    assert normalize_instruction(traj[1]["instruction"]) == "answer carefully"
    assert opt.rejected_["answer"]["duplicate"] == 2 + 3
    assert len(seen) == 16 * 2  # two distinct instructions scored on the 16 questions; confirmation reuses them


def test_edit_update_uses_the_edit_meta_prompt():
    systems = []

    def propose(fields, config):
        return add_keyword(fields["Current Instruction"])

    lm = make_lm(propose)
    gpo(update="edit", num_steps=1, candidates_per_step=1).compile(QA().bind(lm), trainset=TRAIN, valset=VAL)
    systems = [m[0]["content"] for m, _ in lm.calls if is_meta(m)]
    assert systems and all("Edit the current instruction" in s for s in systems)


def test_meta_prompt_carries_task_examples_budget_and_current_instruction():
    got = []
    opt = gpo(num_steps=1, candidates_per_step=1, num_task_examples=2)
    opt.compile(QA().bind(make_lm(lambda f, c: got.append(f) or "Answer carefully.")), trainset=TRAIN, valset=VAL)
    fields = got[0]
    assert fields["Current Instruction"] == INITIAL and fields["Current Score"] == "0.00"
    assert fields["Edit Budget"] == "Change at most 50 words of the current instruction."
    lines = fields["Task Examples"].splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"\d\. Question: (\d+) -> Answer: \1", line) for line in lines)
    assert {int(line.split()[2]) for line in lines} <= set(range(100, 108))  # from the trainset


class TwoStep(ct.Program):
    def __init__(self):
        self.draft = ct.Predict("question -> draft", instruction="Draft it.")
        self.answer = ct.Predict("question, draft -> answer", instruction="Answer it.")

    def forward(self, question):
        return self.answer(question=question, draft=self.draft(question=question).draft)


def two_step_lm(order):
    """Draft reports its instruction's quality; the answer is right iff n % 8 < both qualities added."""

    def respond(messages):
        if is_meta(messages):
            current = meta_fields(messages)["Current Instruction"]
            order.append(current.split()[0])
            return f"New Instruction: {add_keyword(current)}"
        fields = dict(line.split(": ", 1) for line in messages[-1]["content"].splitlines())
        q = quality(instruction_of(messages))
        if "Draft" not in fields:
            return f"Draft: {q}"
        n = int(fields["Question"])
        return f"Answer: {n if n % 8 < q + int(fields['Draft']) else -1}"

    return FakeLM(respond)


def test_every_predictor_of_a_two_predictor_program_is_optimized_in_turn():
    order = []
    opt = gpo(num_steps=4, candidates_per_step=1, minibatch_size=16)
    best = opt.compile(TwoStep().bind(two_step_lm(order)), trainset=TRAIN, valset=VAL)
    assert list(opt.trajectory_) == ["draft", "answer"]
    assert order == ["Draft"] * 4 + ["Answer"] * 4  # one predictor after the other
    assert quality(best.draft.instruction) == 4 and quality(best.answer.instruction) == 4
    assert opt.best_score_ == 1.0 and set(opt.best_instructions_) == {"draft", "answer"}


def test_input_program_is_unchanged_and_results_are_seeded():
    program = QA().bind(make_lm(lambda f, c: add_keyword(f["Current Instruction"], 1 + c.rollout_id % 2)))
    before = program.dump_state()
    val = data(range(40))
    runs = []
    for seed in (0, 0, 1):
        opt = gpo(seed=seed, num_steps=2, candidates_per_step=3, minibatch_size=8)
        best = opt.compile(program, trainset=TRAIN, valset=val)
        runs.append((opt.trajectory_, best.answer.instruction, opt.best_score_))
    assert program.dump_state() == before and program.answer.instruction == INITIAL
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]  # another seed: other mini-batch, other rollouts


def test_bad_arguments_are_reported():
    program = QA().bind(make_lm(lambda f, c: "x"))
    with pytest.raises(ConfigError, match="valset"):
        gpo().compile(program, trainset=TRAIN, valset=None)
    with pytest.raises(UnknownChoiceError, match="none, recency, relevance, topk"):
        gpo(retrieval="nearest").compile(program, trainset=TRAIN, valset=VAL)
    with pytest.raises(UnknownChoiceError, match="edit, generation"):
        gpo(update="rewrite").compile(program, trainset=TRAIN, valset=VAL)
    with pytest.raises(ConfigError, match="num_steps must be >= 1"):
        gpo(num_steps=0).compile(program, trainset=TRAIN, valset=VAL)
    with pytest.raises(ConfigError, match="not bound"):
        gpo().compile(QA(), trainset=TRAIN, valset=VAL)
    assert "retrieval='recency'" in repr(gpo())


@pytest.mark.integration
def test_gpo_on_iris_with_smollm2_end_to_end(tmp_path):
    import cotune.lm
    from cotune.tasks import load_task

    task = load_task("iris")
    lm = cotune.lm.load("smollm2-135m")
    program = task.program().bind(lm)
    for p in program.predictors():
        p.config = {"max_tokens": 48}
    # Small on purpose: 2 CPU cores. A 135M model is a weak optimizer; most of its proposals are expected to
    # be rejected, and the test checks the machinery, not the gain.
    opt = GPO(
        task.metric,
        num_steps=2,
        candidates_per_step=2,
        minibatch_size=4,
        max_retries=0,
        num_task_examples=1,
        budget_start=12,
        budget_end=6,
        retrieval="relevance",
        seed=0,
    )
    best = opt.compile(program, trainset=task.train[:6], valset=task.dev[:4])

    traj = opt.trajectory_["classify"]
    assert traj[0]["instruction"] == program.classify.instruction and traj[0]["step"] == 0
    before = replay_currents(traj)
    for entry in traj[1:]:
        assert entry["budget"] == [12, 6][entry["step"] - 1]
        assert (
            word_edit_distance(before[entry["step"]], entry["instruction"]) == entry["edit_distance"] <= entry["budget"]
        )
    # max_retries=0: each of the 2 x 2 candidates was scored, a duplicate, or rejected exactly once
    assert len(traj) - 1 + sum(opt.rejected_["classify"].values()) == 2 * 2
    assert best.classify.instruction == opt.best_instructions_["classify"]
    assert best.classify.instruction in opt.confirmed_["classify"]
    assert 0.0 <= opt.best_score_ == opt.confirmed_["classify"][best.classify.instruction] <= 1.0
    fresh = task.program().load(best.save(tmp_path / "gpo.json"), lm=lm)
    assert fresh.classify.instruction == best.classify.instruction


def test_a_steps_candidates_are_scored_at_the_same_time():
    """A local engine batches concurrent calls: the candidates of one step (and the confirmation's pool) are
    evaluated together, so the task calls of different instructions are in flight at once."""
    import threading
    import time

    lock, in_flight, overlap, proposed = threading.Lock(), {}, [], []

    def respond(messages, config):
        if is_meta(messages):
            with lock:
                proposed.append(None)
                n = len(proposed)  # each proposal adds a different number of keywords
            return f"New Instruction: {add_keyword(meta_fields(messages)['Current Instruction'], n)}"
        instruction = instruction_of(messages)
        with lock:
            in_flight[instruction] = in_flight.get(instruction, 0) + 1
            overlap.append(sum(1 for v in in_flight.values() if v))
        time.sleep(0.01)
        with lock:
            in_flight[instruction] -= 1
        n = int(messages[-1]["content"].split(": ")[1])
        return f"Answer: {n if n % 4 < quality(instruction) else -1}"

    opt = gpo(num_steps=1, candidates_per_step=3, num_threads=2, minibatch_size=8, max_retries=0, edit_budget="none")
    opt.compile(QA().bind(FakeLM(respond)), trainset=TRAIN, valset=data(range(40)))
    scored = [e for e in opt.trajectory_["answer"] if e["step"] == 1]
    assert len(scored) >= 2  # at least two fresh candidates to score together
    assert max(overlap) >= 2  # calls of two instructions were running at the same time
