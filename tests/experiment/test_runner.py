import json
from collections import Counter

import pytest

from cotune.errors import ConfigError
from cotune.experiment.config import ExperimentConfig, WeightStep
from cotune.experiment.rundir import RunDir
from cotune.experiment.runner import Runner
from cotune.optimize.strategy import node_prefixes, parse_strategies, parse_strategy, strategy_name

from .fakes import FakeTask, factory, fake_lm

ALL = ["zero-shot", "p", "w", "p-w", "w-p", "p-w-p"]


def config(tmp_path, **kw):
    return ExperimentConfig(
        task="fake", strategies=kw.pop("strategies", ALL), out_dir=str(tmp_path), name="run", threads=2, **kw
    )


def runner(cfg, log, **kw):
    return Runner(cfg, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log, **kw))


@pytest.mark.parametrize(
    "text, steps",
    [
        ("p", ("p",)),
        ("p-w-p", ("p", "w", "p")),
        ("p,w,p", ("p", "w", "p")),
        ("zero-shot", ()),
        ("P → W", ("p", "w")),
        (["prompt", "weights"], ("p", "w")),
    ],
)
def test_parse_strategy(text, steps):
    assert parse_strategy(text) == steps


def test_bad_strategy_lists_valid_letters():
    with pytest.raises(ConfigError, match=r"unknown step 'x'.*p \(prompt\), w \(weights\)"):
        parse_strategy("p-x")


def test_prefixes_are_shared():
    prefixes = node_prefixes(parse_strategies(ALL))
    assert [strategy_name(p) for p in prefixes] == ALL


def test_shared_prefixes_are_computed_once_per_seed(tmp_path):
    log = Counter()
    run = runner(config(tmp_path, seeds=[0, 1]), log).start()
    # per seed: p, w-p and p-w-p each run one Π; w and p-w one Θ
    assert log == Counter({"p": 3 * 2, "w": 2 * 2})
    results = run.results()
    assert [r["strategy"] for r in results["table"]] == ALL
    assert len(results["nodes"]) == 12
    by = {r["strategy"]: r for r in results["table"]}
    assert by["zero-shot"]["test_mean"] == 0.0
    assert by["p-w"]["test_mean"] > by["p"]["test_mean"] > 0
    assert by["p-w"]["train_seconds"] == 1.5 and by["p-w-p"]["train_seconds"] == 1.5


def test_run_directory_contents(tmp_path):
    run = runner(config(tmp_path, strategies=["p-w"]), Counter()).start()
    node = run.node_dir(0, "p-w")
    for name in ("program.json", "eval-dev.json", "eval-test.json", "node.json", "adapter/adapter_model.safetensors"):
        assert (node / name).exists(), name
    events = [e["event"] for e in run.events()]
    assert events[0] == "run.start" and events[-1] == "run.done"
    assert events.count("node.done") == 3
    assert list(run.events())[0]["node_kinds"] == ["eval", "p", "w"]  # what each node's last step is, for the ETA


def _interrupt_at(event_name: str, k: int):
    count = Counter()

    def sink(e):
        if e.name == event_name:
            count[event_name] += 1
            if count[event_name] == k:
                raise KeyboardInterrupt(f"killed at {event_name} #{k}")

    return sink


@pytest.mark.parametrize("where", ["node.start", "node.done", "progress.start"])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_resume_loses_nothing_and_repeats_nothing(tmp_path, where, k):
    cfg = config(tmp_path)
    reference = runner(config(tmp_path / "ref"), Counter()).start().results()

    log = Counter()
    first = Runner(cfg, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log), events=_interrupt_at(where, k))
    with pytest.raises(KeyboardInterrupt):
        first.start()
    run_dir = tmp_path / "run"
    finished_before = {n["strategy"] for n in RunDir.open(run_dir).nodes()}

    _, run = Runner.resume(run_dir, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log))
    results = run.results()
    assert {n["strategy"] for n in results["nodes"]} == set(ALL)
    # finished nodes were not redone: a node's optimizer ran at most once more than in a clean run,
    # and only for the node that was cut off (not finished)
    extra = log - Counter({"p": 3, "w": 2})
    assert sum(extra.values()) <= 1
    skipped = [e for e in run.events() if e["event"] == "node.skipped"]
    assert {e["strategy"] for e in skipped} == finished_before
    assert [r["test_mean"] for r in results["table"]] == [r["test_mean"] for r in reference["table"]]


def test_resume_inside_a_prompt_step(tmp_path):
    log = Counter()
    with pytest.raises(KeyboardInterrupt):
        runner(config(tmp_path), log, fail_on_prompt=2).start()
    assert log["p"] == 2
    Runner.resume(tmp_path / "run", lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log))
    assert log["p"] == 2 + 2  # the cut-off Π step and the one after it; the first Π is not redone


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        Runner.resume(tmp_path)


def test_config_errors_are_reported_together():
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"threads": 0, "bogus": 1, "strategies": ["p-q"], "prompt": {"optimizer": "zz"}})
    message = str(info.value)
    for part in ("threads", "bogus: unknown field", "unknown step 'q'", "prompt.optimizer"):
        assert part in message


def test_config_yaml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("task: iris\nseeds: [0, 1, 2]\nstrategies: [p, p-w-p]\nprompt:\n  num_candidates: 4\n")
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.seeds == [0, 1, 2] and cfg.prompt.num_candidates == 4 and cfg.strategies == ["p", "p-w-p"]


@pytest.mark.parametrize("seeds, expected", [(3, [0, 1, 2]), (1, [0]), ([4, 7], [4, 7])])
def test_seeds_are_a_count_as_on_the_command_line_or_a_list(seeds, expected):
    assert ExperimentConfig.from_dict({"seeds": seeds}).seeds == expected


def test_a_seed_count_below_one_is_refused():
    with pytest.raises(ConfigError, match="seeds: a count must be >= 1, got 0"):
        ExperimentConfig.from_dict({"seeds": 0})


def test_a_failed_weight_step_skips_its_descendants_and_keeps_the_rest(tmp_path):
    from cotune.errors import TrainingError

    from .fakes import CountingPrompt

    class NoTraces(CountingPrompt):
        selects_on_valset = False

        def compile(self, program, *, trainset, valset=None, events=None):
            raise TrainingError("0 of 10 traces passed the metric; try a prompt step first or lower the threshold")

    def make(kind, seed, node):
        return CountingPrompt(Counter()) if kind == "p" else NoTraces()

    run = Runner(config(tmp_path), lm=fake_lm(), task=FakeTask(), optimizer_factory=make).start()
    results = run.results()
    assert [r["strategy"] for r in results["table"]] == ["zero-shot", "p"]
    failed = {f["strategy"]: f["error"] for f in results["failures"]}
    assert set(failed) == {"w", "p-w", "w-p", "p-w-p"}
    assert "0 of 10 traces" in failed["w"] and failed["w-p"] == "skipped: w failed"
    assert [e["strategy"] for e in run.events() if e["event"] == "node.failed"] == ["w", "p-w"]

    # a resumed run tries the failed steps again (here with a working Θ)
    log = Counter()
    _, again = Runner.resume(run.path, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log))
    assert [r["strategy"] for r in again.results()["table"]] == ALL
    assert log == Counter({"p": 2, "w": 2})  # p itself was finished; w-p and p-w-p are new


def test_every_run_goes_through_better_together(tmp_path, monkeypatch):
    import cotune as ct

    calls = Counter()
    real_tree, real_step = ct.BetterTogether.run_tree, ct.BetterTogether._step

    def run_tree(self, *args, **kwargs):
        calls["run_tree"] += 1
        return real_tree(self, *args, **kwargs)

    def step(self, *args, **kwargs):
        calls["step"] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(ct.BetterTogether, "run_tree", run_tree)
    monkeypatch.setattr(ct.BetterTogether, "_step", step)
    runner(config(tmp_path, seeds=[0, 1]), Counter()).start()
    assert calls == Counter({"run_tree": 2, "step": 12})  # one tree per seed; each of its 6 nodes a step


def test_the_default_factory_runs_registered_prompt_optimizers_end_to_end(tmp_path):
    for name, params in (("bfrs", {"num_candidates": 3}), ("bootstrap", {"num_rollouts": 2})):
        cfg = ExperimentConfig.from_dict({"task": "fake", "strategies": ["p"], "out_dir": str(tmp_path), "name": name,
                                          "threads": 2, "prompt": {"optimizer": name, "params": params}})  # fmt: skip
        run = Runner(cfg, lm=fake_lm(), task=FakeTask()).start()
        node = next(n for n in run.results()["nodes"] if n["strategy"] == "p")
        assert node["kind"] == "p" and node["info"], name  # the step's learned attributes were recorded


@pytest.mark.parametrize(("right_with_p", "best"), [({"11"}, "zero-shot"), ({"10", "11", "12", "13"}, "p")])
def test_the_best_program_beats_zero_shot_beyond_dev_noise(tmp_path, right_with_p, best):
    from cotune.lm import FakeLM

    def respond(messages, adapter=None):
        q = messages[-1]["content"].split(": ", 1)[1]
        return f"Answer: {q}" if "[p]" in messages[0]["content"] and q in right_with_p else "Answer: ?"

    cfg = config(tmp_path, strategies=["zero-shot", "p"])
    run = Runner(cfg, lm=FakeLM(respond), task=FakeTask(), optimizer_factory=factory(Counter())).start()
    chosen = run.results()["best"]
    assert chosen["strategy"] == best and chosen["selection"]["best_by_dev"] == "p"
    assert chosen["selection"]["wins"] == len(right_with_p) and (run.path / "best-program.json").exists()


def test_a_prompt_steps_handoff_is_saved_and_a_resumed_weight_step_builds_on_it(tmp_path):
    from .fakes import CountingPrompt, CountingWeights

    class KeepStart(CountingPrompt):
        def compile(self, program, *, trainset, valset=None, events=None):
            self.handoff_program_ = super().compile(program, trainset=trainset, valset=valset)
            return program.deepcopy()

    def make(kind, seed, node):
        return KeepStart(Counter()) if kind == "p" else CountingWeights(Counter(), str(node / "adapter"))

    cfg = config(tmp_path, strategies=["p"])
    run = Runner(cfg, lm=fake_lm(), task=FakeTask(), optimizer_factory=make).start()
    node = run.path / "seed-0" / "p"
    assert "[p]" not in (node / "program.json").read_text() and "[p]" in (node / "handoff-program.json").read_text()
    assert run.finished(0, "p")["handoff"] == "handoff-program.json"

    # the same run directory, now with p-w: the restored Π node hands its candidate to the new Θ node
    config_file = run.path / "config.json"
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(saved | {"strategies": ["p", "p-w"]}))
    _, resumed = Runner.resume(run.path, lm=fake_lm(), task=FakeTask(), optimizer_factory=make)
    assert "[p]" in (resumed.path / "seed-0" / "p-w" / "program.json").read_text()


def test_a_setting_the_program_cannot_take_stops_the_run_before_any_node(tmp_path):
    """`balance_classes` on a program without a choice-typed output: refused by `Runner.check` (which `run` calls)
    before the zero-shot and Π nodes spend their model calls, with no node written."""
    cfg = config(tmp_path, strategies=["zero-shot", "p", "p-w"], weights=WeightStep(balance_classes=True))
    lm = fake_lm()
    with pytest.raises(ConfigError, match="balance_classes needs an output with a fixed set of choices"):
        Runner(cfg, lm=lm, task=FakeTask()).start()
    assert lm.calls == []
    assert not any((tmp_path / "run").glob("seed-*"))
