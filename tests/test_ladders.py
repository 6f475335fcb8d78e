"""The GPO and MedPrompt ladders (benchmarks/gpo_ladder.py, benchmarks/medprompt.py and their shared helpers) on
FakeLM models and a small made-up BBH folder: the rungs in order, each with its 95% interval; the instruction's
edit distance from the start and the optimizer calls as GPO made them; the zero-shot check that hands an
at-chance task to the larger model; the planned calls against the calls made; and a run cut off by a dead model
that resumes from its request cache to the uninterrupted run's results."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from cotune.errors import InfrastructureError, LMConnectionError
from cotune.lm import FakeLM
from cotune.optimize.edit import word_edit_distance

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GOOD = "Let's think step by step carefully."


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return {name: importlib.import_module(name) for name in ("ladders", "ladder_estimate", "gpo_ladder", "medprompt")}


def write_bbh(root: Path, n: int = 24) -> Path:
    """object_counting (free text), date_understanding (3 options) and hyperbaton (2), the gold option never
    (A): "a plus b"."""
    free, mc = [], []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        free.append({"input": f"What is {a} plus {b}?", "target": str(a + b)})
        options = [a + b + 1, a + b, a + b + 2] if i % 2 else [a + b - 1, a + b + 3, a + b]
        lines = "\n".join(f"({'ABC'[j]}) {o}" for j, o in enumerate(options))
        mc.append({"input": f"What is {a} plus {b}?\nOptions:\n{lines}", "target": f"({'BC'[i % 2 == 0]})"})
    two = [{"input": f"What is {i} plus 1?\nOptions:\n(A) {i}\n(B) {i + 1}", "target": "(B)"} for i in range(n)]
    (root / "bbh").mkdir(parents=True)
    for name, rows in (("object_counting", free), ("date_understanding", mc), ("hyperbaton", two)):
        (root / "bbh" / f"{name}.json").write_text(json.dumps({"examples": rows}))
    return root


def solver(skill: str):
    """A task model: right always ("always"), never ("never": it says (A) or 0), only when its instruction
    says "carefully" ("instructed"), or only between two options ("two")."""

    def answer(messages):
        system, last = messages[0]["content"], messages[-1]["content"]
        a, b = map(int, re.search(r"What is (\d+) plus (\d+)", last).groups())
        shown = re.findall(r"^\(([A-Z])\) (.*)$", last, re.MULTILINE)
        right = skill == "always" or (skill == "instructed" and "carefully" in system)
        right = right or (skill == "two" and len(shown) == 2)
        if shown:
            said = "(" + (next(k for k, o in shown if o == str(a + b)) if right else "A") + ")"
        else:
            said = str(a + b) if right else "0"
        reasoning = f"Reasoning: {a} plus {b}.\n" if "reasoning" in system.lower() else ""
        return f"{reasoning}Answer: {said}"

    return answer


def proposer(messages):
    """An optimizer LM that first proposes 60 words (over any budget but "none"), then, reminded, GOOD."""
    text = "\n".join(m["content"] for m in messages)
    if "previous attempt changed" in text or "No limit" in text:
        return f"New Instruction: {GOOD}"
    return "New Instruction: " + " ".join(["word"] * 60)


class Models:
    """``load_model`` for the scripts: FakeLMs by name, on the run's cache; ``down_after`` calls, the task
    model's connection fails (an interrupted run)."""

    def __init__(self, skills: dict[str, str], down_after: int | None = None):
        self.skills, self.down_after, self.loaded, self.log = skills, down_after, {}, []

    def __call__(self, name, cache):
        self.log.append(f"load {name}")
        if self.skills[name] == "proposer":
            lm = FakeLM(proposer, name=name, cache=cache)
        else:
            answer = solver(self.skills[name])
            made = []

            def maybe_down(messages):
                if self.down_after is not None and len(made) >= self.down_after:
                    raise LMConnectionError("model server went away")
                made.append(1)
                return answer(messages)

            lm = FakeLM(maybe_down, name=name, cache=cache)
        lm.close = lambda: self.log.append(f"close {name}")
        self.loaded[name] = lm
        return lm


def gpo_argv(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [
        *("--model", "task", "--optimizer-model", "opt", "--data-dir", str(data)),
        *("--cache", str(tmp_path / "cache.sqlite"), "--out", str(tmp_path / "gpo.json")),
        *("--tasks", "object_counting,date_understanding", "--train", "6", "--dev", "6", "--test", "8"),
        *("--steps", "2", "--candidates", "2", "--minibatch", "4", "--num-confirm", "1", "--max-retries", "1"),
        *("--embedder", "tfidf", "--num-threads", "1", *extra),
    ]


def run_gpo(bench, tmp_path, data, models, *extra) -> dict:
    assert bench["gpo_ladder"].main(gpo_argv(tmp_path, data, *extra), load_model=models) == 0
    return json.loads((tmp_path / "gpo.json").read_text())


# -- shared pieces -------------------------------------------------------------------------------------


def test_wilson_interval_matches_the_formula_and_stays_inside_0_1(bench):
    wilson = bench["ladders"].wilson
    low, high = wilson(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert 0 < wilson(0, 10)[1] < 0.3 and 0.7 < wilson(10, 10)[0] < 1  # not the normal interval's [0, 0]
    with pytest.raises(ValueError, match="n=0"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="got 11"):
        wilson(11, 10)


def test_pooled_summary_adds_the_questions_of_every_task_per_model_and_rung(bench):
    ladders = bench["ladders"]

    def row(rung, model, correct, n):
        return {"rung": rung, "model": model, "tokens_per_question": 10.0, "calls_per_question": 1.0} | (
            ladders.interval_fields(correct, n)
        )

    rows = [row("zero-shot", "small", 10, 50), row("zero-shot", "small", 30, 50), row("zero-shot", "big", 9, 10)]
    summary = ladders.pooled(rows, ["zero-shot", "never run"])
    small, big = summary
    assert (small["model"], small["n"], small["test_accuracy"], small["tasks"]) == ("small", 100, 0.4, 2)
    assert small["ci95"] == [round(x, 4) for x in ladders.wilson(40, 100)]
    assert (big["model"], big["n"]) == ("big", 10)  # never pooled with another model's questions


def test_answer_distribution_counts_unparsed_runs_and_lumps_the_free_text_tail(bench):
    distribution = bench["ladders"].answer_distribution
    assert distribution([{"answer": "A"}, {"answer": " A "}, None, {"answer": ""}, {"answer": "B"}]) == {
        "A": 2,
        "(none)": 2,
        "B": 1,
    }
    assert distribution([{"answer": str(i % 5)} for i in range(12)], top=2) == {"0": 3, "1": 3, "(other)": 6}


def test_at_chance_when_the_interval_reaches_guessing(bench):
    ladders = bench["ladders"]
    test = [{"options": ["a", "b"]}, {"options": ["a", "b", "c", "d"]}]
    assert ladders.chance_level(test) == pytest.approx(0.375)
    assert ladders.at_chance(ladders.interval_fields(20, 50), 0.375)  # 40% of 50: indistinguishable from guessing
    assert not ladders.at_chance(ladders.interval_fields(35, 50), 0.375)


# -- GPO ladder ----------------------------------------------------------------------------------------


def test_gpo_ladder_records_each_rung_with_interval_instruction_edit_distance_and_optimizer_calls(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    models = Models({"task": "instructed", "opt": "proposer"})
    report = run_gpo(bench, tmp_path, data, models)
    assert report["complete"] and report["commit"] is not None and report["wall_seconds"] >= 0
    start = bench["gpo_ladder"].COT_INSTRUCTION
    for name in ("bbh:object_counting", "bbh:date_understanding"):
        rows = report["tasks"][name]["rungs"]
        assert [r["rung"] for r in rows] == ["empty", "CoT", "OPRO-style", "GPO"]
        empty, cot, opro, gpo = rows
        assert (empty["instruction"], cot["instruction"]) == ("", start)
        assert empty["test_accuracy"] == cot["test_accuracy"] == 0.0 and empty["ci95"][1] > 0
        for r in (opro, gpo):
            assert r["instruction"] == GOOD and r["test_accuracy"] == 1.0 and r["n"] == 8
            assert (
                r["edit_distance_from_start"] == word_edit_distance(start, GOOD) == 2
            )  # "step." -> "step", "carefully."
        # GPO: every first attempt is over its budget, then the reminder gets GOOD (new at step 1, a
        # duplicate at step 2 and for the second candidate): 8 calls. OPRO-style has no budget: 4 calls.
        assert gpo["rejected"] == {"over_budget": 4, "parse": 0, "empty": 0, "duplicate": 3}
        assert (gpo["optimizer_calls"], gpo["proposals_scored"]) == (8, 1)
        assert opro["rejected"]["over_budget"] == 0 and opro["optimizer_calls"] == 4
        assert gpo["trajectory"][0]["instruction"] == start and gpo["val_score"] == 1.0
    # the optimizer calls GPO's attributes account for are the calls the optimizer LM answered
    made = sum(r["optimizer_calls"] for t in report["tasks"].values() for r in t["rungs"][2:])
    assert made == models.loaded["opt"].usage.calls == 24
    assert [(s["rung"], s["n"]) for s in report["summary"]] == [(r, 16) for r in ("empty", "CoT", "OPRO-style", "GPO")]


def test_gpo_ladder_optimizers_can_start_from_the_empty_instruction(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    report = run_gpo(bench, tmp_path, data, Models({"task": "instructed", "opt": "proposer"}), "--start", "empty")
    gpo = report["tasks"]["bbh:date_understanding"]["rungs"][3]
    assert report["start_instruction"] == "" and gpo["edit_distance_from_start"] == len(GOOD.split())


def test_gpo_ladder_plan_counts_the_calls_the_run_makes(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    report = run_gpo(bench, tmp_path, data, Models({"task": "instructed", "opt": "proposer"}))
    args = bench["gpo_ladder"].parse_args(gpo_argv(tmp_path, data))
    estimate = bench["ladder_estimate"]
    stats = {t: estimate.task_stats(data, t) for t in args.tasks}
    plan = estimate.gpo_plan(args, stats, dict.fromkeys(args.tasks, args.test))
    for task, planned in plan.items():
        rows = report["tasks"][f"bbh:{task}"]["rungs"]
        for p, r in zip(planned, rows, strict=True):
            made = r["calls_per_question"] * r["n"] + r.get("compile_usage", {}).get("task_model", {}).get("calls", 0)
            assert made <= p["calls"], (task, r["rung"])  # duplicates and rejected proposals are never scored
            if "optimizer_calls" in p:
                assert p["optimizer_calls"] <= r["optimizer_calls"] <= p["optimizer_calls_max"]
    assert "total:" in estimate.render(plan, "GPO")


def test_an_interrupted_gpo_ladder_resumes_from_its_cache_to_the_same_results(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    uninterrupted = Models({"task": "instructed", "opt": "proposer"})
    whole = run_gpo(bench, tmp_path / "whole", data, uninterrupted)
    total = len(uninterrupted.loaded["task"].calls)

    cut = Models({"task": "instructed", "opt": "proposer"}, down_after=total // 2)
    with pytest.raises(InfrastructureError, match="went away"):
        run_gpo(bench, tmp_path, data, cut)
    done_before = total // 2
    resumed = Models({"task": "instructed", "opt": "proposer"})
    again = run_gpo(bench, tmp_path, data, resumed)
    assert len(resumed.loaded["task"].calls) == total - done_before  # nothing made twice
    assert again["request_cache"]["calls_held_at_start"] >= done_before

    def results(report):
        return [
            (t, r["rung"], r["test_accuracy"], r["instruction"], r.get("optimizer_calls"))
            for t, v in report["tasks"].items()
            for r in v["rungs"]
        ]

    assert results(again) == results(whole)
    rerun = Models({"task": "instructed", "opt": "proposer"})
    run_gpo(bench, tmp_path, data, rerun)  # the same command once more: all from the cache
    assert rerun.loaded["task"].calls == [] and rerun.loaded["opt"].calls == []


def test_a_misspelt_optimizer_model_fails_before_any_model_loads_or_any_call(bench, tmp_path, monkeypatch):
    from cotune.errors import UnknownChoiceError

    data = write_bbh(tmp_path / "data")

    def never(dtype):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(bench["gpo_ladder"], "default_loader", never)
    argv = gpo_argv(tmp_path, data)
    argv[argv.index("task")], argv[argv.index("opt")] = "smollm2-135m", "qwen2.5-coder-1.5bb"
    with pytest.raises(UnknownChoiceError, match="qwen2.5-coder-1.5bb"):
        bench["gpo_ladder"].main(argv)
    assert not (tmp_path / "cache.sqlite").exists() and not (tmp_path / "gpo.json").exists()


def test_gpo_ladder_estimate_loads_no_model(bench, tmp_path, capsys):
    data = write_bbh(tmp_path / "data")

    def refuse(name, cache):
        raise AssertionError("--estimate loaded a model")

    assert bench["gpo_ladder"].main(gpo_argv(tmp_path, data, "--estimate"), load_model=refuse) == 0
    out = capsys.readouterr().out
    assert "object_counting" in out and "optimizer calls" in out and "total:" in out
    assert not (tmp_path / "gpo.json").exists()


# -- MedPrompt ladder ----------------------------------------------------------------------------------


def medprompt_argv(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [
        *("--model", "small", "--data-dir", str(data), "--tasks", "date_understanding"),
        *("--cache", str(tmp_path / "mp.sqlite"), "--out", str(tmp_path / "mp.json")),
        *("--train", "8", "--test", "10", "--k", "2", "--m", "3", "--embedder", "tfidf", "--num-threads", "1"),
        *extra,
    ]


def run_medprompt(bench, tmp_path, data, models, *extra) -> dict:
    assert bench["medprompt"].main(medprompt_argv(tmp_path, data, *extra), load_model=models) == 0
    return json.loads((tmp_path / "mp.json").read_text())


def test_medprompt_check_records_the_answer_distribution_and_hands_an_at_chance_task_to_the_task_model(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    models = Models({"small": "never", "big": "always"})
    report = run_medprompt(bench, tmp_path, data, models, "--task-model", "big", "--task-model-test", "4")
    check = report["zero_shot_check"]["bbh:date_understanding"]
    assert check["model"] == "small" and check["n"] == 10 and check["test_accuracy"] == 0.0
    assert check["answers"] == {"A": 10} and set(check["gold"]) == {"B", "C"}
    assert check["chance"] == pytest.approx(1 / 3) and check["at_chance"]
    task = report["tasks"]["bbh:date_understanding"]
    assert task["model"] == "big"
    rows = task["rungs"]
    assert [r["rung"] for r in rows] == ["zero-shot", "few-shot", "+ CoT", "+ kNN", "+ ensemble"]
    assert all(r["model"] == "big" and r["n"] == 4 and r["test_accuracy"] == 1.0 for r in rows)
    assert all(len(r["ci95"]) == 2 and r["ci95"][0] < 1.0 for r in rows)
    assert rows[-1]["calls_per_question"] == 3 and rows[-1]["cache_hits"] >= 4  # m orders, the first kNN's
    assert task["self_generated"] == {"passed": 8, "run": 8, "share_passed": 1.0, "seconds": pytest.approx(0, abs=5)}
    assert [(s["model"], s["rung"]) for s in report["summary"]] == [("big", r) for r in bench["medprompt"].RUNGS]


def test_medprompt_without_task_model_runs_an_at_chance_task_on_the_model_and_says_so(bench, tmp_path, capsys):
    data = write_bbh(tmp_path / "data")
    report = run_medprompt(bench, tmp_path, data, Models({"small": "never"}))
    assert "at chance" in capsys.readouterr().err
    task = report["tasks"]["bbh:date_understanding"]
    assert task["model"] == "small" and all(r["model"] == "small" and r["n"] == 10 for r in task["rungs"])
    assert task["self_generated"]["share_passed"] == 0.0 and task["rungs"][2]["labeled_fill"] == 2


def test_medprompt_plan_counts_the_calls_each_rung_makes(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    report = run_medprompt(bench, tmp_path, data, Models({"small": "always"}))
    args = bench["medprompt"].parse_args(medprompt_argv(tmp_path, data))
    estimate = bench["ladder_estimate"]
    stats = {t: estimate.task_stats(data, t) for t in args.tasks}
    plan = estimate.medprompt_plan(args, stats, "small", args.test)["date_understanding"]
    rows = {r["rung"]: r for r in report["tasks"]["bbh:date_understanding"]["rungs"]}
    assert plan[0]["calls"] == report["zero_shot_check"]["bbh:date_understanding"]["n"]
    for p in plan[1:]:
        r = rows[p["rung"]]
        made = r["calls_per_question"] * r["n"]
        extra = p.get("self_generation_calls", 0)
        if p["rung"] == "+ ensemble":  # the first order is the kNN rung's call, from the cache
            assert p["calls"] + r["n"] == made
        else:
            assert p["calls"] - extra == made, p["rung"]


def test_medprompt_runs_the_model_s_ladders_first_and_closes_it_before_loading_the_task_model(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    models = Models({"small": "two", "big": "always"})
    tasks = ("--tasks", "date_understanding,hyperbaton", "--task-model", "big")
    report = run_medprompt(bench, tmp_path, data, models, *tasks)
    checks = report["zero_shot_check"]
    assert checks["bbh:date_understanding"]["at_chance"] and not checks["bbh:hyperbaton"]["at_chance"]
    assert list(report["tasks"]) == ["bbh:hyperbaton", "bbh:date_understanding"]
    assert report["tasks"]["bbh:hyperbaton"]["model"] == "small"
    assert report["tasks"]["bbh:date_understanding"]["model"] == "big"
    assert models.log == ["load small", "close small", "load big", "close big"]  # never both at once
    assert {(s["model"], s["rung"]) for s in report["summary"]} >= {("small", "+ kNN"), ("big", "+ kNN")}


class BagOfWords:
    """A deterministic embedder that records what it is asked to embed."""

    def __init__(self):
        self.asked: list[list[str]] = []

    def embed(self, texts):
        import numpy as np

        self.asked.append(list(texts))
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                vectors[i, sum(map(ord, word)) % 64] += 1
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


class ComputeCountingLM(FakeLM):
    def __init__(self):
        super().__init__(["unused"])
        self.computed = 0

    def run_compute(self, fn):
        self.computed += 1
        return fn()


def test_on_model_thread_embeds_only_unseen_texts_and_only_through_the_model_thread(bench):
    inner, lm = BagOfWords(), ComputeCountingLM()
    embedder = bench["ladders"].OnModelThread(inner, lm)
    first = embedder.embed(["red apple", "green pear"])
    again = embedder.embed(["green pear", "red apple"])
    assert (lm.computed, inner.asked) == (1, [["red apple", "green pear"]])  # seen texts: from memory
    assert (again[0] == first[1]).all() and (again[1] == first[0]).all()
    embedder.embed(["red apple", "blue plum", "blue plum"])
    assert (lm.computed, inner.asked[-1]) == (2, ["blue plum"])
    assert embedder.embed([]).shape[0] == 0


def test_medprompt_embeds_every_knn_and_ensemble_query_before_those_rungs_run(bench, tmp_path, monkeypatch):
    data = write_bbh(tmp_path / "data")
    inner = BagOfWords()
    made = []

    def embedder(kind, lm):
        made.append(bench["ladders"].OnModelThread(inner, lm))
        return made[-1]

    monkeypatch.setattr(bench["medprompt"], "make_embedder", embedder)
    report = run_medprompt(bench, tmp_path, data, Models({"small": "always"}))
    # the demo pool at compile, then every query of the kNN and ensemble rungs at once: none left to
    # embed on evaluate's threads (where torch would start another OpenMP team)
    assert len(inner.asked) == 2
    assert len(inner.asked[1]) == 10 * 3  # 10 test questions x 3 option orders
    assert report["tasks"]["bbh:date_understanding"]["rungs"][3]["test_accuracy"] == 1.0
