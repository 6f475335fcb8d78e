"""Data: examples, datasets, loaders."""

from cotune.data.dataset import Dataset
from cotune.data.example import Example
from cotune.data.loaders import load_csv, load_hf, load_jsonl

__all__ = ["Dataset", "Example", "load_csv", "load_hf", "load_jsonl"]
