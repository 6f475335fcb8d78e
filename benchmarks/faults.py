"""Fault injection: no finished work lost, no wrong score kept.

    .venv/bin/python benchmarks/faults.py           # 20 kills, 4 outages of 30 s: about 2 h on 2 busy CPU cores;
                                                    # writes benchmarks/results/faults.json
    .venv/bin/python benchmarks/faults.py --quick   # 3 kills (model load, training, report) on smaller splits,
                                                    # outages of 4 s: ~10 min, a check that writes no results file

(a) kill -9: a small real `cotune run` (SmolLM2-135M, Iris, strategy p-w-p) runs once uninterrupted (the
    reference). Then each trial starts the same run afresh, with its own request cache, kills it with SIGKILL
    in a chosen phase, and resumes it to the end (fault_kill.py). The targets cycle through the phases (model
    load, prompt search, rollouts, training, evaluation, report): the trial waits until its run's events.jsonl
    enters a segment of that phase, picked at random from the reference's timeline, and kills a random part
    of that segment's reference length later. Each kill records the phase it hit (from the last events
    before it; "start-up" if it came before the CLI's first line) and the last event. A trial survives only when its resume completes with the reference's
    table (dev and test of every node), no finished node lost and none redone.
(b) outage: a run through an OpenAI-compatible server that, mid-run, refuses connections, answers 500,
    answers 503, or takes requests and never answers, for ``--outage-s`` seconds (fault_outage.py). The
    step must fail (not be scored), and a resume must complete it with the score a healthy server gives.
(c) damaged files: a corrupt request cache and a corrupt config.json give one clear line and a non-zero
    exit (no traceback); a corrupt node.json is set aside and its step redone on resume, to the same table.

Every check is in the summary; the exit code is 0 only when all of them passed. The work folder (run
directories and their logs) is kept and named at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, arguments, write_results
from fault_kill import PHASES, kill_nine, read_events, table
from fault_outage import KINDS, outage

CONFIG = {
    "task": "iris",
    "model": "smollm2-135m",
    "strategies": ["p-w-p"],
    "seeds": [0],
    "train_size": 10,
    "dev_size": 6,
    "test_size": 6,
    "inner_val_ratio": 0.5,
    "threads": 6,
    "max_tokens": 48,
    "prompt": {"num_candidates": 2, "max_bootstrapped_demos": 1, "max_labeled_demos": 2},
    "weights": {"fill_with_labels": True, "lora": {"r": 8, "alpha": 16}, "training": {"epochs": 1, "batch_size": 4}},
}
# --quick: fewer examples and rollouts, so a trial takes a fraction of the time; every phase is still there.
# Its kills aim at the phases that write the most (the model cache, the adapter, the results).
QUICK_PHASES = ("model load", "training", "report")
QUICK = {"train_size": 6, "dev_size": 3, "test_size": 3, "weights": CONFIG["weights"] | {"num_rollouts": 2}}
CLI = [sys.executable, "-c", "from cotune.cli import main; main()"]


def cli_launch(config: Path):
    """How a trial starts a run into a folder and resumes it: `cotune run`, as a user would."""

    def launch(run: Path, resume: bool) -> list[str]:
        if resume:
            return [*CLI, "run", "--resume", str(run)]
        return [*CLI, "run", "--config", str(config), "--out-dir", str(run.parent), "--name", run.name]

    return launch


# -- (c) damaged files ---------------------------------------------------------------------------------------
def damaged(work: Path, env: dict[str, str], finished: Path, reference_table: dict) -> dict[str, dict]:
    def cotune(*args: str, cache: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args], env={**env, "COTUNE_REQUEST_CACHE": str(cache)}, capture_output=True, text=True
        )

    out: dict[str, dict] = {}
    bad = work / "bad-cache.sqlite"
    bad.write_bytes(b"not a database " * 200)
    out["corrupt_cache_eval"] = clear_line(cotune("eval", "--limit", "1", cache=bad), str(bad))
    cleared = cotune("cache", "clear", cache=bad)
    out["corrupt_cache_clear"] = {
        "exit_code": cleared.returncode,
        "passed": cleared.returncode == 0 and not bad.exists(),
    }

    cache = finished.parent / "requests.sqlite"  # the finished run's own: the redone step replays its calls
    broken = work / "broken-config"
    shutil.copytree(finished, broken)
    (broken / "config.json").write_text('{"task": "iris", "seeds": [0')
    resumed = cotune("run", "--resume", str(broken), cache=cache)
    out["corrupt_config_resume"] = clear_line(resumed, f"{broken / 'config.json'} is corrupt")

    node = work / "broken-node"
    shutil.copytree(finished, node)
    (node / "seed-0" / "p" / "node.json").write_text('{"seed": 0, "strat')
    resumed = cotune("run", "--resume", str(node), cache=cache)
    set_aside = any(e.get("event") == "node.corrupt" for e in read_events(node))
    equal = resumed.returncode == 0 and table(node) == reference_table
    out["corrupt_node_resume"] = {
        "exit_code": resumed.returncode,
        "set_aside_and_redone": set_aside,
        "table_equal": equal,
        "passed": set_aside and equal,
    }
    return out


def clear_line(proc: subprocess.CompletedProcess, must: str) -> dict[str, Any]:
    """A failure said in one clear line: a non-zero exit, no traceback, and the line names ``must``."""
    text = " ".join(proc.stderr.split())
    out = {"exit_code": proc.returncode, "traceback": "Traceback" in proc.stderr, "names_it": must in text}
    return out | {"message": text[-300:], "passed": proc.returncode != 0 and not out["traceback"] and out["names_it"]}


# -- the summary ---------------------------------------------------------------------------------------------
def checks(result: dict[str, Any], every_phase: bool) -> dict[str, bool]:
    """Every check as one flag; the run passes only when all of them are true."""
    k = result["kill9"]
    out = {
        "kills_landed": k["kills"] >= result["settings"]["kills"],
        "every_kill_survived": k["survived"] == k["kills"],
        "no_node_lost": k["nodes_lost"] == 0,
        "no_node_redone": k["nodes_redone"] == 0,
        "final_tables_equal_reference": k["tables_equal"],
    }
    if every_phase:
        out["every_phase_hit"] = not k["phases_missing"]
    for kind, o in result["outages"].items():
        out[f"outage_{kind}_step_failed_not_scored"] = o["step_failed_not_scored"]
        out[f"outage_{kind}_resumed_to_true_score"] = o["resumed_to_true_score"]
    for name, d in result["damaged_files"].items():
        out[f"damaged_{name}"] = d["passed"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = arguments(
        __doc__, None, out_help="the results file (default: benchmarks/results/faults.json; none with --quick)"
    )
    ap.add_argument("--kills", type=int, default=None, help="kill -9 trials that land (default 20; --quick 3)")
    ap.add_argument("--outage-s", type=float, default=None, help="length of each outage (default 30 s; --quick 4 s)")
    ap.add_argument("--outages", default="refused,500,503,timeout", help="outage kinds, comma-separated")
    ap.add_argument("--seed", type=int, default=0, help="draws the kill targets")
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="longest a single run or resume may take")
    ap.add_argument("--quick", action="store_true", help="3 kills on smaller splits, 4 s outages")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the runs go (default: a new temporary folder)")
    args = ap.parse_args(argv)
    if args.kills is None:
        args.kills = 3 if args.quick else 20
    if args.outage_s is None:
        args.outage_s = 4.0 if args.quick else 30.0
    if args.out is None and not args.quick:
        args.out = RESULTS / "faults.json"

    kinds = [k for k in args.outages.split(",") if k]
    if unknown := [k for k in kinds if k not in KINDS]:
        ap.error(f"--outages: unknown kind(s) {', '.join(unknown)}; valid: {', '.join(KINDS)}")
    started = time.perf_counter()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cotune-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    config = CONFIG | (QUICK if args.quick else {})
    (work / "config.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML too
    env = dict(os.environ)
    result: dict[str, Any] = {
        "benchmark": "faults",
        "command": "python benchmarks/faults.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"kills": args.kills, "outage_s": args.outage_s, "seed": args.seed, "quick": args.quick},
        "config": config,
    }
    result["outages"] = {kind: outage(work, kind, args.outage_s) for kind in kinds}
    for kind, o in result["outages"].items():
        print(f"outage {kind}: step failed {o['step_failed_not_scored']}, resumed {o['resumed_to_true_score']}")
    phases = QUICK_PHASES if args.quick else PHASES
    launch = cli_launch(work / "config.yaml")
    result["kill9"] = kill_nine(launch, work, env, args.kills, args.seed, args.timeout_s, phases=phases)
    k = result["kill9"]
    print(f"kill -9: {k['kills']} kills, {k['survived']} survived, phases {k['phases_hit']}, lost {k['nodes_lost']}")
    result["damaged_files"] = damaged(work, env, Path(k["reference_run"]), k["reference_table"])
    result["checks"] = checks(result, every_phase=args.kills >= len(phases))
    result["passed"] = all(result["checks"].values())
    result["work_folder"] = str(work)
    print(json.dumps({"checks": result["checks"], "passed": result["passed"]}, indent=2))
    if args.out is not None:
        write_results(args.out, result, started=started)
        print(f"wrote {args.out}")
    else:
        (work / "faults-result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"{time.perf_counter() - started:.0f} s; work folder {work}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
