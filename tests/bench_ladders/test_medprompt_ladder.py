"""The MedPrompt ladder (benchmarks/medprompt.py) on FakeLM models: the zero-shot check that runs an at-chance
task on the larger model too (and never holds both), the five rungs with their intervals, the share of
self-generated chains that passed, the planned calls against the calls made, and every kNN query embedded
before its rungs run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .fakes import BagOfWords, Models, write_bbh


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


def test_medprompt_check_records_the_answer_distribution_and_runs_an_at_chance_task_on_the_task_model_too(
    bench, tmp_path
):
    data = write_bbh(tmp_path / "data")
    models = Models({"small": "never", "big": "always"})
    report = run_medprompt(bench, tmp_path, data, models, "--task-model", "big", "--task-model-test", "4")
    check = report["zero_shot_check"]["bbh:date_understanding"]
    assert check["model"] == "small" and check["n"] == 10 and check["test_accuracy"] == 0.0
    assert check["answers"] == {"A": 10} and set(check["gold"]) == {"B", "C"}
    assert check["chance"] == pytest.approx(1 / 3) and check["at_chance"]
    small = report["tasks"]["bbh:date_understanding"]  # the model's own ladder, on every test question
    assert small["model"] == "small" and all(r["model"] == "small" and r["n"] == 10 for r in small["rungs"])
    task = report["tasks_on_task_model"]["bbh:date_understanding"]
    assert task["model"] == "big"
    rows = task["rungs"]
    assert [r["rung"] for r in rows] == ["zero-shot", "few-shot", "+ CoT", "+ kNN", "+ ensemble"]
    assert all(r["model"] == "big" and r["n"] == 4 and r["test_accuracy"] == 1.0 for r in rows)
    assert all(len(r["ci95"]) == 2 and r["ci95"][0] < 1.0 for r in rows)
    assert rows[-1]["calls_per_question"] == 3 and rows[-1]["cache_hits"] >= 4  # m orders, the first kNN's
    assert task["self_generated"] == {"passed": 8, "run": 8, "share_passed": 1.0, "seconds": pytest.approx(0, abs=5)}
    rungs = bench["medprompt"].RUNGS
    assert [(s["model"], s["rung"]) for s in report["summary"]] == [(m, r) for m in ("small", "big") for r in rungs]


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
    assert list(report["tasks"]) == ["bbh:date_understanding", "bbh:hyperbaton"]
    assert {t["model"] for t in report["tasks"].values()} == {"small"}
    assert list(report["tasks_on_task_model"]) == ["bbh:date_understanding"]  # the one at chance
    assert report["tasks_on_task_model"]["bbh:date_understanding"]["model"] == "big"
    assert models.log == ["load small", "close small", "load big", "close big"]  # never both at once
    assert {(s["model"], s["rung"]) for s in report["summary"]} >= {("small", "+ kNN"), ("big", "+ kNN")}


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


def test_medprompt_keeps_the_ladders_of_an_earlier_results_file_and_loads_no_model_for_them(bench, tmp_path):
    """A run cut off and resumed on a machine without its request cache: what the results file holds is not
    run again (each ladder names the commit that ran it); a ladder it lacks runs."""
    data = write_bbh(tmp_path / "data")
    tasks = ("--tasks", "date_understanding", "--task-model", "big", "--task-model-test", "4")
    first = run_medprompt(bench, tmp_path, data, Models({"small": "never", "big": "always"}), *tasks)
    (tmp_path / "mp.sqlite").unlink()  # a fresh machine: the results file only
    again = Models({"small": "always", "big": "never"})  # would score otherwise, were anything rerun
    second = run_medprompt(bench, tmp_path, data, again, *tasks)
    assert again.log == []
    assert second["kept_from_earlier_run"] == ["small bbh:date_understanding", "big bbh:date_understanding"]
    assert second["zero_shot_check"] == first["zero_shot_check"]
    for section in ("tasks", "tasks_on_task_model"):
        kept = second[section]["bbh:date_understanding"]
        assert kept["rungs"] == first[section]["bbh:date_understanding"]["rungs"]
        assert kept["commit"] == first["commit"] and kept["commit"]
    assert second["summary"] == first["summary"] and second["complete"]

    wider = (*tasks[:1], "date_understanding,hyperbaton", *tasks[2:])
    third = run_medprompt(bench, tmp_path, data, again, *wider)  # one task more: only it runs
    assert third["kept_from_earlier_run"] == ["small bbh:date_understanding", "big bbh:date_understanding"]
    assert third["tasks"]["bbh:hyperbaton"]["rungs"][0]["test_accuracy"] == 1.0
    assert again.log == ["load small", "close small"]  # hyperbaton is above chance for this "small"


def test_medprompt_runs_every_ladder_again_when_the_settings_differ_or_fresh_is_asked(bench, tmp_path, capsys):
    data = write_bbh(tmp_path / "data")
    run_medprompt(bench, tmp_path, data, Models({"small": "never"}))
    (tmp_path / "mp.sqlite").unlink()  # so that a rerun ladder shows in its answers
    again = Models({"small": "always"})
    report = run_medprompt(bench, tmp_path, data, again, "--k", "3")
    assert "k=2 there, 3 here" in capsys.readouterr().err
    assert report["kept_from_earlier_run"] == [] and again.log[0] == "load small"
    assert report["tasks"]["bbh:date_understanding"]["rungs"][0]["test_accuracy"] == 1.0
    (tmp_path / "mp.sqlite").unlink()
    fresh = run_medprompt(bench, tmp_path, data, Models({"small": "never"}), "--k", "3", "--fresh")
    assert fresh["kept_from_earlier_run"] == [] and fresh["tasks"]["bbh:date_understanding"]["rungs"][0]["n"] == 10
    assert fresh["tasks"]["bbh:date_understanding"]["rungs"][0]["test_accuracy"] == 0.0
