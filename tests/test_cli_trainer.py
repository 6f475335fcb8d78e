"""`cotune finetune --trainer/--processes`: bad values are one clear line, before any model loads."""

import subprocess
import sys

import pytest

WITHOUT_TRL = (
    "import importlib.util as u; find = u.find_spec; "
    "u.find_spec = lambda name, *a: None if name == 'trl' else find(name, *a); "
)


def cotune(*args, prelude=""):
    return subprocess.run([sys.executable, "-c", prelude + "from cotune.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "args, prelude, message",
    [
        (["--trainer", "deepspeed"], "", "unknown trainer 'deepspeed'; choose one of: local, trl"),
        (["--trainer", "trl", "--processes", "0"], "", "processes must be an integer >= 1, got 0"),
        (["--processes", "2"], "", "trainer 'local' trains in one process; processes=2 needs trainer: trl"),
        (["--trainer", "trl"], WITHOUT_TRL, "trainer 'trl' needs the trl package: pip install 'cotune[trl]'"),
    ],
)
def test_bad_trainer_flags_are_one_clear_line(tmp_path, args, prelude, message):
    result = cotune("finetune", "--out", str(tmp_path / "ft"), *args, prelude=prelude)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
