"""Which data a saved program was optimized on, so `cotune eval` tests on held-out examples.

The split seed (which examples are train, dev and test) and the optimizer seed (demos, rollouts, training)
are different things: a program records the split it was optimized on (``split_seed``, ``split_sizes`` in
its metadata), `cotune eval` rebuilds that split by default, and warns when asked to test on examples the
program saw while it was optimized.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError


def split_metadata(task: Any, split_seed: int) -> dict[str, Any]:
    """What to save with a program about the split it was optimized on."""
    sizes = {name: len(getattr(task, name)) for name in ("train", "dev", "test") if hasattr(task, name)}
    return {"split_seed": split_seed, "split_sizes": sizes}


def split_for_eval(saved: dict[str, Any] | None, split_seed: int | None) -> tuple[int, dict[str, int]]:
    """(split seed, split sizes) to evaluate with: the ones given, else the program's own, else 0 and defaults."""
    meta = (saved or {}).get("metadata") or {}
    seed = split_seed if split_seed is not None else int(meta.get("split_seed", 0))
    sizes = meta.get("split_sizes") or {}
    return seed, {k: int(v) for k, v in sizes.items() if k in ("train", "dev", "test")}


def _key(example: Any) -> str:
    return json.dumps(example.to_dict() if hasattr(example, "to_dict") else dict(example), sort_keys=True, default=str)


def seen_in_optimization(
    saved: dict[str, Any] | None, dataset: Sequence[Any], *, task: str, data_dir: Path | None, split_seed: int
) -> int:
    """How many examples of ``dataset`` were in the train or dev split the saved program was optimized on
    (0 when the program does not record its split, or was optimized on this very split seed)."""
    meta = (saved or {}).get("metadata") or {}
    if "split_seed" not in meta or int(meta["split_seed"]) == split_seed:
        return 0
    from cotune.tasks import load_task

    sizes = {k: int(v) for k, v in (meta.get("split_sizes") or {}).items() if k in ("train", "dev", "test")}
    try:
        original = load_task(task, data_dir=data_dir, seed=int(meta["split_seed"]), **sizes)
    except ConfigError:
        return 0
    seen = {_key(ex) for part in (original.train, original.dev) for ex in part}
    return sum(_key(ex) in seen for ex in dataset)


def refuse_overwrite(paths: Sequence[Path], force: bool, flag: str = "--out") -> None:
    """Refuse to replace earlier outputs (programs saved elsewhere may point at them) unless ``force``.

    Raises:
        ConfigError: naming what exists and the two ways on.
    """
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{', '.join(map(str, existing))} already exist{'s' * (len(existing) == 1)} (programs saved earlier may "
            f"point at it); pass --force to overwrite, or choose another {flag}"
        )
