"""A LoRA training's progress, saved every few minutes beside its output folder, so that a training stopped
halfway (a Ctrl-C, a kill, a machine gone) resumes where it was: a Θ step of Qwen2.5-Coder-0.5B trains for
~20 minutes on a 2-core CPU, and a run resumed after a stop would otherwise start it again from step 0.

The checkpoint (``<output_dir>.checkpoint.pt``, one file replaced atomically) holds the trainable weights, the
optimizer's and the learning-rate schedule's state, and the losses and times of the steps done. A training
takes it up only when its key matches — the same examples (their hash), settings (`flat_settings`), base model
and starting adapter — and draws the batch order again from its seed, skipping the steps done, so the resumed
training is the one that would have run without the stop (up to LoRA dropout, which draws from torch's
unseeded default generator). The file is removed once the adapter is saved.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cotune.errors import TrainingError

EVERY_SECONDS = 120.0  # a save costs a fraction of a second: the trainable weights and two Adam moments


def checkpoint_path(output_dir: Path) -> Path:
    return output_dir.with_name(output_dir.name + ".checkpoint.pt")


class Checkpoint:
    """Save and resume one training's progress (`resume` once before the first step, `save_if_due` after each
    step, `remove` once the adapter is saved)."""

    def __init__(self, output_dir: Path, key: dict[str, Any], every_seconds: float | None = None):
        self.path = checkpoint_path(output_dir)
        self.every = EVERY_SECONDS if every_seconds is None else every_seconds
        self.key = json.loads(json.dumps(key, default=str))  # as it reads back: lists, strings
        self._saved_at = time.monotonic()

    def resume(self, model: Any, optimizer: Any, scheduler: Any) -> tuple[list[float], list[float]]:
        """Load a matching checkpoint into ``model``/``optimizer``/``scheduler``; returns the losses and seconds
        of the steps it had done ([] and []: none, or one of another training, which is left for `save` to
        replace)."""
        import torch

        if not self.path.is_file():
            return [], []
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a file torn by a crash in an older version, or not ours: train from the start
            return [], []
        if state.get("key") != self.key:
            return [], []
        params = dict(model.named_parameters())
        missing = [name for name in state["trainable"] if name not in params]
        if missing:
            raise TrainingError(f"checkpoint {self.path} names weights this model lacks ({missing[:3]}); delete it")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return list(state["losses"]), list(state["step_seconds"])

    def save_if_due(
        self, model: Any, optimizer: Any, scheduler: Any, losses: list[float], step_seconds: list[float]
    ) -> bool:
        """Save when ``every_seconds`` have passed since the last save (or the start); True if it saved."""
        if time.monotonic() - self._saved_at < self.every:
            return False
        self.save(model, optimizer, scheduler, losses, step_seconds)
        return True

    def save(self, model: Any, optimizer: Any, scheduler: Any, losses: list[float], step_seconds: list[float]) -> None:
        import torch

        state = {
            "key": self.key,
            "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "losses": list(losses),
            "step_seconds": list(step_seconds),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self._saved_at = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
