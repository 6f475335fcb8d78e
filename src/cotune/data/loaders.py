"""Loaders: JSONL, CSV and Hugging Face `datasets`. Malformed rows raise `DataError` with file and line."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cotune.data.dataset import Dataset
from cotune.data.example import Example
from cotune.errors import DataError

RowFn = Callable[[dict[str, Any]], dict[str, Any]]


def load_jsonl(
    path: str | Path,
    *,
    inputs: Sequence[str] | None = None,
    required: Sequence[str] = (),
    transform: RowFn | None = None,
    limit: int | None = None,
) -> Dataset:
    """Read one JSON object per line. Blank lines are skipped.

    Args:
        inputs: fields to mark as inputs (see `Example.with_inputs`).
        required: fields every row must have (after ``transform``).
        transform: maps a raw row to the fields to keep.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    examples = []
    for lineno, line in _utf8_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg} at column {e.colno})", path=path, line=lineno) from None
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", path=path, line=lineno)
        examples.append(_make(row, path, lineno, inputs, required, transform))
        if limit is not None and len(examples) >= limit:
            break
    return _non_empty(Dataset(examples, path.stem), path)


def load_csv(
    path: str | Path,
    *,
    inputs: Sequence[str] | None = None,
    required: Sequence[str] = (),
    transform: RowFn | None = None,
    limit: int | None = None,
) -> Dataset:
    """Read a CSV file with a header row; line numbers in errors count the header as line 1."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    examples = []
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        for row in _decoded(reader, path):
            lineno = reader.line_num
            if None in row:
                raise DataError(
                    f"row has more cells than the header's {len(reader.fieldnames or [])}", path=path, line=lineno
                )
            if any(v is None for v in row.values()):
                raise DataError("row has fewer cells than the header", path=path, line=lineno)
            examples.append(_make(row, path, lineno, inputs, required, transform))
            if limit is not None and len(examples) >= limit:
                break
    return _non_empty(Dataset(examples, path.stem), path)


def _utf8_lines(path: Path):
    """(line number, text) of a UTF-8 file; a byte that is not UTF-8 is a `DataError` naming the line."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not UTF-8 text (byte {raw[e.start : e.start + 1]!r} at column {e.start + 1}); "
                    "save the file as UTF-8",
                    path=path,
                    line=lineno,
                ) from None


def _decoded(reader: csv.DictReader, path: Path):
    """The reader's rows, with a decoding failure reported as a `DataError` naming the file and line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as e:
            raise DataError(
                f"not UTF-8 text ({e.reason}); save the file as UTF-8", path=path, line=reader.line_num + 1
            ) from None
        yield row


def _non_empty(dataset: Dataset, path: Path) -> Dataset:
    if len(dataset) == 0:
        raise DataError("no examples in the file (it is empty or holds only a header or blank lines)", path=path)
    return dataset


def load_hf(
    name_or_path: str,
    *,
    split: str,
    config: str | None = None,
    inputs: Sequence[str] | None = None,
    required: Sequence[str] = (),
    transform: RowFn | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load a Hugging Face dataset by hub name (online) or local path (``load_from_disk`` folder or files)."""
    import datasets  # heavy, optional

    path = Path(name_or_path)
    if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(str(path))
        ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        ds = datasets.load_dataset(name_or_path, config, split=split)
    examples = []
    for i, row in enumerate(ds, 1):
        examples.append(_make(dict(row), name_or_path, i, inputs, required, transform))
        if limit is not None and len(examples) >= limit:
            break
    return Dataset(examples, path.name or name_or_path)


def _make(row, path, lineno, inputs, required, transform) -> Example:
    if transform is not None:
        try:
            row = transform(row)
        except (KeyError, ValueError, TypeError) as e:
            raise DataError(f"cannot read row: {type(e).__name__}: {e}", path=path, line=lineno) from None
    missing = [k for k in required if k not in row or row[k] is None]
    if missing:
        raise DataError(f"missing field(s) {', '.join(missing)}; row has: {', '.join(row)}", path=path, line=lineno)
    ex = Example(row)
    if inputs is not None:
        absent = [k for k in inputs if k not in row]
        if absent:
            raise DataError(f"missing input field(s) {', '.join(absent)}", path=path, line=lineno)
        ex = ex.with_inputs(*inputs)
    return ex
