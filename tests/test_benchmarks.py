"""The benchmark scripts: each answers --help quickly, and each writes its results through benchmarks/bench.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Scripts, not the helper modules they import (fault_kill.py, ...): those have no __main__.
SCRIPTS = sorted(
    p for p in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("archive/*.py")] if '__name__ == "__main__"' in p.read_text()
)
# The archive keeps decision records as they ran; the live scripts share bench.py.
LIVE = [p for p in SCRIPTS if p.parent == BENCHMARKS and p.name != "bench.py"]

# Runs a script as `python benchmarks/<script>.py --help` would (its folder first on sys.path), then reports the
# exit code and whether the heavy libraries got imported on the way.
HELP = """
import json, runpy, sys
path = sys.argv[1]
sys.path.insert(0, str(__import__("pathlib").Path(path).parent))
sys.argv = [path, "--help"]
try:
    runpy.run_path(path, run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code or 0
print("\\nHELP-RESULT " + json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


def bench_module():
    spec = importlib.util.spec_from_file_location("bench", BENCHMARKS / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def help_of(script: Path) -> tuple[str, dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", HELP, str(script)], capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - t0
    assert "HELP-RESULT " in proc.stdout, f"{script.name} --help crashed:\n{proc.stderr[-2000:]}"
    text, _, result = proc.stdout.rpartition("HELP-RESULT ")
    return text, json.loads(result), seconds


@pytest.fixture(scope="module")
def helps() -> dict[str, tuple[str, dict, float]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((s.name for s in SCRIPTS), pool.map(help_of, SCRIPTS), strict=True))


def test_there_are_scripts_to_check():
    assert len(LIVE) >= 10 and (BENCHMARKS / "archive" / "grammar_engines.py") in SCRIPTS


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS])
def test_every_script_answers_help_without_heavy_imports(helps, script):
    text, result, seconds = helps[script]
    assert result["code"] == 0, text
    assert text.lstrip().startswith("usage:"), text[:300]
    # --help must not load torch or transformers (seconds, and a crash where they are absent)
    assert result["heavy"] == [], f"{script} imports {result['heavy']} at module level"
    assert seconds < 20, f"{script} --help took {seconds:.1f} s"


@pytest.mark.parametrize("script", [s.name for s in LIVE])
def test_every_live_script_takes_out_and_writes_through_bench(helps, script):
    text, _, _ = helps[script]
    assert "--out" in text
    source = (BENCHMARKS / script).read_text()
    assert "write_results(" in source, f"{script} writes its results without bench.write_results"
    assert "import platform" not in source, f"{script} records the machine itself; use bench.machine_info"


def test_results_say_commit_machine_and_wall_time(tmp_path):
    bench = bench_module()
    out = bench.write_results(
        tmp_path / "r.json", {"benchmark": "x", "machine": {"note": "shared"}}, started=time.perf_counter() - 2
    )
    data = json.loads(out.read_text())
    assert data["benchmark"] == "x"
    assert data["commit"] is None or len(data["commit"]) == 40
    assert "dirty" in data
    machine = data["machine"]
    assert machine["note"] == "shared"  # the script's machine keys join the record
    assert isinstance(machine["cpu_flags"], list) and machine["cpu"] and machine["cpus"] >= 1
    assert data["wall_seconds"] >= 2


def test_a_results_file_rewritten_in_parts_is_not_its_own_dirt(tmp_path):
    """A script that writes its file after each part (the ladders) finds its earlier write uncommitted: that
    one file does not make the checkout dirty; any other change does."""
    bench = bench_module()

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    results, code = tmp_path / "results" / "r.json", tmp_path / "code.py"
    results.write_text("{}\n")
    code.write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "start")
    results.write_text('{"part": 1}\n')
    assert bench.commit(tmp_path, ignoring=results)["dirty"] is False
    assert bench.commit(tmp_path)["dirty"] is True
    assert bench.commit(tmp_path, ignoring=tmp_path.parent / "elsewhere.json")["dirty"] is True
    code.write_text("x = 2\n")
    assert bench.commit(tmp_path, ignoring=results)["dirty"] is True


def test_a_results_file_without_wall_time_is_refused(tmp_path):
    bench = bench_module()
    with pytest.raises(ValueError, match="wall time"):
        bench.write_results(tmp_path / "r.json", {"benchmark": "x"})
    assert not (tmp_path / "r.json").exists()
    kept = bench.write_results(tmp_path / "s.json", {"benchmark": "x", "wall_seconds": 7.5})
    assert json.loads(kept.read_text())["wall_seconds"] == 7.5


def test_make_run_splits_the_run_into_setup_and_nodes_from_its_event_log(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    make_run = importlib.import_module("make_run")
    lines = [
        {"time": 100.0, "event": "run.start"},
        {"time": 112.5, "event": "node.start", "strategy": "zero-shot"},
        {"time": 118.0, "event": "node.done", "strategy": "zero-shot"},
        {"time": 118.0, "event": "node.start", "strategy": "w"},
        {"time": 119.0, "event": "progress.start", "id": 3, "description": "finetune"},
        {"time": 180.25, "event": "node.done", "strategy": "w"},
        {"time": 180.25, "event": "node.start", "strategy": "p-w"},  # never done: left out
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert make_run.phases(events) == {"setup": 12.5, "zero-shot": 5.5, "w": 62.2}


def table1_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("table1", BENCHMARKS / "table1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table1_stop_records_the_sitting_once_and_a_second_signal_exits(monkeypatch):
    import signal

    table1 = table1_module(monkeypatch)
    recorded, exits = [], []
    stop = table1.Stop(lambda: recorded.append(1))
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGTERM, None)
    stop.finish()  # the run's own finally: the sitting is not counted twice
    assert recorded == [1]
    monkeypatch.setattr(table1.os, "_exit", exits.append)
    stop(signal.SIGTERM, None)
    assert exits == [128 + signal.SIGTERM] and recorded == [1]


# A child that inherited SIGINT ignored (a background job of a non-interactive shell) installs table1's Stop and
# waits; the parent's SIGINT must reach it, record the sitting and raise KeyboardInterrupt.
STOP_CHILD = """
import signal, sys, threading
sys.path.insert(0, sys.argv[1])
import importlib.util
spec = importlib.util.spec_from_file_location("table1", sys.argv[1] + "/table1.py")
table1 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table1)
table1.Stop(lambda: print("recorded", flush=True)).install()
try:
    print("ready", flush=True)  # inside the try: the signal may come before the wait begins
    threading.Event().wait(30)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_table1_stop_reaches_a_job_started_with_sigint_ignored():
    import signal

    child = subprocess.Popen(
        [sys.executable, "-c", STOP_CHILD, str(BENCHMARKS)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=20)
    finally:
        child.kill()
    assert out.split() == ["recorded", "interrupted"]


def test_results_write_paths_relative_to_the_checkout_and_keep_texts(tmp_path):
    bench = bench_module()
    root = bench.ROOT
    data = {
        "benchmark": "x",
        "out": str(root / "benchmarks" / "results" / "x.json"),
        "config": {"data_dir": str(root.parent / "data-beside"), "cache": root / "runs" / "c.sqlite"},
        "run_dir": ["/proc/self/status"],  # elsewhere: neither in the checkout nor beside it
        "texts": ["/ 2 = 5", "/", "/etc and more"],  # model outputs that start with a slash stay as they are
    }
    out = json.loads(bench.write_results(tmp_path / "r.json", data, started=time.perf_counter()).read_text())
    assert out["out"] == "benchmarks/results/x.json"
    assert out["config"] == {"data_dir": "../data-beside", "cache": "runs/c.sqlite"}  # a folder beside the checkout
    assert out["run_dir"] == ["…/self/status"]
    assert out["texts"] == ["/ 2 = 5", "/", "/etc and more"]
    assert str(root) not in json.dumps(out)


def test_a_benchmark_caps_a_command_to_avx2_by_a_cpuinfo_without_avx512_or_amx(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench")
    text = "processor\t: 0\nflags\t\t: fpu avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 avx512vl\nbogomips\t: 1\n"
    capped = bench.avx2_cpuinfo(text)
    assert "flags\t\t: fpu avx avx2 fma\n" in capped and "bogomips" in capped
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the namespace part needs root and unshare")
    wrap = bench.capped_prefix(tmp_path)
    count = "grep -c avx512 /proc/cpuinfo; grep -c avx2 /proc/cpuinfo"
    seen = subprocess.run([*wrap, "sh", "-c", count], capture_output=True, text=True)
    if "mount" in seen.stderr or "unshare" in seen.stderr:
        pytest.skip(f"no mount namespace here: {seen.stderr.strip()}")
    without, with_avx2 = (int(n) for n in seen.stdout.split())
    assert without == 0 and with_avx2 > 0  # the command sees AVX2 and no AVX-512 flag
