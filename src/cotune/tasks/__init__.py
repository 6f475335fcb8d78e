"""Built-in tasks (Iris, GSM8K, HotPotQA, BIG-Bench Hard): data splits, the paper's program and metrics.

Example:
    >>> from cotune.tasks import load_task, task_names
    >>> {"gsm8k", "hotpotqa", "iris"} <= set(task_names())
    True
    >>> task = load_task("iris", seed=0)
    >>> [name for name, _ in task.program().named_predictors()]
    ['classify']
"""

from cotune.tasks.base import Task, TaskInfo
from cotune.tasks.registry import list_tasks, load_task, task_info, task_names

# `cotune.tasks.load(...)` reads well next to `cotune.lm.load(...)`.
load = load_task

__all__ = ["Task", "TaskInfo", "list_tasks", "load", "load_task", "task_info", "task_names"]
