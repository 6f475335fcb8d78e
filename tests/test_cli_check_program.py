"""A setting the task's program cannot take fails before the model loads: `balance_classes` on GSM8K, whose
answer is free text, through `cotune finetune` and `cotune run` (both name a model that does not exist, so a
model load would fail with another message)."""

import json
import subprocess
import sys

import pytest

MESSAGE = "balance_classes needs an output with a fixed set of choices (a Literal or bool field)"


def cotune(*args):
    return subprocess.run([sys.executable, "-c", "from cotune.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def gsm8k(tmp_path):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    for name, n in (("train.jsonl", 500), ("test.jsonl", 500)):
        rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(n)]
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["finetune", "--balance-classes"],
        ["run", "--set", "weights.balance_classes=true", "--strategies", "zero-shot,p,w"],
    ],
)
def test_balance_classes_on_a_free_text_answer_fails_before_the_model_loads(gsm8k, tmp_path, command):
    where = ["--out", str(tmp_path / "ft")] if command[0] == "finetune" else ["--out-dir", str(tmp_path / "runs")]
    result = cotune(*command, "--task", "gsm8k", "--data-dir", str(gsm8k), "--model", "no-such-model", *where)
    assert result.returncode == 2, result.stderr
    text = " ".join(result.stderr.split())
    assert MESSAGE in text and "(solve: reasoning, answer)" in text, result.stderr
    assert "no-such-model" not in text and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # no run directory made for a run that cannot go
