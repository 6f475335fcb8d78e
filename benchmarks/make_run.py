"""`make run` timed as a new user meets it: a fresh clone, the install, then the main job on an empty cache.

    .venv/bin/python benchmarks/make_run.py              # clone HEAD, `make` the venv, `make run` (~5-10 min)
    .venv/bin/python benchmarks/make_run.py --no-clone   # this checkout's venv, the run alone (empty cache)
    .venv/bin/python benchmarks/make_run.py --cap-isa avx2 --out benchmarks/results/make_run-avx2cap.json
    .venv/bin/python benchmarks/make_run.py --cap-isa avx2 --ref 38aed7c --out ...   # an older commit, the same way

The run gets a cache folder of its own (``COTUNE_CACHE_DIR``): no converted model and no cached request from an
earlier run, as on a fresh machine. Each phase's time is read from the run's event log (model load until the
first node starts, then each node), so the JSON says where the minutes go. The install reads the machine's
package registries and local wheels: its time depends on them more than on cotune.

``--cap-isa avx2`` runs the install and the job on a bf16 CPU as if it had AVX2 only, a stand-in where no AVX2
machine can be had (root and `unshare` needed): in a mount namespace where /proc/cpuinfo lists no AVX-512 or AMX
flag (so cotune's dtype "auto" picks float32, as on such a CPU), with torch's kernels, oneDNN and MKL capped at
AVX2 (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``). The same CPU's clock and
caches remain: compare a capped run with a real AVX2 machine's only through a commit timed on both (``--ref``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import CAP_HOW, RESULTS, ROOT, arguments, capped_env, capped_prefix, commit, write_results


def main() -> None:
    ap = arguments(__doc__, RESULTS / "make_run.json")
    ap.add_argument("--no-clone", action="store_true", help="time the run in this checkout (its venv installed)")
    ap.add_argument("--keep", action="store_true", help="keep the clone, the cache and the run folder")
    ap.add_argument("--ref", default=None, help="the commit to clone (default: HEAD)")
    ap.add_argument("--cap-isa", choices=("avx2",), default=None, help="run as on a CPU with AVX2 only (see above)")
    args = ap.parse_args()
    if args.ref and args.no_clone:
        ap.error("--ref clones that commit; --no-clone times this checkout: give one of them")
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="cotune-make-run-"))
    try:
        wrap = capped_prefix(scratch) if args.cap_isa else []
        result = _measure(scratch, clone=not args.no_clone, ref=args.ref, wrap=wrap)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.cap_isa:
        result["isa_cap"] = {"isa": args.cap_isa, "how": CAP_HOW}
    write_results(args.out, {"benchmark": "make_run", **result}, started=started)
    print(json.dumps({k: result[k] for k in ("install_seconds", "run_seconds", "total_seconds")}, indent=2))


def _measure(scratch: Path, *, clone: bool, ref: str | None = None, wrap: Sequence[str] = ()) -> dict[str, Any]:
    checkout = scratch / "cotune" if clone else ROOT
    if clone:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(checkout)], check=True)
        if ref:
            subprocess.run(["git", "-C", str(checkout), "checkout", "--quiet", ref], check=True)
    env = {**os.environ, "COTUNE_CACHE_DIR": str(scratch / "cache")}
    env = capped_env(env) if wrap else env
    env.pop("COTUNE_REQUEST_CACHE", None)
    install = _timed([*wrap, "make", ".venv/.installed"], checkout, env) if clone else None
    before = set((checkout / "runs").glob("*")) if (checkout / "runs").is_dir() else set()
    run_seconds = _timed([*wrap, "make", "run"], checkout, env)
    made = sorted(set((checkout / "runs").glob("*")) - before)
    if len(made) != 1:
        raise SystemExit(f"expected one new run folder under {checkout / 'runs'}, found {made}")
    run_dir = made[0]
    table = json.loads((run_dir / "results.json").read_text())
    if not clone:  # the run folder is this checkout's: moved out of the way of the user's runs
        shutil.move(str(run_dir), scratch / run_dir.name)
        run_dir = scratch / run_dir.name
    return {
        "clone": clone,
        "timed_commit": commit(checkout)["commit"],
        "cache": "empty: a cache folder of the run's own",
        "install_seconds": install,
        "run_seconds": run_seconds,
        "total_seconds": round((install or 0.0) + run_seconds, 1),
        "phases": phases(run_dir / "events.jsonl"),
        "table": {n["strategy"]: {"test": n["test"]["score"], "dev": n["dev"]["score"]} for n in table["nodes"]},
        "strategies": table["strategies"],
    }


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 1)


def phases(events_file: Path) -> dict[str, float]:
    """Seconds from the run's start to its first node (loading the model and the data), then of each node
    (its step and its dev and test evaluations), from the event log."""
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    start = next(e["time"] for e in events if e["event"] == "run.start")
    out: dict[str, float] = {}
    opened: dict[str, float] = {}
    for e in events:
        if e["event"] == "node.start":
            out.setdefault("setup", round(e["time"] - start, 1))
            opened[e["strategy"]] = e["time"]
        elif e["event"] == "node.done" and e["strategy"] in opened:
            out[e["strategy"]] = round(e["time"] - opened.pop(e["strategy"]), 1)
    return out


if __name__ == "__main__":
    main()
