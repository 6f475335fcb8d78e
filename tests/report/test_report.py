import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from cotune.errors import ConfigError
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.results import summarize
from cotune.experiment.rundir import RunDir, write_json
from cotune.experiment.runner import Runner
from cotune.optimize.strategy import parse_strategy, strategy_name
from cotune.report.build import markdown_table, write_report
from experiment.fakes import FakeTask, factory, fake_lm

SVG = "{http://www.w3.org/2000/svg}"
ALL = ["zero-shot", "p", "w", "p-w", "w-p", "p-w-p"]


# -- building run directories by hand ----------------------------------------------------------------------
def summary(score, *, n=50, prompt_tokens=100.0, completion_tokens=10.0, calls_per_example=1.0, seconds=0.5, fmt=1.0):
    calls = round(n * calls_per_example)
    return {
        "score": score,
        "n": n,
        "metric": "exact",
        "parse_failures": 0,
        "errors": 0,
        "format_adherence": fmt,
        "seconds": seconds * calls,
        "usage": {
            "calls": calls,
            "prompt_tokens": prompt_tokens * calls,
            "completion_tokens": completion_tokens * calls,
            "seconds": seconds * calls,
            "cache_hits": 0,
        },
        "usage_per_call": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "seconds": seconds},
        "usage_by_predictor": {},
    }


def make_run(
    root: Path,
    name: str,
    scores: dict[str, list],
    *,
    task="iris",
    model="smollm2-135m",
    tokens: dict[str, float] | None = None,
    completion: dict[str, float] | None = None,
    optimize: dict[str, float] | None = None,
    train: dict[str, float] | None = None,
    demos: dict[str, list[dict]] | None = None,
    instruction: dict[str, str] | None = None,
    n: int = 50,
    calls_per_example: float = 1.0,
    fmt: dict[str, float] | None = None,
    info: dict[str, dict] | None = None,
) -> Path:
    """A finished run directory. ``scores[strategy]`` is one (dev, test) pair per seed, seeds 0, 1, ...;
    every prefix of every strategy must be given (the runner computes them too)."""
    tokens, completion = tokens or {}, completion or {}
    optimize, train, demos, instruction, fmt = optimize or {}, train or {}, demos or {}, instruction or {}, fmt or {}
    strategies = list(scores)
    cfg = ExperimentConfig(
        task=task,
        model=model,
        strategies=strategies,
        seeds=list(range(len(next(iter(scores.values()))))),
        out_dir=str(root),
        name=name,
    )
    run = RunDir.create(root, name, cfg.to_dict())
    nodes = []
    for s, pairs in scores.items():
        steps = parse_strategy(s)
        for seed, (dev, test) in enumerate(pairs):
            node = run.node_dir(seed, s)
            adapter = str(node / "adapter") if "w" in steps else None
            state = {
                "predictors": {
                    "answer": {
                        "signature": {
                            "inputs": [{"name": "question"}],
                            "outputs": [{"name": "answer"}],
                            "instructions": "",
                        },
                        "instruction": instruction.get(s, f"Answer the question. [{s}]"),
                        "demos": demos.get(s, []),
                        "config": {},
                    }
                },
                "lm": {"backend": "fake", "model": model, "adapter": adapter},
                "metadata": {"task": task, "strategy": s, "seed": seed},
            }
            write_json(node / "program.json", state)
            kw = dict(
                n=n,
                prompt_tokens=tokens.get(s, 100.0),
                completion_tokens=completion.get(s, 10.0),
                calls_per_example=calls_per_example,
                fmt=fmt.get(s, 1.0),
            )
            record = {
                "seed": seed,
                "strategy": s,
                "steps": list(steps),
                "kind": steps[-1] if steps else "",
                "parent": strategy_name(steps[:-1]) if steps else None,
                "dev": summary(dev, **kw),
                "test": summary(test, **kw),
                "optimize_seconds": 0.0,
                "train_seconds": 0.0,
                "cumulative_optimize_seconds": optimize.get(s, 0.0),
                "cumulative_train_seconds": train.get(s, 0.0),
                "adapter": adapter,
                "program": str((node / "program.json").relative_to(run.path)),
                "info": (info or {}).get(s, {}),
            }
            run.finish(seed, s, record)
            nodes.append(record)
    run.write_results(
        {
            "config": cfg.to_dict(),
            "run_dir": str(run.path),
            "strategies": strategies,
            "nodes": nodes,
            "table": summarize(nodes, strategies),
        }
    )
    return run.path


THREE_SEEDS = {
    "zero-shot": [(0.2, 0.20), (0.2, 0.20), (0.2, 0.20)],
    "p": [(0.6, 0.50), (0.7, 0.60), (0.8, 0.70)],
    "w": [(0.3, 0.30), (0.3, 0.40), (0.3, 0.50)],
    "p-w": [(0.7, 0.70), (0.7, 0.70), (0.7, 0.70)],
    "w-p": [(0.5, 0.50), (0.5, 0.50), (0.5, 0.50)],
    # seed 0: the last step is worse on dev than p (0.6 < 0.7 of p-w), so "best on dev" picks p-w there
    "p-w-p": [(0.6, 0.80), (0.9, 0.90), (0.9, 1.00)],
}


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


def series_points(svg: ET.Element) -> dict[str, int]:
    return {
        g.get("data-series"): len(g.findall(f".//{SVG}circle"))
        for g in svg.iter(f"{SVG}g")
        if g.get("class") == "series"
    }


# -- tests -------------------------------------------------------------------------------------------------
def test_theta_steps_show_the_coverage_of_their_kept_traces(tmp_path):
    cov = {
        "examples": {"covered": 38, "total": 50},
        "by_class": {
            "species": {
                "setosa": {"covered": 16, "total": 16},
                "versicolor": {"covered": 14, "total": 17},
                "virginica": {"covered": 8, "total": 17},
            }
        },
    }
    info = {"w": {"coverage_": cov, "n_passed_": 41}, "p-w": {"coverage_": cov, "n_passed_": 40}}
    md, _ = write_report(make_run(tmp_path, "a", THREE_SEEDS, info=info))
    text = md.read_text()
    assert "## What the Θ steps learned from" in text
    assert "| w | 0 | 41 | 38/50 | species: setosa 16/16, versicolor 14/17, virginica 8/17 |" in text
    assert "| p-w-p |" not in text.split("## What the Θ steps learned from")[1].split("## ")[0]  # ends in p


def test_balanced_theta_steps_say_which_classes_were_repeated(tmp_path):
    cov = {"examples": {"covered": 39, "total": 50}, "by_class": {}}
    balance = {"fields": ["species"], "counts": {"setosa": 16, "versicolor": 17, "virginica": 6},
               "repeats": {"setosa": 1, "versicolor": 1, "virginica": 3}, "epochs": {"adapter": 8}}  # fmt: skip
    even = balance | {"repeats": {"setosa": 1, "versicolor": 1, "virginica": 1}}
    info = {"w": {"coverage_": cov, "n_passed_": 39, "balance_": balance}, "p-w": {"coverage_": cov, "n_passed_": 50,
                                                                                  "balance_": even}}  # fmt: skip
    text = write_report(make_run(tmp_path, "a", THREE_SEEDS, info=info))[0].read_text()
    assert "| w | 0 | 39 | 39/50 | – | virginica ×3 |" in text
    assert "| p-w | 0 | 50 | 39/50 | – | none repeated |" in text
    assert "are skewed" not in text  # balanced steps need no hint


def test_skewed_unbalanced_theta_steps_get_a_hint(tmp_path):
    def cov(virginica):
        by = {"setosa": 16, "versicolor": 17, "virginica": virginica}
        return {"examples": {"covered": 33 + virginica, "total": 50},
                "by_class": {"species": {c: {"covered": n, "total": 17} for c, n in by.items()}}}  # fmt: skip

    info = {"w": {"coverage_": cov(5), "n_passed_": 38}, "p-w": {"coverage_": cov(17), "n_passed_": 50}}
    text = write_report(make_run(tmp_path, "a", THREE_SEEDS, info=info))[0].read_text()
    assert "the kept runs of some Θ steps are skewed (w (seed 0): species virginica 5 against versicolor 17;" in text
    assert "weights.balance\\_classes: true repeats" in text and "p-w (seed" not in text
    info = {"w": {"coverage_": cov(6), "n_passed_": 39}}  # 6 × 3 > 17: not skewed enough to say so
    assert "are skewed" not in write_report(make_run(tmp_path / "b", "a", THREE_SEEDS, info=info))[0].read_text()


def test_table_cells_are_mean_pm_std_over_seeds_with_best_in_bold(tmp_path):
    md_path, html_path = write_report(make_run(tmp_path, "a", THREE_SEEDS))
    md = md_path.read_text()
    assert "| strategy | iris |" in md
    assert "| p | 60.0 ± 10.0 |" in md  # mean of .5/.6/.7, sample std .1
    assert "| w | 40.0 ± 10.0 |" in md
    assert "| zero-shot | 20.0 ± 0.0 |" in md
    assert "| p-w-p | **90.0 ± 10.0** |" in md  # the best mean in the column
    assert md.count("**90.0 ± 10.0**") == 1
    html = html_path.read_text()
    matrix = re.search(r'<table class="matrix">.*?</table>', html, flags=re.S).group(0)
    assert "<td><strong>90.0 ± 10.0</strong></td>" in matrix
    assert matrix.count("<tr>") == 1 + len(ALL)


def test_single_seed_shows_no_fake_spread(tmp_path):
    run = make_run(tmp_path, "a", {"zero-shot": [(0.2, 0.25)], "p": [(0.5, 0.5)]})
    md = write_report(run)[0].read_text()
    assert "| p | **50.0** |" in md and "| zero-shot | 25.0 |" in md
    assert "one seed" in md


def test_two_tasks_combine_into_one_table(tmp_path):
    a = make_run(tmp_path, "a", {"zero-shot": [(0.2, 0.2)], "p": [(0.5, 0.5)]}, task="iris")
    b = make_run(tmp_path, "b", {"zero-shot": [(0.1, 0.1)], "p-w": [(0.3, 0.3)], "p": [(0.2, 0.25)]}, task="gsm8k")
    out = tmp_path / "combined"
    md_path, html_path = write_report([a, b], out)
    assert md_path.parent == out and html_path.parent == out
    md = md_path.read_text()
    assert "| strategy | iris | gsm8k |" in md
    assert "| p | **50.0** | 25.0 |" in md
    assert "| p-w | – | **30.0** |" in md  # a strategy one run lacks
    # one line chart and one scatter per run
    kinds = Counter(s.get("class") for s in svgs(html_path.read_text()))
    assert kinds == {"chart chart-line": 2, "chart chart-scatter": 2}


def test_two_models_label_columns_with_the_model(tmp_path):
    a = make_run(tmp_path, "a", {"p": [(0.5, 0.5)]}, model="smollm2-135m")
    b = make_run(tmp_path, "b", {"p": [(0.6, 0.6)]}, model="/models/qwen2.5-coder-0.5b")
    md = write_report([a, b], tmp_path / "out")[0].read_text()
    assert "| strategy | iris · smollm2-135m | iris · qwen2.5-coder-0.5b |" in md


def test_same_task_and_model_twice_are_told_apart_by_folder(tmp_path):
    a = make_run(tmp_path, "first", {"p": [(0.5, 0.5)]})
    b = make_run(tmp_path, "second", {"p": [(0.6, 0.6)]})
    md = write_report([a, b], tmp_path / "out")[0].read_text()
    assert "| strategy | iris (first) | iris (second) |" in md


def test_score_by_step_plot_follows_each_strategy_chain(tmp_path):
    html = write_report(make_run(tmp_path, "a", THREE_SEEDS))[1].read_text()
    line, scatter = svgs(html)
    # one series per strategy; points = steps + 1 (zero-shot at step 0)
    assert series_points(line) == {"zero-shot": 1, "p": 2, "w": 2, "p-w": 3, "w-p": 3, "p-w-p": 4}
    polylines = [g.find(f"{SVG}polyline") for g in line.iter(f"{SVG}g") if g.get("class") == "series"]
    assert sum(p is not None for p in polylines) == 5  # every series but the single zero-shot point
    tips = [t.text for t in line.iter(f"{SVG}title")]
    assert "p-w-p, step 3: 90.0% ± 10.0%" in tips and "p-w-p, step 1: 60.0% ± 10.0%" in tips
    # the same numbers as a table, dev / test
    md = (tmp_path / "a" / "report.md").read_text()
    assert "| p-w-p | zero-shot: 20.0 / 20.0 | p: 70.0 / 60.0 | p-w: 70.0 / 70.0 | p-w-p: 80.0 / 90.0 |" in md
    assert series_points(scatter) == dict.fromkeys(ALL, 1)


def test_scatter_places_points_by_prompt_tokens(tmp_path):
    run = make_run(
        tmp_path,
        "a",
        {"zero-shot": [(0.2, 0.2)], "p": [(0.8, 0.8)], "p-w": [(0.8, 0.9)]},
        tokens={"zero-shot": 50, "p": 400, "p-w": 400},
    )
    scatter = svgs(write_report(run)[1].read_text())[1]
    xs = {
        g.get("data-series"): float(g.find(f"{SVG}circle").get("cx"))
        for g in scatter.iter(f"{SVG}g")
        if g.get("class") == "series"
    }
    assert xs["zero-shot"] < xs["p"] == xs["p-w"]
    labels = [t.text for t in scatter.iter(f"{SVG}text") if t.get("class") == "label"]
    assert sorted(labels) == ["p", "p-w", "zero-shot"]


def test_best_step_on_dev_against_last_step(tmp_path):
    md = write_report(make_run(tmp_path, "a", THREE_SEEDS))[0].read_text()
    # seed 0 picks p-w (dev .7 > .6; test .7), seeds 1 and 2 keep p-w-p (test .9, 1.0)
    assert "| p-w-p | 90.0 ± 10.0 | 86.7 ± 15.3 (p-w ×1, p-w-p ×2) |" in md


def test_demos_and_instructions_are_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    run = make_run(
        tmp_path,
        "a",
        {"zero-shot": [(0.2, 0.2)], "p": [(0.5, 0.5)]},
        demos={
            "p": [{"question": evil, "answer": "a" * 1000}] + [{"question": str(i), "answer": "1"} for i in range(8)]
        },
        instruction={"p": "Use ``` fences & <b>bold</b>"},
    )
    md_path, html_path = write_report(run)
    html = html_path.read_text()
    assert "<script" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "… and 3 more demos" in html  # 9 demos, 6 shown
    assert "a" * 240 in html and "a" * 241 not in html and "(760 more characters)" in html
    md = md_path.read_text()
    # in Markdown the raw text stays inside a code fence longer than any backtick run it holds
    assert "````text\nUse ``` fences & <b>bold</b>\n````" in md
    fence_open = md.index("question: <script>")
    assert md.rfind("```text", 0, fence_open) > md.rfind("```\n", 0, fence_open)


def test_identical_prompts_are_not_repeated(tmp_path):
    run = make_run(
        tmp_path,
        "a",
        {"zero-shot": [(0.2, 0.2)], "w": [(0.3, 0.3)]},
        instruction={"w": "Answer the question. [zero-shot]"},
    )
    md = write_report(run)[0].read_text()
    assert "Same instructions and demos as zero-shot (the weights may differ)." in md
    assert "adapter " in md  # the w node names its adapter


def test_markdown_references_the_written_svgs(tmp_path):
    run = make_run(tmp_path, "a", THREE_SEEDS)
    md = write_report(run)[0].read_text()
    refs = re.findall(r"\]\((report-plots/[^)]+\.svg)\)", md)
    assert len(refs) == 2
    for ref in refs:
        ET.parse(run / ref)  # well-formed SVG files beside the report


def test_cost_section_and_recommendation_are_in_both_files(tmp_path):
    md_path, html_path = write_report(make_run(tmp_path, "a", THREE_SEEDS))
    for text in (md_path.read_text(), html_path.read_text()):
        assert "Recommendation" in text and "placeholder prices" in text and "break-even" in text


def test_html_is_self_contained(tmp_path):
    html = write_report(make_run(tmp_path, "a", THREE_SEEDS))[1].read_text()
    assert not re.search(r"<(script|link|img|iframe)\b", html)
    assert "url(" not in html and "@import" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)


def test_report_on_a_real_runner_run(tmp_path):
    cfg = ExperimentConfig(task="fake", strategies=ALL, seeds=[0, 1], out_dir=str(tmp_path), name="run", threads=2)
    run = Runner(cfg, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(Counter())).start()
    md_path, html_path = write_report(run)
    results = run.results()
    md = md_path.read_text()
    for row in results["table"]:
        assert re.search(
            rf"\| {re.escape(row['strategy'])} \| (\*\*)?{100 * row['test_mean']:.1f} ± {100 * row['test_std']:.1f}", md
        )
    line = svgs(html_path.read_text())[0]
    assert series_points(line) == {"zero-shot": 1, "p": 2, "w": 2, "p-w": 3, "w-p": 3, "p-w-p": 4}
    assert "[p]" in md  # the learned instruction from the fake prompt optimizer


def test_not_a_run_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        write_report(tmp_path)
    make_run(tmp_path, "a", {"p": [(0.5, 0.5)]})
    (tmp_path / "a" / "results.json").unlink()
    with pytest.raises(ConfigError, match="no results.json yet"):
        write_report(tmp_path / "a")


@pytest.mark.parametrize(
    "cell, shown", [("a|b", r"a\|b"), ("x*y_z", r"x\*y\_z"), ("<i>", r"\<i\>"), ("two\nlines", "two lines")]
)
def test_markdown_table_escapes_cells(cell, shown):
    assert markdown_table(["h"], [[cell]]).splitlines()[2] == f"| {shown} |"


def test_results_json_written_by_hand_matches_summarize(tmp_path):
    # guard on the helper itself: its table is what the runner would write
    data = json.loads((make_run(tmp_path, "a", THREE_SEEDS) / "results.json").read_text())
    assert data["table"][1]["test_mean"] == pytest.approx(0.6) and data["table"][1]["test_std"] == pytest.approx(0.1)
