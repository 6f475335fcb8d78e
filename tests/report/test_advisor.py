import json

import pytest
from rich.console import Console

from cotune.cli.report_cmds import run_advise, run_report
from cotune.errors import ConfigError
from cotune.report.advisor import (
    COST_HEADER,
    Prices,
    advise,
    break_even_calls_per_day,
    dominated_by,
    fmt_volume,
)
from cotune.report.build import advice_markdown
from cotune.report.costs import cost_row, run_table
from cotune.report.run_data import load_runs

from .test_report import make_run


@pytest.mark.parametrize(
    "c_f, once_f, c_p, once_p, days, expected",
    [
        (1e-4, 3.0, 4e-4, 0.0, 10, 1000.0),  # 3 $ extra paid back by 3e-4 $/call over 10 days
        (1e-4, 3.5, 4e-4, 0.5, 10, 1000.0),  # only the difference in one-off costs counts
        (1e-4, 3.0, 4e-4, 0.0, 30, 1000.0 / 3),  # a longer horizon lowers the volume needed
        (2e-4, 1.0, 2.5e-4, 0.0, 1, 20_000.0),
        (1e-4, 0.0, 4e-4, 1.0, 10, 0.0),  # cheaper per call and to set up: at any volume
        (1e-4, 2.0, 1e-4, 1.0, 10, None),  # same per call, more to set up: never
        (1e-4, 0.5, 1e-4, 1.0, 10, 0.0),  # same per call, less to set up: always
        (1e-4, 1.0, 1e-4, 1.0, 10, None),  # identical: never *cheaper*
        (5e-4, 0.0, 4e-4, 0.0, 10, None),  # more tokens per call: never
    ],
)
def test_break_even_arithmetic(c_f, once_f, c_p, once_p, days, expected):
    got = break_even_calls_per_day(
        cost_per_call_finetuned=c_f,
        one_off_finetuned=once_f,
        cost_per_call_prompted=c_p,
        one_off_prompted=once_p,
        horizon_days=days,
    )
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)
    if got:  # at the break-even volume both cost the same over the horizon
        assert once_f + days * got * c_f == pytest.approx(once_p + days * got * c_p)


@pytest.mark.parametrize(
    "v, text", [(None, "never"), (0.0, "any volume"), (1000.0000000002, "1,000 calls/day"), (1040.2, "1,041 calls/day")]
)
def test_fmt_volume(v, text):
    assert fmt_volume(v) == text


def test_cost_arithmetic(tmp_path):
    run = make_run(
        tmp_path,
        "a",
        {"p": [(0.5, 0.5)], "p-w": [(0.6, 0.6)]},
        tokens={"p": 1000, "p-w": 200},
        completion={"p": 100, "p-w": 100},
        optimize={"p": 1800, "p-w": 5400},
        train={"p-w": 3600},
        calls_per_example=2,
    )
    advice = advise(
        run,
        calls_per_day=10_000,
        price_per_1m_prompt_tokens=0.15,
        price_per_1m_completion_tokens=0.6,
        price_per_training_hour=2.0,
        horizon_days=30,
    )
    p, pw = advice.rows
    assert p.calls_per_example == pytest.approx(2)
    assert p.cost_per_request == pytest.approx(2 * (1000 * 0.15 + 100 * 0.6) / 1e6)
    assert p.cost_per_day == pytest.approx(4.2)
    assert p.one_off_cost == pytest.approx(1.0)  # half an hour at 2 $/h
    assert p.horizon_cost == pytest.approx(1.0 + 30 * 4.2)
    assert pw.cost_per_day == pytest.approx(10_000 * 2 * (200 * 0.15 + 100 * 0.6) / 1e6)
    assert pw.one_off_cost == pytest.approx(3.0)  # 1.5 h of optimization, training included
    (be,) = advice.break_even
    assert (be.finetuned, be.prompted) == ("p-w", "p")
    assert be.calls_per_day == pytest.approx((3.0 - 1.0) / (30 * (p.cost_per_request - pw.cost_per_request)))
    # at that volume both cost the same over the horizon
    again = advise(
        run,
        calls_per_day=be.calls_per_day,
        price_per_1m_prompt_tokens=0.15,
        price_per_1m_completion_tokens=0.6,
        price_per_training_hour=2.0,
        horizon_days=30,
    )
    assert again.rows[0].horizon_cost == pytest.approx(again.rows[1].horizon_cost)


def test_finetuned_price_factor_raises_fine_tuned_token_costs(tmp_path):
    run = make_run(tmp_path, "a", {"p": [(0.5, 0.5)], "w": [(0.5, 0.5)]}, tokens={"p": 1000, "w": 1000})
    plain, doubled = advise(run), advise(run, finetuned_price_factor=2.0)
    assert doubled.rows[0].cost_per_day == pytest.approx(plain.rows[0].cost_per_day)
    assert doubled.rows[1].cost_per_day == pytest.approx(2 * plain.rows[1].cost_per_day)


def test_training_time_is_never_counted_below_the_training_alone(tmp_path):
    run = make_run(tmp_path, "a", {"w": [(0.5, 0.5)]}, optimize={"w": 0.0}, train={"w": 3600})
    assert advise(run, price_per_training_hour=3.0).rows[0].one_off_cost == pytest.approx(3.0)


# -- the recommendation follows the evidence ---------------------------------------------------------------
def _scenario_finetune_wins(tmp_path):
    return make_run(
        tmp_path,
        "win",
        {
            "zero-shot": [(0.3, 0.30)] * 3,
            "p": [(0.6, 0.60), (0.6, 0.61), (0.6, 0.62)],
            "p-w": [(0.8, 0.85), (0.8, 0.86), (0.8, 0.87)],
            "p-w-p": [(0.9, 0.88), (0.9, 0.90), (0.9, 0.92)],
        },
        tokens={"zero-shot": 80, "p": 400, "p-w": 400, "p-w-p": 420},
        optimize={"p": 60, "p-w": 1200, "p-w-p": 1300},
        n=200,
    )


def _scenario_tie(tmp_path):
    return make_run(
        tmp_path,
        "tie",
        {
            "zero-shot": [(0.3, 0.30)] * 3,
            "p": [(0.8, 0.80), (0.8, 0.85), (0.8, 0.90)],
            "w": [(0.8, 0.82), (0.8, 0.84), (0.8, 0.86)],
        },
        tokens={"zero-shot": 80, "p": 500, "w": 80},
        optimize={"p": 60, "w": 3600},
        train={"w": 3000},
        n=100,
    )


def _scenario_finetune_worse(tmp_path, w_tokens=600, with_pw=True):
    scores = {
        "zero-shot": [(0.3, 0.30)] * 3,
        "p": [(0.8, 0.80), (0.8, 0.81), (0.8, 0.79)],
        "w": [(0.4, 0.40), (0.4, 0.42), (0.4, 0.41)],
        "p-w": [(0.6, 0.60), (0.6, 0.62), (0.6, 0.61)],
    }
    if not with_pw:
        del scores["p-w"]
    return make_run(
        tmp_path,
        f"worse-{w_tokens}",
        scores,
        tokens={"zero-shot": 80, "p": 500, "w": w_tokens, "p-w": 500},
        optimize={"p": 60, "w": 3600, "p-w": 3700},
        n=100,
    )


def _check_not_dominated(advice):
    for rec in advice.recommendations:
        rows = [r for r in advice.rows if r.label == rec.label]
        chosen = next(r for r in rows if r.strategy == rec.strategy)
        assert dominated_by(chosen, rows) is None


def test_recommends_fine_tuning_when_the_gap_is_beyond_the_noise(tmp_path):
    advice = advise(_scenario_finetune_wins(tmp_path))
    (rec,) = advice.recommendations
    assert rec.strategy == "p-w-p"
    assert rec.text.startswith("Fine-tune: p-w-p (90.0 ± 2.0%) beats the best prompt-only strategy p (61.0 ± 1.0%)")
    assert "Prompt optimization first: p lifts zero-shot from 30.0% to 61.0%" in rec.text
    assert "one seed" not in rec.text
    assert (
        "p-w-p never becomes cheaper than p: p-w-p does not cost less per request than p (420 vs 400 prompt" in rec.text
    )
    _check_not_dominated(advice)


def test_within_the_noise_the_volume_decides(tmp_path):
    run = _scenario_tie(tmp_path)
    low, high = advise(run, calls_per_day=100), advise(run, calls_per_day=1_000_000)
    be = low.break_even[0].calls_per_day  # w: 1.67 h of one-off cost against 420 fewer prompt tokens per call
    assert be == pytest.approx((3600 - 60) / 3600 * 2.0 / (30 * 420 * 0.15 / 1e6))
    assert low.recommendations[0].strategy == "p"
    assert "Accuracy is the same within the noise" in low.recommendations[0].text
    assert f"above {fmt_volume(be)}" in low.recommendations[0].text
    assert high.recommendations[0].strategy == "w"
    assert "Fine-tune: at 1,000,000 calls/day w is cheaper" in high.recommendations[0].text
    # just either side of the break-even volume
    assert advise(run, calls_per_day=be * 0.99).recommendations[0].strategy == "p"
    assert advise(run, calls_per_day=be * 1.01).recommendations[0].strategy == "w"
    _check_not_dominated(low)
    _check_not_dominated(high)


def test_never_recommends_a_worse_and_more_expensive_fine_tune(tmp_path):
    advice = advise(_scenario_finetune_worse(tmp_path), calls_per_day=1_000_000)
    (rec,) = advice.recommendations
    assert rec.strategy == "p"
    assert rec.text.startswith(
        "Stay with prompt optimization: p (80.0 ± 1.0%). The best fine-tuned strategy, p-w (61.0 ± 1.0%)"
    )
    assert "switch only if" not in rec.text  # p-w is not cheaper either
    _check_not_dominated(advice)


def test_a_cheaper_but_worse_fine_tune_is_mentioned_not_recommended(tmp_path):
    advice = advise(_scenario_finetune_worse(tmp_path, w_tokens=50, with_pw=False), calls_per_day=1_000_000)
    (rec,) = advice.recommendations
    assert rec.strategy == "p"
    assert "w (41.0 ± 1.0%), is 40.0 points less accurate on dev" in rec.text  # issue 12 #5: chosen on dev
    assert (
        "w is cheaper ($13.50 vs $81.00 per day" in rec.text
        and "switch only if that accuracy loss is acceptable" in rec.text
    )
    _check_not_dominated(advice)


def test_one_seed_estimates_the_noise_from_the_test_set(tmp_path):
    run = make_run(
        tmp_path,
        "one",
        {"p": [(0.8, 0.80)], "w": [(0.8, 0.84)]},
        tokens={"p": 500, "w": 500},
        optimize={"w": 600},
        n=50,
    )
    (rec,) = advise(run).recommendations
    # issue 12 #5: compared on dev: gap 0 points < sampling error sqrt(2 * .8*.2/50) = 8.0 points
    assert "same within the noise" in rec.text and "±8.0 points" in rec.text
    assert "run --seeds 3" in rec.text
    assert rec.strategy == "p"  # same tokens and no training: cheaper
    assert "Keep p: it is cheaper" in rec.text


def test_only_prompt_strategies(tmp_path):
    run = make_run(tmp_path, "p", {"zero-shot": [(0.3, 0.3)], "p": [(0.6, 0.6)]})
    (rec,) = advise(run).recommendations
    assert rec.strategy == "p" and "Add a weight step" in rec.text
    assert advise(run).break_even == []


def test_poor_format_adherence_is_flagged(tmp_path):
    run = make_run(tmp_path, "f", {"p": [(0.6, 0.6)]}, fmt={"p": 0.7})
    assert "Only 70.0% of p's outputs parse" in advise(run).recommendation


def test_several_runs_get_one_recommendation_each(tmp_path):
    advice = advise([_scenario_finetune_wins(tmp_path), _scenario_finetune_worse(tmp_path)])
    assert [r.label for r in advice.recommendations] == ["iris (win)", "iris (worse-600)"]
    assert [r.strategy for r in advice.recommendations] == ["p-w-p", "p"]
    assert advice.recommendation.count("iris (") == 2
    assert {b.label for b in advice.break_even} == {"iris (win)", "iris (worse-600)"}


def test_prices_are_validated_all_at_once():
    with pytest.raises(ConfigError, match=r"calls_per_day=-1 .*price_per_training_hour=-2 .*horizon_days=0"):
        Prices(calls_per_day=-1, price_per_training_hour=-2, horizon_days=0)


def test_to_dict_is_json(tmp_path):
    d = advise(_scenario_tie(tmp_path)).to_dict()
    again = json.loads(json.dumps(d))
    assert again["recommendations"][0]["strategy"] in {"p", "w"}
    assert again["prices"]["calls_per_day"] == 10_000 and len(again["rows"]) == 3


# -- rendering and CLI helpers -----------------------------------------------------------------------------
def test_advice_markdown(tmp_path):
    md = advice_markdown(advise(_scenario_tie(tmp_path)))
    assert "| run | strategy | test acc. (%) |" in md
    assert "| iris | w | 84.0 ± 2.0 | 100% | 80 |" in md
    assert "**Recommendation:**" in md and "placeholder prices" in md


def test_run_advise_prints_tables_and_json(tmp_path):
    run = _scenario_finetune_wins(tmp_path)
    out = Console(record=True, width=220)
    run_advise([run], calls_per_day=5000, out=out)
    text = out.export_text()
    assert "cost per strategy" in text and "break-even" in text and "Recommendation:" in text
    assert "5,000 requests/day" in text
    out = Console(record=True, width=220)
    run_advise([run], as_json=True, out=out)
    assert json.loads(out.export_text())["recommendations"][0]["strategy"] == "p-w-p"


def test_run_report_writes_both_files(tmp_path):
    run = _scenario_tie(tmp_path)
    out = Console(record=True, width=200)
    md, html = run_report(
        [run], out_dir=tmp_path / "rep", calls_per_day=1_000_000, console=Console(quiet=True), out=out
    )
    assert md.exists() and html.exists() and str(md) in out.export_text()
    assert "1,000,000 requests/day" in md.read_text()


@pytest.mark.parametrize(
    ("strategy", "finetuned"),
    [("p-w", True), ("prompt-weights", True), ("W", True), ("prompt", False), ("zero-shot", False)],
)
def test_a_weight_step_is_found_however_the_strategy_is_written(tmp_path, strategy, finetuned):
    run = load_runs([make_run(tmp_path, "a", {"p": [(0.5, 0.5)]})])[0]
    row = run_table(run)[0] | {"strategy": strategy}
    assert cost_row(run, row, Prices()).finetuned is finetuned


def test_the_latency_header_says_what_the_column_is():
    assert "wall s / uncached call" in COST_HEADER
