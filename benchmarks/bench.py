"""What every benchmark shares: its arguments, the commit and machine beside its numbers, how results are written.

    from bench import arguments, write_results

    args = arguments(__doc__, RESULTS / "mine.json").parse_args()
    started = time.perf_counter()
    ...
    write_results(args.out, {"benchmark": "mine", ...}, started=started)

A figure is only comparable with another from the same kind of CPU, so the machine record names the CPU
model and the instruction sets that decide cotune's speed (bf16: AVX512-BF16 or AMX; else float32 on AVX2).
A results file is only ever written by its script, through `write_results`: it always says the commit, the
machine and the wall time.

    .venv/bin/python benchmarks/bench.py      # prints this machine's record and the commit

Where no AVX2-only machine can be had, a benchmark with ``--cap-isa avx2`` runs on a bf16 CPU as if it had AVX2
only (`capped_prefix`, `rerun_capped`): /proc/cpuinfo without AVX-512 and AMX flags (a mount namespace, so
cotune's dtype "auto" picks float32 as there), torch's kernels, oneDNN and MKL held to AVX2. The same CPU's
clock and caches remain: a stand-in, named as one in the machine record (``kind: "avx2 (capped)"``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
# The flags that decide which kernels run: bf16 (native or emulated), AVX-512 and AVX2 float32, AMX tiles.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


# torch's vectorized kernels, oneDNN (bf16 and float32 matmuls) and MKL (float32 GEMM), each held to AVX2.
CAP_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CAPPED = "COTUNE_BENCH_CAPPED_ISA"  # set in a capped process: its machine record says so
CAP_HOW = "/proc/cpuinfo without AVX-512/AMX flags (mount namespace); " + ", ".join(CAP_ENV)


def arguments(doc: str | None, out: Path | None, out_help: str | None = None) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: its docstring as the description, and ``--out``.

    Scripts add their own options to it; ``out`` is the default results file (None: the script decides,
    and says how in ``out_help``).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out_help is None:
        out_help = f"the results file (default: {_shown(out)})"
    parser.add_argument("--out", type=Path, default=out, help=out_help)
    return parser


def _shown(path: Path | None) -> str:
    if path is None:
        return "none"
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def commit(where: Path = HERE, ignoring: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout holding ``where`` (this one by default) and whether it had uncommitted changes
    (None where git can't tell), other than to the file ``ignoring``: a results file being written (a script
    that writes its file after each part would otherwise call its own earlier write a change)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    top = git("rev-parse", "--show-toplevel") if ignoring is not None else None
    own = os.path.relpath(Path(ignoring).resolve(), top) if top else ".."
    # A file outside the checkout is no change of it: nothing to leave out.
    unless = [] if own.startswith("..") else [":(top)", f":(top,exclude){own}"]
    status = git("status", "--porcelain", "--untracked-files=no", "--", *unless)
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def avx2_cpuinfo(text: str) -> str:
    """``/proc/cpuinfo`` text without the AVX-512 and AMX flags."""
    return re.sub(r" (avx512\w*|amx\w*)(?=\s)", "", text)


def capped_prefix(folder: Path) -> list[str]:
    """The command prefix that runs a command as on an AVX2-only CPU (its environment: `capped_env`): in a mount
    namespace whose /proc/cpuinfo, written under ``folder``, lists no AVX-512 or AMX flag."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        raise SystemExit("--cap-isa needs root and `unshare` (util-linux): it mounts its own /proc/cpuinfo")
    fake = folder / "cpuinfo-avx2"
    fake.write_text(avx2_cpuinfo(Path("/proc/cpuinfo").read_text()))
    return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(fake)]


def capped_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, **CAP_ENV, CAPPED: "avx2"}


def rerun_capped(isa: str | None) -> None:
    """Run this benchmark again as on a CPU with ``isa`` only ("avx2"), replacing this process, unless it already
    runs so or ``isa`` is None. Call it before torch is imported."""
    if isa is None or os.environ.get(CAPPED) == isa:
        return
    prefix = capped_prefix(Path(tempfile.mkdtemp(prefix="cotune-cap-")))
    os.execvpe(prefix[0], [*prefix, sys.executable, *sys.argv], capped_env(dict(os.environ)))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform says."""
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine a figure came from: CPU model, cores, the speed-relevant flags, the load, and the software."""
    from cotune.hardware import cpu_flags, cpu_has_bf16

    flags = cpu_flags() or frozenset()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        # what this process may use (a container or taskset may allow fewer than the machine has)
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "bf16": cpu_has_bf16(),
        "kind": "bf16" if cpu_has_bf16() else ("avx2" if "avx2" in flags else "other"),
        **({"kind": f"{os.environ[CAPPED]} (capped)", "isa_cap": CAP_HOW} if os.environ.get(CAPPED) else {}),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    for package in ("torch", "transformers"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")  # its thread count only where the benchmark computed with it
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def looks_like_a_path(text: str) -> bool:
    """An absolute path of this machine, not a model's text that starts with a slash: no whitespace, and it or
    its folder exists, two levels below the root at least."""
    if not text.startswith("/") or any(c.isspace() for c in text):
        return False
    path = Path(text)
    return len(path.parts) > 2 and (path.exists() or path.parent.is_dir())


def portable(value: Any) -> Any:
    """``value`` with every absolute path in it (a string or a Path, nested anywhere) written relative to the
    checkout: ``benchmarks/...`` inside it, ``../shared/data/gsm8k`` beside it, ``…/last/two`` elsewhere — a results
    file says where its inputs were as a user would type them, not where this machine keeps them."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    if isinstance(value, Path) or (isinstance(value, str) and looks_like_a_path(value)):
        path = Path(os.path.normpath(value))
        if not path.is_absolute():
            return str(value)
        if path == ROOT or ROOT in path.parents or ROOT.parent in path.parents:
            return os.path.relpath(path, ROOT)
        return "…/" + "/".join(path.parts[-2:])
    return value


def differing_votes(votes: list, reference: list) -> int:
    """How many ensemble votes differ from a reference run's, question by question (None: no prediction)."""
    return sum(
        a != b for row, ref in zip(votes, reference, strict=True) for a, b in zip(row or [], ref or [], strict=False)
    )


def write_results(path: Path, data: dict[str, Any], *, started: float | None = None) -> Path:
    """Write ``data`` with the commit, the machine and the wall time beside it.

    The script's own keys win, except ``machine``: its keys (e.g. the load average before the run) are added to
    the machine record. Absolute paths are written relative to the checkout (`portable`). ``started`` is
    ``time.perf_counter()`` when the benchmark began; a script that counts its wall time itself (over several
    sittings) passes ``wall_seconds`` in ``data`` instead.
    """
    if "wall_seconds" not in data and started is None:
        raise ValueError(f"{path.name}: a results file says its wall time; pass started= or a wall_seconds key")
    out: dict[str, Any] = {**commit(ignoring=path), "machine": machine_info() | data.get("machine", {})}
    out |= {k: v for k, v in data.items() if k != "machine"}
    if "wall_seconds" not in data:
        out["wall_seconds"] = round(time.perf_counter() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(out), indent=2, default=str) + "\n")
    return path


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(json.dumps({**commit(), "machine": machine_info()}, indent=2))


if __name__ == "__main__":
    main()
