"""The GPO ladder (benchmarks/gpo_ladder.py) on FakeLM models: the four rungs in order, each with its 95%
interval, the instruction's edit distance from the start and the optimizer calls as GPO made them; the planned
calls against the calls made; a misspelt model refused before anything loads; and a run cut off by a dead model
that resumes from its request cache to the uninterrupted run's results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotune.errors import InfrastructureError
from cotune.optimize.edit import word_edit_distance

from .fakes import GOOD, Models, write_bbh


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
    third = run_gpo(bench, tmp_path, data, rerun)  # the same command once more: every rung kept, no model loaded
    assert rerun.log == [] and results(third) == results(whole)
    assert len(third["kept_from_earlier_run"]) == 2 * len(bench["gpo_ladder"].RUNGS)


def test_a_gpo_ladder_moved_to_a_machine_without_its_cache_runs_only_the_rungs_its_results_file_lacks(bench, tmp_path):
    data = write_bbh(tmp_path / "data")
    whole = run_gpo(bench, tmp_path, data, Models({"task": "instructed", "opt": "proposer"}))
    kept = json.loads((tmp_path / "gpo.json").read_text())
    for task in kept["tasks"].values():  # as if cut off after each task's OPRO-style rung
        task["rungs"] = task["rungs"][:3]
    (tmp_path / "gpo.json").write_text(json.dumps(kept))
    (tmp_path / "cache.sqlite").unlink()
    moved = Models({"task": "instructed", "opt": "proposer"})
    again = run_gpo(bench, tmp_path, data, moved)
    assert [r["rung"] for t in again["tasks"].values() for r in t["rungs"]] == [
        r["rung"] for t in whole["tasks"].values() for r in t["rungs"]
    ]
    assert all(r["commit"] for t in again["tasks"].values() for r in t["rungs"])
    gpo_calls = sum(r["calls_per_question"] * r["n"] for t in whole["tasks"].values() for r in t["rungs"][3:])
    assert 0 < len(moved.loaded["task"].calls) and moved.loaded["opt"].calls  # GPO's compile and test, only
    assert len(moved.loaded["task"].calls) < sum(
        r["calls_per_question"] * r["n"] for t in whole["tasks"].values() for r in t["rungs"]
    )
    assert len(moved.loaded["task"].calls) >= gpo_calls


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
