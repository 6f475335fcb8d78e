"""Finding 3 (issue 12): an LM outage during a run fails the step; it is never kept as a score."""

from collections import Counter

from cotune.errors import LMConnectionError
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.runner import Runner
from cotune.lm import FakeLM

from .fakes import FakeTask, factory, fake_lm


def config(tmp_path):
    return ExperimentConfig(task="fake", strategies=["zero-shot", "p"], out_dir=str(tmp_path), name="run", threads=2)


def down_for_test_questions(down: set[str]):
    healthy = fake_lm()

    def respond(messages, adapter=None):
        q = messages[-1]["content"].split(": ", 1)[1]
        if q in down and "[p]" in messages[0]["content"]:
            raise LMConnectionError("server at http://127.0.0.1:9/v1 is not reachable after 5 attempts")
        return healthy._fn(messages, adapter=adapter)

    return FakeLM(respond)


def test_an_outage_fails_the_node_and_resume_scores_it_truly(tmp_path):
    cfg = config(tmp_path)
    reference = Runner(
        config(tmp_path / "ref"), lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(Counter())
    ).start()
    truth = {n["strategy"]: n["test"]["score"] for n in reference.nodes()}

    # 3 of the 6 test questions (14..19) hit an unreachable server while the "p" node is evaluated
    run = Runner(
        cfg, lm=down_for_test_questions({"15", "17", "19"}), task=FakeTask(), optimizer_factory=factory(Counter())
    ).start()
    results = run.results()
    assert [n["strategy"] for n in results["nodes"]] == ["zero-shot"]  # "p" was not kept with a wrong score
    (failure,) = results["failures"]
    assert failure["strategy"] == "p" and failure["kind"] == "infrastructure" and "not reachable" in failure["error"]
    assert run.finished(0, "p") is None

    _, again = Runner.resume(run.path, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(Counter()))
    scores = {n["strategy"]: n["test"]["score"] for n in again.nodes()}
    assert scores == truth and again.results()["failures"] == []
