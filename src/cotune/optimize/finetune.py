"""`BootstrapFinetune`: the weight step Θ — fine-tune LoRA on the program's own successful traces.

Run a teacher (the student itself by default) over the training set, keep the runs that pass the metric,
turn every predictor call in them into a chat example, train one LoRA adapter (shared by all predictors,
or one per predictor), and return a copy of the program bound to base model + adapter. A program on an
OpenAI-compatible server gets its adapter loaded into that server (see `cotune.optimize.weights_target`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from cotune.data.example import Example
from cotune.errors import ConfigError, TrainingError
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, emit
from cotune.lm.cache import default_cache_dir
from cotune.optimize.base import Optimizer
from cotune.optimize.predictors import class_fields, copy_predict, named_predictors
from cotune.optimize.rollouts import Trace, collect_traces
from cotune.optimize.traces import (
    balance_classes,
    count_by_predictor,
    coverage,
    failure_detail,
    labeled_traces,
    load_traces,
    passing,
    save_traces,
)
from cotune.optimize.weights_target import LocalWeights, ServedWeights, weights_target
from cotune.params import Fraction, NonNegative, OpenFraction, Positive
from cotune.program.predict import Predict
from cotune.program.program import Program
from cotune.training.config import LoRAConfig, TrainingConfig, key_settings, split_lora_settings
from cotune.training.lora import TrainResult
from cotune.training.sft_data import ChatExample, chat_examples
from cotune.training.trainer import Trainer, resolve_trainer

INITS = ("base", "continue")
MULTITASK_ADAPTER = "adapter"


class BootstrapFinetune(Optimizer):
    """Fine-tune the program's model on its own successful traces (BetterTogether's Θ step).

    Args:
        metric: scores a run, ``(example, prediction) -> float`` in [0, 1].
        lora: the adapter's shape: rank, alpha, dropout, target modules, top layers (`LoRAConfig()` when None).
        training: how it is trained: epochs, learning rate, batch size... (`TrainingConfig()` when None; its
            ``seed`` is replaced by ``seed``). From a mapping (YAML, ``-P``), training keys written under
            ``lora`` as before the split (``lora.epochs``) move here with a `FutureWarning`.
        metric_threshold: a run is kept when its score >= this; None keeps only full marks (score >= 1),
            because a half-right trace teaches half-wrong outputs.
        teacher: the program whose traces are learned (same predictor names); None uses the student.
        num_rollouts: runs per example; rollouts after the first sample at ``rollout_temperature``. With
            constrained decoding every sample is a valid answer, so more rollouts cover more of the
            answers the model can get right (the classes a Θ step can learn).
        rollout_temperature: sampling temperature of the extra rollouts.
        rollout_min_p: min-p of the extra rollouts (0: off): at a high temperature it keeps the free text
            readable while the constrained answer still varies.
        stop_at_first_pass: stop sampling an example once one of its runs passed (the hard examples get
            the remaining rollouts; the easy ones are not learned many times over).
        multitask: one adapter shared by all predictors (the paper's choice); False trains one per predictor.
        init: "base" trains from the base model; "continue" continues from the adapter the student is on.
        output_dir: where traces and adapters go; None: a folder in the cotune cache named by a hash of
            the traces and hyperparameters.
        traces: a traces JSONL file (from an earlier run's ``traces.jsonl``) to train on instead of
            running the teacher.
        fill_with_labels: also train on the gold labels of the training examples that no kept trace covers
            (like `BootstrapFewShot`'s labeled demos; see `labeled_traces` for which predictors can use
            them). Off by default: the paper's Θ learns from the program's own successful traces only,
            which a small model may produce for only some answers (SmolLM2-135M on Iris names one or
            two species), so the adapter learns only those.
        balance_classes: repeat the kept runs of the rarer classes (the values of the program's outputs with a
            fixed set of choices, e.g. Iris's species) until each class is about as frequent as the most common
            one (`cotune.optimize.traces.balance_classes`), and train for proportionally fewer epochs, so the
            number of training steps stays about the same. A small model's own passing runs are skewed to the
            classes it already names (SmolLM2-135M on Iris: 5 or 6 virginica among 38 runs), and an adapter
            trained on them can learn the skew. Needs an output with a fixed set of choices.
        keep_demos: keep few-shot demos in the training prompts (default: the model learns on exactly
            what inference sends). False trains on zero-shot prompts and returns a program without demos,
            so inference still matches training. See `cotune.training.sft_data`.
        num_threads: parallel examples while collecting traces.
        seed: seeds the rollouts and the training (it replaces ``training.seed``).
        base_model: for a student on an OpenAI-compatible server: a local copy of the served base model
            (registry name or folder) to train on; it must be the server's model, and the server must load
            adapters at runtime (vLLM ``--enable-lora`` with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``,
            ``cotune serve --runtime-lora``). The adapter folder (``output_dir``) must be readable by the
            server. Not used for a local student, which trains on its own weights.
        trainer: what trains the adapter: ``"local"`` (cotune's PEFT loop in this process), ``"trl"`` (TRL's
            SFTTrainer in this process; ``cotune.training.TRLTrainer(processes=N)`` for N processes under
            accelerate) or any `cotune.training.trainer.Trainer` object (same examples in, a PEFT adapter with metadata out).

    Learned attributes (after `compile`):
        adapter_path_: the adapter folder (multitask), or a dict predictor name → folder (for a served
            student too; its program then sends requests to the adapter's served name, ``tuned.lm.adapter``).
        train_result_: the `TrainResult` (multitask), or a dict predictor name → `TrainResult`.
        traces_path_: the traces file used. n_traces_: runs collected (or loaded); n_passed_: runs kept.
        n_labeled_: traces written from labels (``fill_with_labels``; also in the traces file).
        passed_by_predictor_: kept calls per predictor name.
        balance_: with ``balance_classes``: the kept runs per class, each class's repeats and the epochs trained.
        coverage_: training examples covered by kept runs, overall and per class of each choice-typed
            output that the examples label (see `cotune.optimize.traces.coverage`).

    Example (needs the real model, so not run as a doctest):
        >>> import cotune
        >>> from cotune.tasks import load_task
        >>> task = load_task("iris")
        >>> program = task.program().bind(cotune.lm.load("smollm2-135m"))  # doctest: +SKIP
        >>> tuner = BootstrapFinetune(task.metric, training=TrainingConfig(epochs=3), output_dir="runs/iris-ft")
        >>> tuned = tuner.compile(program, trainset=task.train)  # doctest: +SKIP
        >>> tuned.lm.adapter, tuner.passed_by_predictor_  # doctest: +SKIP
        ('runs/iris-ft/adapter', {'classify': 31})
    """

    selects_on_valset = False  # nothing is chosen by validation score: it gets the whole trainset

    def __init__(
        self,
        metric: Metric,
        *,
        lora: LoRAConfig | None = None,
        training: TrainingConfig | None = None,
        metric_threshold: Fraction | None = None,
        teacher: Program | None = None,
        num_rollouts: Positive = 1,
        rollout_temperature: NonNegative = 0.7,
        rollout_min_p: OpenFraction = 0.0,
        stop_at_first_pass: bool = False,
        multitask: bool = True,
        init: Literal[INITS] = "base",
        output_dir: str | Path | None = None,
        traces: str | Path | None = None,
        fill_with_labels: bool = False,
        balance_classes: bool = False,
        keep_demos: bool = True,
        num_threads: Positive = 8,
        seed: int = 0,
        base_model: str | Path | None = None,
        trainer: Literal["local", "trl"] | Trainer = "local",
    ):
        self.metric = metric
        self.lora = lora
        self.training = training
        self.metric_threshold = metric_threshold
        self.teacher = teacher
        self.num_rollouts = num_rollouts
        self.rollout_temperature = rollout_temperature
        self.rollout_min_p = rollout_min_p
        self.stop_at_first_pass = stop_at_first_pass
        self.multitask = multitask
        self.init = init
        self.output_dir = output_dir
        self.traces = traces
        self.fill_with_labels = fill_with_labels
        self.balance_classes = balance_classes
        self.keep_demos = keep_demos
        self.num_threads = num_threads
        self.seed = seed
        self.base_model = base_model
        self.trainer = trainer

    def compile(
        self,
        program: Program | Predict,
        *,
        trainset: Sequence[Example],
        valset: Sequence[Example] | None = None,
        events: EventSink | None = None,
    ) -> Program | Predict:
        """Return a copy of ``program`` bound to its base model + a newly trained adapter.

        ``valset`` is not used: nothing is selected here (BetterTogether evaluates after the step).

        Raises:
            ConfigError: a bad hyperparameter; the student has no local weights and no server that loads
                adapters at runtime; a served student without ``base_model``, or whose server runs another model.
            TrainingError: no trace passed the metric, or training failed (the cause is chained).
        """
        lora, training = self.lora or LoRAConfig(), (self.training or TrainingConfig()).replace(seed=self.seed)
        resolve_trainer(self.trainer)  # an unknown trainer fails before any trace is collected
        self.check_program(program)
        student = program.deepcopy() if isinstance(program, Program) else copy_predict(program)
        named = named_predictors(student)
        classes = class_fields(named.values())
        groups = {MULTITASK_ADAPTER: list(named)} if self.multitask else {n: [n] for n in named}
        bases = {g: self._student_lm(names, named) for g, names in groups.items()}
        # Before any trace or training step: a server that cannot take the adapter must fail now.
        targets = {
            g: weights_target(lm, base_model=self.base_model, init=self.init, events=events) for g, lm in bases.items()
        }

        traces = self._traces(program, trainset, events)
        passed = passing(traces, self.metric_threshold)
        kept = [t for t in passed if t.source == "run"]
        self.n_traces_, self.n_passed_, self.n_labeled_ = len(traces), len(kept), 0
        if self.fill_with_labels:
            filled = self._fill(program, trainset, passed, kept, events)
            self.n_labeled_, kept = len(filled), kept + filled
            if self.traces is None:  # new ones: saved with the runs
                traces = traces + filled
        self.passed_by_predictor_ = count_by_predictor(kept, named)
        runs = [t for t in kept if t.source == "run"]
        self.coverage_ = coverage(runs, trainset, classes) if self.traces is None else None
        emit(
            events,
            "finetune.traces",
            total=len(traces),
            passed=len(kept),
            by_predictor=self.passed_by_predictor_,
            coverage=self.coverage_,
        )
        if not kept:
            raise TrainingError(
                f"0 of {len(traces)} traces passed the metric; try a prompt step first or lower the threshold"
                + failure_detail(traces, self.metric_threshold)
            )

        root = self._root(traces, lora, training, bases)
        self.traces_path_ = str(root / "traces.jsonl")
        if not self.traces or Path(self.traces).resolve() != Path(self.traces_path_).resolve():
            save_traces(self.traces_path_, traces)
        repeats = self._balance(kept, classes, events)
        steps = [t.steps for t in kept]
        paths: dict[str, str] = {}
        results: dict[str, TrainResult] = {}
        for group, names in groups.items():
            only = None if self.multitask else names
            examples = chat_examples(steps, keep_demos=self.keep_demos, predictors=only, repeats=repeats)
            if not examples:  # one adapter per predictor, and this one has no successful call
                emit(events, "finetune.skip", predictor=group, reason="no successful calls in the kept traces")
                continue
            epochs = self._epochs(group, examples, training)
            out = root / _slug(group)
            results[group] = self._train(examples, targets[group], out, lora, training.replace(epochs=epochs), events)
            paths[group] = results[group].adapter_path
            tuned = targets[group].bind(paths[group], events)
            for name in names:
                named[name].bind(tuned)
                if not self.keep_demos:
                    named[name].demos, named[name].demo_selector = [], None
        if not results:
            seen = sorted({s.predictor for t in kept for s in t.steps})
            raise TrainingError(
                f"{len(kept)} traces passed, but none holds a call of the student's predictors {sorted(named)} "
                f"(the traces have: {', '.join(seen) or 'no calls'}); the teacher must name its predictors alike"
            )
        self.adapter_path_ = paths[MULTITASK_ADAPTER] if self.multitask else paths
        self.train_result_ = results[MULTITASK_ADAPTER] if self.multitask else results
        return student

    @classmethod
    def upgrade_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Training keys under ``lora`` (before `TrainingConfig` was split from `LoRAConfig`) move to ``training``."""
        return split_lora_settings(params)

    def check_program(self, program: Program | Predict) -> None:
        """``balance_classes`` needs an output with a fixed set of choices to balance."""
        named = named_predictors(program)
        if self.balance_classes and not class_fields(named.values()):
            outputs = "; ".join(f"{n}: {', '.join(f.name for f in p.signature.outputs)}" for n, p in named.items())
            raise ConfigError(
                "balance_classes needs an output with a fixed set of choices (a Literal or bool field), but no "
                f"predictor's output has one ({outputs}); leave balance_classes off"
            )

    # -- steps ----------------------------------------------------------------------------------------
    def _student_lm(self, names: list[str], named: dict[str, Predict]) -> Any:
        """The LM a group trains for: one base model (and, for init="continue", one adapter) per group."""
        lms = [named[n].lm for n in names]
        unbound = [n for n, lm in zip(names, lms, strict=True) if lm is None]
        if unbound:
            raise ConfigError(f"predictor(s) {', '.join(unbound)} are not bound to an LM; call program.bind(lm) first")
        if len({lm.model for lm in lms}) > 1:
            raise ConfigError(
                f"multitask fine-tuning needs one base model, but predictors use {sorted({lm.model for lm in lms})}; "
                "use multitask=False"
            )
        if self.init == "continue" and len({lm.adapter for lm in lms}) > 1:
            raise ConfigError(
                "init='continue' with multitask=True needs every predictor on the same adapter, but they use "
                f"{sorted(str(lm.adapter) for lm in lms)}; use init='base' or multitask=False"
            )
        return lms[0]

    def _traces(self, program: Any, trainset: Sequence[Example], events: EventSink | None) -> list[Trace]:
        if self.traces is not None:
            traces = load_traces(self.traces)
            emit(events, "finetune.traces_loaded", path=str(self.traces), n=len(traces))
            return traces
        if not trainset:
            raise ConfigError("BootstrapFinetune needs a non-empty trainset (or traces=FILE)")
        return collect_traces(
            self.teacher if self.teacher is not None else program,
            trainset,
            self.metric,
            num_rollouts=self.num_rollouts,
            temperature=self.rollout_temperature,
            num_threads=self.num_threads,
            seed=self.seed,
            stop_at_first_pass=self.stop_at_first_pass,
            threshold=self.metric_threshold,
            min_p=self.rollout_min_p,
            events=events,
        )

    def _balance(self, kept: list[Trace], classes: list[str], events: EventSink | None) -> list[int] | None:
        """With ``balance_classes``: how many times to train on each kept run (None: once each)."""
        self.balance_ = None
        if not self.balance_classes:
            return None
        repeats, self.balance_ = balance_classes(kept, classes)
        emit(events, "finetune.balance", **self.balance_)
        self.balance_["epochs"] = {}
        return repeats

    def _epochs(self, group: str, examples: list[ChatExample], training: TrainingConfig) -> int:
        """Balanced, the repeated examples train for proportionally fewer epochs: about the same steps."""
        if self.balance_ is None:
            return training.epochs
        epochs = max(1, round(training.epochs * len(set(examples)) / len(examples)))
        self.balance_["epochs"][group] = epochs
        return epochs

    def _fill(self, program, trainset, passed, kept, events) -> list[Trace]:
        """Label traces for the training examples no kept run covers; with a traces file, the file's own."""
        if self.traces is not None:  # the file's own label traces are used as they are
            return [t for t in passed if t.source == "labels"]
        covered = {t.example_index for t in kept}
        filled = labeled_traces(program, trainset, skip=covered)
        if not filled and len(covered) < len(trainset):
            emit(
                events,
                "finetune.labels_unused",
                reason="no predictor takes only the examples' inputs and outputs only their labels",
            )
        emit(events, "finetune.labels", covered_by_runs=len(covered), filled=len(filled))
        return filled

    def _root(self, traces: list[Trace], lora: LoRAConfig, training: TrainingConfig, bases: dict[str, Any]) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        identity = (
            {
                "traces": [t.key() for t in traces],
                "threshold": self.metric_threshold,
                "lora": key_settings(lora, training),  # both, as one config held them: earlier adapters are found again
                "bases": {g: [lm.model, lm.adapter_id if self.init == "continue" else None] for g, lm in bases.items()},
                "multitask": self.multitask,
                "keep_demos": self.keep_demos,
            }
            | ({"balance_classes": True} if self.balance_classes else {})
            | ({"trainer": resolve_trainer(self.trainer).name} if self.trainer != "local" else {})
        )
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
        model = _slug(next(iter(bases.values())).model)
        return default_cache_dir() / "adapters" / f"{model}-{digest}"

    def _train(
        self,
        examples: list[ChatExample],
        target: LocalWeights | ServedWeights,
        out: Path,
        lora: LoRAConfig,
        training: TrainingConfig,
        events: EventSink | None,
    ) -> TrainResult:
        init_adapter = target.lm.adapter if self.init == "continue" else None
        emit(events, "finetune.group", adapter=str(out), examples=len(examples), init_adapter=init_adapter)
        trainer = resolve_trainer(self.trainer)
        # On the model's own compute thread: a second thread computing with torch would leave two OpenMP teams
        # in the process, and every generation after the training slower (`LM.run_compute`).
        return target.lm.run_compute(
            lambda: trainer.train(
                examples,
                base_model_path=target.path,
                output_dir=out,
                lora=lora,
                training=training,
                base_model=target.name,
                init_adapter=init_adapter,
                events=events,
            )
        )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.")[-80:] or "adapter"
