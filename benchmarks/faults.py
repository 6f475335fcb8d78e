"""Fault injection: no finished work lost, no wrong score kept (issue 12).

    .venv/bin/python benchmarks/faults.py            # ~10 min on 2 CPU cores; writes benchmarks/results/faults.json

(a) kill -9: a small real `cotune run` (SmolLM2-135M, Iris, strategy p,w,p, tiny splits) is killed with
    SIGKILL at random moments and resumed each time, until ``--kills`` kills have landed. Each finished
    run's table must equal an uninterrupted run's, and no node may be computed twice: a node's
    ``node.done`` is logged only after its node.json is on disk, so a node with two ``node.done`` events
    was redone, and one whose ``node.done`` was logged but whose node.json is gone was lost.
(b) outage: an OpenAI-compatible server (cotune's own, over a scripted Iris answerer) answers 503 for
    ``--outage-s`` seconds in the middle of a run. The step must fail (not be scored), and a resume must
    complete it with the score a healthy server gives.
(c) damaged files: a corrupt request cache and a corrupt config.json give one clear line and a non-zero
    exit (no traceback); a corrupt node.json is set aside and its step redone on resume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "faults.json"

CONFIG = """\
# cotune run --config faults.yaml  (tiny: seconds per step on a laptop CPU)
task: iris
model: smollm2-135m
strategies: [p-w-p]
seeds: [0]
train_size: 10
dev_size: 6
test_size: 6
inner_val_ratio: 0.5
threads: 6
max_tokens: 48
prompt: {num_candidates: 2, max_bootstrapped_demos: 1, max_labeled_demos: 2}
weights: {fill_with_labels: true, lora: {epochs: 1, r: 8, alpha: 16, batch_size: 4}}
"""


def cotune(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from cotune.cli import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def table(run: Path) -> dict[str, tuple[float, float]]:
    """(dev, test) score of every node, intermediate steps (p, p-w) included, not only the table's rows."""
    results = json.loads((run / "results.json").read_text())
    return {f"seed-{n['seed']}/{n['strategy']}": (round(n["dev"]["score"], 6), round(n["test"]["score"], 6))
            for n in results["nodes"]}


def node_counts(run: Path) -> tuple[Counter, set[str]]:
    """How often each node was finished (node.done events), and which nodes have a node.json now."""
    done: Counter = Counter()
    for line in (run / "events.jsonl").read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if e.get("event") == "node.done":
            done[f"seed-{e['seed']}/{e['strategy']}"] += 1
    present = {f"{p.parent.parent.name}/{p.parent.name}" for p in run.glob("seed-*/*/node.json")}
    return done, present


# -- (a) kill -9 ---------------------------------------------------------------------------------------------
def kill_nine(work: Path, env: dict[str, str], kills: int, max_delay: float, seed: int, budget_s: float) -> dict:
    cfg = work / "faults.yaml"
    cfg.write_text(CONFIG)
    t0 = time.perf_counter()
    ref = cotune("run", "--config", str(cfg), "--out-dir", str(work), "--name", "reference", env=env)
    _, err = ref.communicate()
    if ref.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{err[-2000:]}")
    reference_seconds = time.perf_counter() - t0
    reference = table(work / "reference")

    rng = random.Random(seed)
    trials: list[dict] = []
    chains: list[dict] = []
    chain, run_dir = 0, None
    start = time.perf_counter()
    while len(trials) < kills and time.perf_counter() - start < budget_s:
        if run_dir is None:
            chain += 1
            name = f"chaos-{chain}"
            run_dir = work / name
            proc = cotune("run", "--config", str(cfg), "--out-dir", str(work), "--name", name, env=env)
        else:
            proc = cotune("run", "--resume", str(run_dir), env=env)
        delay = rng.uniform(0.5, max_delay)
        try:
            proc.wait(timeout=delay)
            finished_first = True
        except subprocess.TimeoutExpired:
            finished_first = False
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _, err = proc.communicate()
        if finished_first:
            if proc.returncode != 0:  # a resume that fails on what the kill left behind
                trials[-1]["survived"] = False if trials else None
                chains.append({"run": run_dir.name, "error": err.strip().splitlines()[-1:] if err else []})
                run_dir = None
                continue
            chains.append(_check_chain(run_dir, reference))
            run_dir = None
            continue
        trials.append({"chain": chain, "after_s": round(delay, 2), "survived": True})
    if run_dir is not None:  # finish the last chain without a kill
        proc = cotune("run", "--resume", str(run_dir), env=env)
        _, err = proc.communicate()
        if proc.returncode != 0:
            if trials:
                trials[-1]["survived"] = False
            chains.append({"run": run_dir.name, "error": err.strip().splitlines()[-1:] if err else []})
        else:
            chains.append(_check_chain(run_dir, reference))
    return {
        "config": CONFIG,
        "reference_seconds": round(reference_seconds, 1),
        "reference_table": reference,
        "trials": len(trials),
        "survived": sum(bool(t["survived"]) for t in trials),
        "nodes_lost": sum(c.get("nodes_lost", 0) for c in chains),
        "nodes_redone": sum(c.get("nodes_redone", 0) for c in chains),
        "tables_equal": all(c.get("table_equal") for c in chains),
        "chains": chains,
        "kills": trials,
    }


def _check_chain(run: Path, reference: dict) -> dict:
    done, present = node_counts(run)
    got = table(run)
    return {
        "run": run.name,
        "table": got,
        "table_equal": got == reference,
        "nodes_lost": len(set(done) - present),
        "nodes_redone": sum(n - 1 for n in done.values() if n > 1),
        "node_done_counts": dict(done),
    }


# -- (b) an outage in the middle of a run --------------------------------------------------------------------
def outage(work: Path, outage_s: float) -> dict:
    import logging

    from cotune.errors import LMConnectionError
    from cotune.experiment.config import ExperimentConfig
    from cotune.experiment.runner import Runner
    from cotune.lm import FakeLM
    from cotune.lm.openai_compat import OpenAICompatible
    from cotune.lm.server import start_server
    from cotune.tasks import load_task

    logging.getLogger("cotune.server").setLevel(logging.CRITICAL)  # the scripted 500s are expected
    task = load_task("iris", train=10, dev=6, test=6)
    state = {"requests": 0, "down_from": None, "down_at": 16}
    lock = threading.Lock()

    def iris(messages):
        """Right by petal length alone: setosa under 2.5 cm, else versicolor (so about 2/3 right)."""
        with lock:
            state["requests"] += 1
            if state["requests"] == state["down_at"]:
                state["down_from"] = time.monotonic()
            down = state["down_from"] is not None and time.monotonic() - state["down_from"] < outage_s
        if down:
            raise LMConnectionError("scripted outage")  # the server answers 500 while it lasts
        length = float(re.search(r"Petal Length: ([\d.]+)", messages[-1]["content"]).group(1))
        return f"Reasoning: petal length {length}.\nSpecies: {'setosa' if length < 2.5 else 'versicolor'}"

    def runner(name: str, lm) -> Runner:
        cfg = ExperimentConfig.from_dict({"task": "iris", "model": "stub", "strategies": ["p"], "seeds": [0],
                                          "out_dir": str(work), "name": name, "threads": 2, "inner_val_ratio": 0.5,
                                          "prompt": {"num_candidates": 2}})
        return Runner(cfg, lm=lm, task=task)

    with start_server(FakeLM(iris), model_name="stub") as server:
        def client():
            return OpenAICompatible("stub", base_url=server.url, cache=False, max_retries=2, backoff=0.2, timeout=30)

        state["down_at"] = 10**9  # healthy reference first
        reference = runner("outage-reference", client()).start()
        truth = {n["strategy"]: n["test"]["score"] for n in reference.nodes()}
        state.update(requests=0, down_at=16)
        t0 = time.monotonic()
        run = runner("outage", client()).start()
        failed = run.results()["failures"]
        kept_during = {n["strategy"]: n["test"]["score"] for n in run.nodes()}
        wait = max(0.0, outage_s - (time.monotonic() - (state["down_from"] or t0)))
        time.sleep(wait)  # the server is back
        _, resumed = Runner.resume(run.path, lm=client(), task=task)
        final = {n["strategy"]: n["test"]["score"] for n in resumed.nodes()}
    return {
        "outage_s": outage_s,
        "outage_started_at_request": 16,
        "failures_during_outage": [{k: f[k] for k in ("strategy", "kind")} for f in failed],
        "scores_kept_during_outage": kept_during,
        "scores_after_resume": final,
        "true_scores": truth,
        "failed_not_scored": bool(failed) and all(f["strategy"] not in kept_during for f in failed if f["kind"] == "infrastructure"),
        "resume_true_score": final == truth,
    }


# -- (c) damaged files ---------------------------------------------------------------------------------------
def damaged(work: Path, env: dict[str, str], chain_run: Path | None, reference: dict | None) -> dict:
    out: dict = {}
    bad = work / "bad-cache.sqlite"
    bad.write_bytes(b"not a database " * 200)
    benv = {**env, "COTUNE_REQUEST_CACHE": str(bad)}
    proc = cotune("eval", "--limit", "1", env=benv)
    _, err = proc.communicate()
    out["corrupt_cache_eval"] = _clear_line(proc.returncode, err, str(bad))
    proc = cotune("cache", "clear", env=benv)
    proc.communicate()
    out["corrupt_cache_clear"] = {"exit_code": proc.returncode, "removed": not bad.exists()}

    if chain_run is not None and reference is not None:
        broken = work / "broken-config"
        shutil.copytree(chain_run, broken)
        (broken / "config.json").write_text('{"task": "iris", "seeds": [0')
        proc = cotune("run", "--resume", str(broken), env=env)
        _, err = proc.communicate()
        out["corrupt_config_resume"] = _clear_line(proc.returncode, err, "config.json is corrupt")

        node = work / "broken-node"
        shutil.copytree(chain_run, node)
        (node / "seed-0" / "p" / "node.json").write_text('{"seed": 0, "strat')
        proc = cotune("run", "--resume", str(node), env=env)
        _, err = proc.communicate()
        events = [json.loads(x) for x in (node / "events.jsonl").read_text().splitlines() if x.strip()]
        out["corrupt_node_resume"] = {
            "exit_code": proc.returncode,
            "set_aside_and_redone": any(e.get("event") == "node.corrupt" for e in events),
            "table_equal": proc.returncode == 0 and table(node) == reference,
        }
    return out


def _clear_line(code: int, err: str, must: str) -> dict:
    text = " ".join(err.split())
    return {"exit_code": code, "traceback": "Traceback" in err, "names_it": must in text, "message": text[-300:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--max-delay", type=float, default=20.0, help="latest kill, seconds after a process starts")
    ap.add_argument("--outage-s", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop killing after this long")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cotune-faults-"))
    env = {**os.environ, "COTUNE_REQUEST_CACHE": str(work / "requests.sqlite")}
    t0 = time.perf_counter()
    result: dict = {"benchmark": "faults", "command": "python benchmarks/faults.py " + " ".join(sys.argv[1:])}
    result["outage"] = outage(work, args.outage_s)
    print("outage:", json.dumps({k: result["outage"][k] for k in ("failed_not_scored", "resume_true_score")}), flush=True)
    result["kill9"] = kill_nine(work, env, args.kills, args.max_delay, args.seed, args.budget_s)
    k = result["kill9"]
    print("kill -9:", json.dumps({x: k[x] for x in ("trials", "survived", "nodes_lost", "nodes_redone", "tables_equal")}),
          flush=True)
    chains = [c for c in k["chains"] if c.get("table_equal")]
    chain_run = work / chains[-1]["run"] if chains else None
    result["damaged_files"] = damaged(work, env, chain_run, k["reference_table"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["summary"] = {
        "trials": k["trials"], "survived": k["survived"], "nodes_lost": k["nodes_lost"],
        "nodes_redone": k["nodes_redone"], "final_tables_equal_uninterrupted": k["tables_equal"],
        "outage_step_failed_not_scored": result["outage"]["failed_not_scored"],
        "outage_resume_true_score": result["outage"]["resume_true_score"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out} ({result['seconds']} s); work folder {work}")


if __name__ == "__main__":
    main()
