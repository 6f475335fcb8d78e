"""A saved program and the folder around it move together: `Program.save` records an adapter folder relative to
the file (as run directories always did), and every reader resolves it from the file's new place."""

from __future__ import annotations

import json
import shutil

from cotune.lm import FakeLM
from cotune.program import Predict, Program
from cotune.program.saved import bind_saved, copy_program, read_program_state


class QA(Program):
    def __init__(self):
        self.qa = Predict("question -> answer")

    def forward(self, question):
        return self.qa(question=question)


def test_program_save_records_the_adapter_relative_to_the_file_and_survives_a_move(tmp_path):
    run = tmp_path / "run"
    (run / "w" / "adapter").mkdir(parents=True)
    qa = QA().bind(FakeLM(["Answer: 4"], adapter=str(run / "w" / "adapter")))
    path = qa.save(run / "w" / "program.json", task="demo")
    assert json.loads(path.read_text())["lm"]["adapter"] == "adapter"
    moved = tmp_path / "elsewhere"
    shutil.move(run, moved)
    state = read_program_state(moved / "w" / "program.json")
    assert state["lm"]["adapter"] == str(moved / "w" / "adapter")
    assert state["metadata"] == {"task": "demo"}
    fresh = bind_saved(QA().load_state(state), state, FakeLM(["Answer: 4"]))
    assert fresh.qa.lm.adapter == str(moved / "w" / "adapter")


def test_a_copied_program_file_still_points_at_the_same_adapter(tmp_path):
    (tmp_path / "run" / "w" / "adapter").mkdir(parents=True)
    qa = QA().bind(FakeLM(["Answer: 4"], adapter=str(tmp_path / "run" / "w" / "adapter")))
    source = qa.save(tmp_path / "run" / "w" / "program.json")
    target = copy_program(source, tmp_path / "run" / "best-program.json")
    assert json.loads(target.read_text())["lm"]["adapter"] == "w/adapter"
    assert read_program_state(target)["lm"]["adapter"] == str(tmp_path / "run" / "w" / "adapter")
