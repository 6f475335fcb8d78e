"""kill -9 trials for benchmarks/faults.py: kill a run in a chosen phase, resume it, and judge what is left.

A trial is one fresh run, with its own request cache, killed once with SIGKILL and then resumed to the end:
it survives only when that resume completes with the uninterrupted run's table, no finished node lost and
none redone. The kill moment is chosen from the uninterrupted (reference) run's timeline: the trial waits
until its run enters the same phase segment (its events.jsonl says so) and kills it a random part of that
segment's reference length later. The phase recorded is the one the killed run's last events put it in.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

PHASES = ("model load", "prompt search", "rollouts", "training", "evaluation", "report")  # kills aim at these
# (and a kill may land in "start-up": the interpreter and imports, before the CLI's first line)
# Which phase an event starts. progress.start events are told apart by their description.
EVENT_PHASES = {
    "run.start": "model load",
    "node.skipped": "model load",  # restoring a finished node loads its program and adapter
    "traces.collected": "training",  # tokenizing, the trunk check, then the optimizer steps
    "finetune.traces": "training",
    "finetune.labels": "training",
    "finetune.group": "training",
    "finetune.start": "training",
}
STEP_PHASES = {"p": "prompt search", "w": "rollouts", "": "evaluation"}
PROGRESS_PHASES = (  # description prefix -> phase
    ("experiment", "model load"),
    ("seed ", "evaluation"),
    ("score ", "evaluation"),
    ("collect traces", "rollouts"),
    ("teacher rollout", "rollouts"),
    ("finetune", "training"),
    ("bootstrap", "prompt search"),
    ("candidate", "prompt search"),
    ("starting program", "prompt search"),
)
POLL_S = 0.01  # a report phase lasts about a second

# (run directory, resume?) -> the command that starts or resumes that run
Launch = Callable[[Path, bool], list[str]]


def phase_of(event: dict[str, Any], current: str) -> str:
    """The phase a run is in after ``event``, given the phase it was in before."""
    name = event.get("event")
    if name == "progress.start":
        description = str(event.get("description", ""))
        return next((phase for prefix, phase in PROGRESS_PHASES if description.startswith(prefix)), current)
    if name == "step.start":
        return STEP_PHASES.get(event.get("kind", ""), current)
    return EVENT_PHASES.get(name, current)


def timeline(
    events: list[dict[str, Any]], started: float, ended: float, spoke: float | None = None
) -> list[dict[str, Any]]:
    """The run's phases as segments {phase, start, end} (seconds since ``started``, the process's launch).

    A process is in "start-up" until it first writes (``spoke`` seconds after its launch; None: not known),
    then in "model load" (the CLI loads the model before it logs any event), and in "report" once every node
    is finished (the results, the best program and the report are written after).
    """
    first = events[0]["time"] - started if events else ended - started
    segments = [{"phase": "start-up", "start": 0.0}] if spoke is not None and spoke <= first else []
    segments.append({"phase": "model load", "start": spoke if segments else 0.0})
    total, finished = None, 0
    for e in events:
        if e.get("event") == "run.start":
            total, finished = e.get("nodes"), 0
        if e.get("event") in ("node.done", "node.skipped"):
            finished += 1
        current = segments[-1]["phase"]
        phase = "report" if current == "report" or (total and finished >= total) else phase_of(e, current)
        if phase != current:
            segments.append({"phase": phase, "start": max(0.0, e["time"] - started)})
    for seg, nxt in zip(segments, segments[1:] + [{"start": ended - started}], strict=True):
        seg["end"] = nxt["start"]
    return segments


def read_events(run: Path) -> list[dict[str, Any]]:
    path = run / "events.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by the kill
    return out


def table(run: Path) -> dict[str, list[float]]:
    """[dev, test] score of every node, intermediate steps (p, p-w) included, not only the table's rows."""
    results = json.loads((run / "results.json").read_text())
    return {
        f"seed-{n['seed']}/{n['strategy']}": [round(n["dev"]["score"], 6), round(n["test"]["score"], 6)]
        for n in results["nodes"]
    }


class Child:
    """A run's process, in its own process group (so a kill takes its workers too), its output in ``log``.

    It notes when the process first writes: `cotune run` prints its first line before it loads the model, so
    that moment ends the interpreter's start-up.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log, self.size = log, log.stat().st_size if log.is_file() else 0
        self.started, self.spoke = time.time(), None
        with log.open("a") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        if self.spoke is None and self.log.stat().st_size > self.size:
            self.spoke = time.time() - self.started
        return self.proc.poll() is None

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout_s: float) -> int:
        """Its exit code, once it ends; killed after ``timeout_s``."""
        while self.running() and time.time() - self.started < timeout_s:
            time.sleep(POLL_S if self.spoke is None else 0.1)
        if self.proc.poll() is None:
            self.kill()
        return self.proc.wait()


def reference(launch: Launch, run: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """The uninterrupted run: its table and its timeline, which the trials aim their kills by."""
    run.parent.mkdir(parents=True, exist_ok=True)
    log = run.parent / f"{run.name}.log"
    child = Child(launch(run, False), env, log)
    code = child.wait(timeout_s)
    ended = time.time()
    if code != 0 or not (run / "results.json").is_file():
        raise RuntimeError(f"the uninterrupted run failed (exit code {code}):\n{log.read_text()[-2000:]}")
    return {
        "seconds": round(ended - child.started, 1),
        "table": table(run),
        "timeline": timeline(read_events(run), child.started, ended, child.spoke),
    }


def targets(segments: list[dict[str, Any]], phases: list[str], rng: random.Random) -> list[dict[str, Any]]:
    """One kill target per entry of ``phases``: a segment of that phase in the reference, picked at random,
    and a moment inside it (a fraction of its length). A phase the reference never entered is skipped."""
    out = []
    for phase in phases:
        mine = [i for i, s in enumerate(segments) if s["phase"] == phase]
        if not mine:
            continue
        k = rng.randrange(len(mine))
        seg = segments[mine[k]]
        out.append(
            {
                "phase": phase,
                "occurrence": k,
                "start_s": seg["start"],
                "length_s": seg["end"] - seg["start"],
                "at": rng.uniform(0.1, 0.9),
            }
        )
    return out


def kill_moment(target: dict[str, Any], entered_s: float) -> float:
    """When to kill a trial that entered the target segment ``entered_s`` seconds after its launch: the target's
    fraction of the segment, the segment's length scaled by the trial's pace against the reference's up to it
    (a machine busier or quieter than during the reference runs every phase slower or faster alike; unscaled, a
    kill aimed at a phase of a slow reference lands after that phase in a faster trial)."""
    pace = entered_s / target["start_s"] if target.get("start_s") else 1.0
    pace = min(max(pace, 0.05), 20.0)
    return entered_s + target["at"] * target["length_s"] * pace


def kill_trial(
    launch: Launch, run: Path, env: dict[str, str], target: dict[str, Any], ref: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Start a fresh run in ``run``, SIGKILL it at ``target``, resume it to the end and judge the result."""
    run.parent.mkdir(parents=True, exist_ok=True)
    log = run.parent / f"{run.name}.log"
    child = Child(launch(run, False), env, log)
    kill_at = None
    while child.running() and time.time() - child.started < timeout_s:
        if kill_at is None:
            segments = timeline(read_events(run), child.started, time.time(), child.spoke)
            mine = [s for s in segments if s["phase"] == target["phase"]]
            if len(mine) > target["occurrence"]:
                kill_at = child.started + kill_moment(target, mine[target["occurrence"]]["start"])
        if kill_at is not None and time.time() >= kill_at:
            child.kill()
            break
        time.sleep(POLL_S)
    killed_s = time.time() - child.started
    code = child.wait(timeout_s)
    trial: dict[str, Any] = {"target": target["phase"], "killed": code == -signal.SIGKILL}
    if not trial["killed"]:  # it ended (or failed) before the moment came: no kill landed
        return trial | {"exit_code": code, "after_s": round(killed_s, 2)}
    events = read_events(run)
    last = events[-1] if events else {}
    segments = timeline(events, child.started, child.started + killed_s, child.spoke)
    trial |= {
        "phase": segments[-1]["phase"],
        "last_event": {k: last[k] for k in ("event", "description", "strategy", "kind") if k in last} or None,
        "after_s": round(killed_s, 2),
        "into_phase_s": round(killed_s - segments[-1]["start"], 2),
    }
    resume = (run / "config.json").is_file()
    if not resume:  # killed before the run directory was written: the user starts it again
        trial["resumed_as"] = "new run"
    child = Child(launch(run, resume), env, log)
    code = child.wait(timeout_s)
    trial["resume_seconds"] = round(time.time() - child.started, 1)
    return trial | judge(run, code, ref["table"])


def judge(run: Path, exit_code: int, reference_table: dict[str, list[float]]) -> dict[str, Any]:
    """Did the resume complete, with the reference's table, no finished node lost and none redone?

    A node's node.done is logged only after its node.json is on disk: two node.done events mean it was
    computed twice (redone), a node.done whose node.json is gone means it was lost.
    """
    done: Counter = Counter(
        f"seed-{e['seed']}/{e['strategy']}" for e in read_events(run) if e.get("event") == "node.done"
    )
    present = {f"{p.parent.parent.name}/{p.parent.name}" for p in run.glob("seed-*/*/node.json")}
    completed = exit_code == 0 and (run / "results.json").is_file()
    got = table(run) if completed else None
    out = {
        "resume_exit_code": exit_code,
        "resume_completed": completed,
        "table_equal": got == reference_table,
        "nodes_lost": len(set(done) - present),
        "nodes_redone": sum(n - 1 for n in done.values() if n > 1),
    }
    out["survived"] = completed and out["table_equal"] and not out["nodes_lost"] and not out["nodes_redone"]
    if completed and not out["table_equal"]:
        out["table"] = got
    return out


def kill_nine(
    launch: Launch, work: Path, env: dict[str, str], kills: int, seed: int, timeout_s: float, phases=PHASES
) -> dict[str, Any]:
    """A reference run, then ``kills`` trials whose targets cycle through ``phases`` (each trial its own
    run directory and request cache); a target the run ended before is tried again, twice at most."""
    rng = random.Random(seed)
    ref = reference(launch, work / "reference" / "run", _own_cache(env, work / "reference"), timeout_s)
    trials: list[dict[str, Any]] = []
    cycle = [phases[i % len(phases)] for i in range(kills)]
    for target in targets(ref["timeline"], cycle, rng):
        for _attempt in range(3):
            folder = work / f"trial-{len(trials) + 1:02d}"
            trial = kill_trial(launch, folder / "run", _own_cache(env, folder), target, ref, timeout_s)
            trials.append(trial)
            if trial["killed"]:
                break
    landed = [t for t in trials if t["killed"]]
    return {
        "reference_seconds": ref["seconds"],
        "reference_table": ref["table"],
        "reference_timeline": [{k: round(v, 2) if k != "phase" else v for k, v in s.items()} for s in ref["timeline"]],
        "kills": len(landed),
        "missed": len(trials) - len(landed),
        "survived": sum(t["survived"] for t in landed),
        "phases_hit": dict(Counter(t["phase"] for t in landed)),
        "phases_missing": [p for p in phases if p not in {t["phase"] for t in landed}],
        "nodes_lost": sum(t["nodes_lost"] for t in landed),
        "nodes_redone": sum(t["nodes_redone"] for t in landed),
        "tables_equal": all(t["table_equal"] for t in landed),
        "reference_run": str(work / "reference" / "run"),
        "trials": trials,
    }


def _own_cache(env: dict[str, str], folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {**env, "COTUNE_REQUEST_CACHE": str(folder / "requests.sqlite")}
