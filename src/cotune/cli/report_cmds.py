"""The work behind `cotune report` and `cotune advise`, plus the option types both commands share.

Wiring (in cli/experiment_cli.py)::

    @app.command("report")
    def report_cmd(run_dirs: RunDirsArg, out_dir: OutDirOpt = None, calls_per_day: CallsPerDayOpt = DEFAULT_CALLS_PER_DAY,
                   ...) -> None:
        run_report(run_dirs, out_dir=out_dir, calls_per_day=calls_per_day, ..., console=console, out=out)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cotune.report import advisor as adv

RunDirsArg = Annotated[list[Path], typer.Argument(help="One or more run directories written by `cotune run`.")]
OutDirOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Folder for report.md/report.html (default: the first run directory)."),
]
CallsPerDayOpt = Annotated[
    float, typer.Option("--calls-per-day", min=0, help="Requests per day the program will serve.")
]
PromptPriceOpt = Annotated[
    float,
    typer.Option("--price-prompt", min=0, help="Price per 1M prompt tokens (default is a placeholder: set yours)."),
]
CompletionPriceOpt = Annotated[
    float, typer.Option("--price-completion", min=0, help="Price per 1M completion tokens (placeholder default).")
]
TrainingPriceOpt = Annotated[
    float,
    typer.Option("--price-training-hour", min=0, help="Price per hour of optimization/training (placeholder default)."),
]
HorizonOpt = Annotated[
    float,
    typer.Option("--horizon-days", min=1, help="Days over which one-off optimization/training costs are paid back."),
]
FinetunedFactorOpt = Annotated[
    float,
    typer.Option(
        "--finetuned-price-factor",
        min=0,
        help="Token-price multiplier for fine-tuned programs (hosted fine-tunes often cost more per token).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the advice as JSON instead of tables.")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print the advice as Markdown instead of tables.")]


def run_report(
    run_dirs: list[Path],
    *,
    out_dir: Path | None = None,
    calls_per_day: float = adv.DEFAULT_CALLS_PER_DAY,
    price_per_1m_prompt_tokens: float = adv.DEFAULT_PRICE_PER_1M_PROMPT_TOKENS,
    price_per_1m_completion_tokens: float = adv.DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS,
    price_per_training_hour: float = adv.DEFAULT_PRICE_PER_TRAINING_HOUR,
    horizon_days: float = adv.DEFAULT_HORIZON_DAYS,
    finetuned_price_factor: float = 1.0,
    console: Console,
    out: Console,
) -> tuple[Path, Path]:
    """Write the Markdown and HTML report and print where they are, with the recommendation."""
    from cotune.cli.out_paths import check_out_dir
    from cotune.report.build import write_report

    if out_dir is not None:
        check_out_dir(out_dir)  # report.md, report.html and report-plots/ are replaced
    prices = adv.Prices(
        calls_per_day,
        price_per_1m_prompt_tokens,
        price_per_1m_completion_tokens,
        price_per_training_hour,
        horizon_days,
        finetuned_price_factor,
    )
    with console.status("writing the report ..."):
        md, html = write_report(run_dirs, out_dir, prices=prices)
    out.print(f"report: {md}")
    out.print(f"        {html}")
    return md, html


def run_advise(
    run_dirs: list[Path],
    *,
    calls_per_day: float = adv.DEFAULT_CALLS_PER_DAY,
    price_per_1m_prompt_tokens: float = adv.DEFAULT_PRICE_PER_1M_PROMPT_TOKENS,
    price_per_1m_completion_tokens: float = adv.DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS,
    price_per_training_hour: float = adv.DEFAULT_PRICE_PER_TRAINING_HOUR,
    horizon_days: float = adv.DEFAULT_HORIZON_DAYS,
    finetuned_price_factor: float = 1.0,
    as_json: bool = False,
    as_markdown: bool = False,
    out: Console,
) -> adv.Advice:
    """Print the advisor's cost table, break-even volumes and recommendation (tables, JSON or Markdown)."""
    advice = adv.advise(
        run_dirs,
        calls_per_day=calls_per_day,
        price_per_1m_prompt_tokens=price_per_1m_prompt_tokens,
        price_per_1m_completion_tokens=price_per_1m_completion_tokens,
        price_per_training_hour=price_per_training_hour,
        horizon_days=horizon_days,
        finetuned_price_factor=finetuned_price_factor,
    )
    if as_json:
        out.print_json(json.dumps(advice.to_dict(), default=str))
    elif as_markdown:
        from cotune.report.build import advice_markdown

        out.print(advice_markdown(advice), markup=False, highlight=False)
    else:
        for table in advice_tables(advice):
            out.print(table)
        out.print(escape(adv.assumptions_text(advice.prices)), style="dim")
        for rec in advice.recommendations:
            lead = f"Recommendation ({rec.label}):" if len(advice.recommendations) > 1 else "Recommendation:"
            out.print(f"[bold]{escape(lead)}[/] {escape(rec.text)}")
    return advice


def advice_tables(advice: adv.Advice) -> list[Table]:
    """Rich tables for the terminal: costs per strategy (the recommended one highlighted) and break-even volumes."""
    chosen = {(r.label, r.strategy) for r in advice.recommendations}
    cost = Table(title="cost per strategy", title_justify="left")
    for i, col in enumerate(adv.COST_HEADER):
        cost.add_column(col, justify="left" if i < 2 else "right", overflow="fold")
    for row, cells in zip(advice.rows, adv.cost_cells(advice), strict=True):
        cost.add_row(*(escape(c) for c in cells), style="bold green" if (row.label, row.strategy) in chosen else None)
    tables = [cost]
    if advice.break_even:
        be = Table(title="break-even: fine-tuned (short prompt) against prompt-only", title_justify="left")
        for col in adv.BREAK_EVEN_HEADER:
            be.add_column(col, overflow="fold")
        for cells in adv.break_even_cells(advice):
            be.add_row(*(escape(c) for c in cells))
        tables.append(be)
    return tables
