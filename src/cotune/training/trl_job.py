"""What a TRL training run is given and how it reports: the `Job` (also the job file of a launched run)
and the `Report` that turns its progress into cotune events. Shared by `cotune.training.trl_trainer`, the
processes of `cotune.training.trl_launch` and `cotune.training.trl_sft`, below all three."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cotune.events import EventSink, Progress, emit
from cotune.training.config import LoRAConfig, TrainingConfig
from cotune.training.sft_data import ChatExample


@dataclass
class Job:
    """One training job: what `train_sft` needs, and what the job file of a launched run holds."""

    examples: list[ChatExample]
    base_model_path: str
    output_dir: str
    lora: LoRAConfig
    training: TrainingConfig
    base_model: str | None = None
    init_adapter: str | None = None
    processes: int = 1
    packing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": [ex.to_dict() for ex in self.examples],
            "base_model_path": self.base_model_path,
            "output_dir": self.output_dir,
            "lora": self.lora.to_dict(),
            "training": self.training.to_dict(),
            "base_model": self.base_model,
            "init_adapter": self.init_adapter,
            "processes": self.processes,
            "packing": self.packing,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(
            **(
                d
                | {
                    "examples": [ChatExample.from_dict(e) for e in d["examples"]],
                    "lora": LoRAConfig.from_dict(d["lora"]),
                    "training": TrainingConfig.from_dict(d["training"]),
                }
            )
        )


class Report:
    """Training progress as cotune events: ``finetune.start``, a ``finetune`` bar whose postfix carries each
    step's loss, ``finetune.done``. A launched run sends the same calls over its output (`trl_launch`)."""

    def __init__(self, events: EventSink | None):
        self.events, self.bar = events, None

    def start(self, **fields: Any) -> None:
        emit(self.events, "finetune.start", **fields)
        self.bar = Progress(self.events, "finetune", total=fields.get("steps")).__enter__()

    def step(self, loss: float, lr: float | None = None) -> None:
        if self.bar is not None:
            self.bar.advance(loss=round(loss, 4), lr=lr)

    def done(self, **fields: Any) -> None:
        self.close()
        emit(self.events, "finetune.done", **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


__all__ = ["Job", "Report"]
