from __future__ import annotations

import subprocess
import sys
import types

import pytest

from cotune.data import Dataset, Example
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.tasks import Task, TaskInfo, list_tasks, load_task, registry, task_info, task_names
from cotune.tasks.base import resolve_sizes

MINE = ["gsm8k", "hotpotqa", "iris"]  # other task modules (bbh) register beside these


def test_task_names_are_the_builtins_sorted():
    names = task_names()
    assert names == sorted(registry.BUILTIN) and set(MINE) <= set(names)


@pytest.mark.parametrize("name", ["irs", "IRIS", "iris:setosa", "", "gsm8k:main"])
def test_unknown_task_names_the_valid_choices(name):
    with pytest.raises(UnknownChoiceError) as info:
        load_task(name)
    assert info.value.kind == "task" and info.value.choices == task_names()


def test_unknown_task_message_is_exact(monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN", {k: v for k, v in registry.BUILTIN.items() if k in MINE})
    with pytest.raises(UnknownChoiceError, match=r"^unknown task 'irs'; choose one of: gsm8k, hotpotqa, iris$"):
        load_task("irs")


def test_list_tasks_rows_describe_each_task_without_data():
    rows = {row["name"]: row for row in list_tasks()}
    assert sorted(rows) == task_names()
    for row in rows.values():
        assert {"description", "splits", "data", "sizes", "inputs", "outputs", "metric", "needs_data_dir"} <= set(row)
        assert row["metric"] in row["metrics"]
    assert rows["iris"]["needs_data_dir"] is False and rows["iris"]["splits"] == "50 train / 50 dev / 50 test"
    assert rows["gsm8k"]["needs_data_dir"] is True and "hf:openai/gsm8k" in rows["gsm8k"]["data"]
    assert rows["hotpotqa"]["metrics"] == ["em", "f1", "recall"] and rows["hotpotqa"]["hf_name"] is None


def test_listing_and_importing_tasks_stays_light():
    code = (
        "import sys, cotune.tasks as t; t.list_tasks(); t.task_info('hotpotqa');"
        "print(','.join(m for m in ('sklearn', 'bm25s', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_task_info_is_static():
    info = task_info("gsm8k")
    assert isinstance(info, TaskInfo) and info.inputs == ("question",) and info.sizes["test"] == 500


def _toy_task() -> Task:
    ds = Dataset([Example(q=str(i), a=str(i)).with_inputs("q") for i in range(3)])
    return Task("toy", "toy task", ds[:1], ds[1:2], ds, lambda ex, pred: 1.0, lambda: None)


@pytest.mark.parametrize("split,size", [("train", 1), ("dev", 1), ("test", 3)])
def test_task_split_by_name(split, size):
    assert len(_toy_task().split(split)) == size


@pytest.mark.parametrize("name", ["val", "validation", "Train", ""])
def test_task_unknown_split_lists_choices(name):
    with pytest.raises(UnknownChoiceError, match=rf"unknown split '{name}'; choose one of: dev, test, train"):
        _toy_task().split(name)


def test_task_info_reports_actual_sizes_and_fields():
    info = _toy_task().info()
    assert info["sizes"] == {"train": 1, "dev": 1, "test": 3} and info["splits"] == "1 train / 1 dev / 3 test"
    assert info["fields"] == ["a", "q"] and info["name"] == "toy"


@pytest.mark.parametrize(
    "given,error",
    [
        ({"val": 3}, UnknownChoiceError),
        ({"train": -1}, ConfigError),
        ({"dev": 2.5}, ConfigError),
        ({"test": True}, ConfigError),
    ],
)
def test_bad_sizes_are_refused(given, error):
    with pytest.raises(error):
        resolve_sizes("toy", {"train": 1, "dev": 1, "test": 1}, given)


def test_none_size_keeps_the_default():
    assert resolve_sizes("toy", {"train": 5, "dev": 1}, {"train": None, "dev": 3}) == {"train": 5, "dev": 3}


def test_family_members_are_loaded_by_family_colon_subtask(monkeypatch):
    """The extension point BBH uses: a family module receives the subtask name."""
    calls = []
    module = types.ModuleType("cotune_test_family")
    module.INFO = TaskInfo(
        "fam", "a family", ("input",), ("target",), {"train": 1, "dev": 1, "test": 1}, "em", family=True
    )

    def load(*, subtask, data_dir, seed, **sizes):
        calls.append((subtask, data_dir, seed, sizes))
        return "loaded"

    module.load = load
    monkeypatch.setitem(sys.modules, "cotune_test_family", module)
    monkeypatch.setitem(registry.BUILTIN, "fam", "cotune_test_family")

    assert load_task("fam:dates", data_dir="d", seed=3, train=2) == "loaded"
    assert load_task("fam") == "loaded"
    assert calls == [("dates", "d", 3, {"train": 2}), (None, None, 0, {})]
    assert "fam" in task_names()
