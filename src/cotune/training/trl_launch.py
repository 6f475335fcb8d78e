"""A `TRLTrainer` job in data-parallel processes: ``accelerate launch`` runs this module in each of them.

    python -m cotune.training.trl_launch JOB.json

The parent (`launch`) writes the job file (examples, LoRA and training configs, paths), starts
``accelerate launch --multi_gpu --num_processes N -m cotune.training.trl_launch JOB.json`` and reads back the
main process's `TrainResult` (``result.json`` beside the job file). Each process runs
`cotune.training.trl_sft.train_sft` on its share of every batch; the main process reports progress as
``cotune-event`` lines on its standard output, which the parent turns back into events. A process that
fails with a cotune error writes it to ``error-RANK.txt``; the parent raises that message, or else the
tail of the processes' error output.

Why ``--multi_gpu`` on a machine without CUDA: it is accelerate's launcher that starts N processes
(torch.distributed.run); ``--cpu`` starts a single one unless MPI is set up. The processes still train on
the CPU over gloo (``use_cpu`` in the trainer's arguments, ``ACCELERATE_USE_CPU`` here).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from cotune.errors import CotuneError, TrainingError
from cotune.events import EventSink
from cotune.training.lora import TrainResult
from cotune.training.trl_job import Job, Report

EVENT_PREFIX = "cotune-event "
STDERR_TAIL_LINES = 40


def launch(job: Job, events: EventSink | None = None) -> TrainResult:
    """Run ``job`` in ``job.processes`` processes under ``accelerate launch`` and return the main one's result.

    Raises:
        TrainingError: fewer CUDA devices than processes, or a process failed (its message, or the end of
            the processes' error output).
    """
    import torch

    cpu = job.training.device == "cpu" or not torch.cuda.is_available()
    if not cpu and torch.cuda.device_count() < job.processes:
        raise TrainingError(
            f"processes={job.processes}, but torch sees {torch.cuda.device_count()} CUDA device(s); use at most "
            f"{torch.cuda.device_count()} processes, or device='cpu'"
        )
    with tempfile.TemporaryDirectory(prefix="cotune-trl-job-") as tmp:
        folder = Path(tmp)
        (folder / "job.json").write_text(json.dumps(job.to_dict()))
        report = Report(events)
        try:
            returncode, stderr_tail = _run(_command(job, folder, cpu), _environment(job, cpu), folder, report)
        finally:
            report.close()
        errors = sorted(folder.glob("error-*.txt"))
        if errors:
            raise TrainingError(errors[0].read_text())
        if returncode != 0 or not (folder / "result.json").is_file():
            raise TrainingError(
                f"`accelerate launch` with {job.processes} processes failed (exit code {returncode}); the end of "
                f"its error output:\n{stderr_tail}"
            )
        return TrainResult(**json.loads((folder / "result.json").read_text()))


def _command(job: Job, folder: Path, cpu: bool) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(job.processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]
    if cpu:
        threads = job.training.num_threads or max(1, (os.cpu_count() or 1) // job.processes)
        cmd += ["--num_cpu_threads_per_process", str(threads)]
    return cmd + ["-m", "cotune.training.trl_launch", str(folder / "job.json")]


def _environment(job: Job, cpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # cotune importable in the children, installed or not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def _run(cmd: list[str], env: dict[str, str], folder: Path, report: Report) -> tuple[int, str]:
    """Run the launcher; relay the main process's progress lines to ``report``; keep the end of stderr."""
    stderr_path = folder / "stderr.txt"
    with (
        stderr_path.open("w") as stderr,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True, bufsize=1) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(EVENT_PREFIX):
                kind, fields = json.loads(line[len(EVENT_PREFIX) :])
                getattr(report, kind)(**fields)
        returncode = proc.wait()
    with stderr_path.open(errors="replace") as f:
        tail = "".join(deque(f, maxlen=STDERR_TAIL_LINES))
    return returncode, tail


def _free_port() -> int:
    """A free TCP port on this machine for the processes' rendezvous (two runs at once must not share one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _LineReport(Report):
    """A `Report` that prints its calls as ``cotune-event`` lines for the parent (main process only)."""

    def __init__(self) -> None:
        super().__init__(None)

    def _send(self, kind: str, **fields: Any) -> None:
        print(EVENT_PREFIX + json.dumps([kind, fields], default=str), flush=True)

    def start(self, **fields: Any) -> None:
        self._send("start", **fields)

    def step(self, loss: float, lr: float | None = None) -> None:
        self._send("step", loss=loss, lr=lr)

    def done(self, **fields: Any) -> None:
        self._send("done", **fields)


def main(argv: list[str] | None = None) -> int:
    """The entry point of each launched process: ``python -m cotune.training.trl_launch JOB.json``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cotune.training.trl_launch JOB.json", file=sys.stderr)
        return 2
    job_path = Path(argv[0])
    job = Job.from_dict(json.loads(job_path.read_text()))
    rank = os.environ.get("RANK", "0")
    from cotune.training.scoped import torch_threads
    from cotune.training.trl_sft import train_sft

    try:
        with torch_threads(job.training.num_threads):
            result = train_sft(job, _LineReport())
    except CotuneError as e:
        (job_path.parent / f"error-{rank}.txt").write_text(str(e))
        return 1
    finally:
        _end_process_group()
    if result is not None:
        fields = {k: v for k, v in result.to_dict().items() if k != "seconds_per_step"}
        (job_path.parent / "result.json").write_text(json.dumps(fields))
    return 0


def _end_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
