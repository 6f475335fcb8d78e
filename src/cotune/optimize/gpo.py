"""GPO: gradient-inspired instruction optimization (Tang et al., AAAI 2025, arXiv 2402.17564).

An optimizer LM updates a predictor's instruction the way a gradient optimizer updates weights:

- **update direction**: the past instructions (with their scores) most relevant to the current one,
  retrieved from the optimization trajectory by embedding similarity. Ablations: the most recent ones or
  the best-scoring ones (both OPRO-style), or none.
- **update method**: the optimizer LM *generates* a new instruction from the direction and a few task
  examples (ablation: *edits* the current one), changing at most N words.
- **learning rate**: N follows a cosine decay from ``budget_start`` to ``budget_end`` words over the steps
  (ablations: fixed, or unlimited). The budget is enforced: every candidate's word-level edit distance to
  the current instruction is measured; an over-budget candidate is retried with a reminder and a new
  rollout id, then rejected. No accepted instruction ever exceeds its step's budget.

Choices where the paper leaves room (documented so results can be read correctly):

- All candidates are scored on ONE seeded mini-batch of the valset, drawn once per `compile`, as OPRO and
  GPO score on a fixed held-out subset; the scores in the trajectory are therefore comparable across steps
  (which the optimizer LM relies on when it reads them).
- Each step moves to its best candidate even when it scores below the current instruction, as a gradient
  step is always taken; the trajectory keeps the better instructions visible to later steps.
- The result uses the best instruction seen: the initial instruction and the ``num_confirm`` best by
  mini-batch score are evaluated on the full valset and the highest wins (ties keep the earlier one, the
  initial instruction first), so a lucky mini-batch score alone never changes the program.
- Multi-predictor programs: predictors are optimized in turn (``named_predictors`` order), each with the
  previously optimized ones fixed at their chosen instructions.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from cotune.data.example import Example
from cotune.errors import ConfigError, ParseError, UnknownChoiceError
from cotune.evaluate.evaluate import evaluate
from cotune.events import Progress, emit
from cotune.lm import registry
from cotune.lm.base import LM
from cotune.optimize import gpo_prompts as prompts
from cotune.optimize.base import Events, Examples, Optimizer, require_valset
from cotune.optimize.edit import BUDGET_KINDS, normalize_instruction, word_edit_distance, words
from cotune.optimize.edit import edit_budget as budget_at
from cotune.params import Count, NonNegative, Positive
from cotune.program.program import Program

RETRIEVAL_MODES = ("relevance", "recency", "topk", "none")
UPDATE_MODES = ("generation", "edit")
REJECT_REASONS = ("over_budget", "parse", "empty", "duplicate")


def select_direction(
    history: Sequence[tuple[str, float]], current: str, mode: str, k: int, embedder: Any = None
) -> list[tuple[str, float]]:
    """The update direction: up to ``k`` past (instruction, score) pairs, returned worst to best score.

    ``history`` is in trajectory order; the current instruction is excluded (it is shown on its own).

    Args:
        mode: "relevance" (most similar to ``current`` by embedding cosine; needs ``embedder``),
            "recency" (the last ``k``), "topk" (the ``k`` best scores; later wins ties) or "none".

    Raises:
        UnknownChoiceError: ``mode`` is not one of `RETRIEVAL_MODES`.
    """
    if mode not in RETRIEVAL_MODES:
        raise UnknownChoiceError("retrieval", mode, RETRIEVAL_MODES)
    past = [(text, score) for text, score in history if text != current]
    if mode == "none" or k <= 0 or not past:
        return []
    order = list(range(len(past)))
    if mode == "recency":
        chosen = order[-k:]
    elif mode == "topk":
        chosen = sorted(order, key=lambda i: (past[i][1], i), reverse=True)[:k]
    else:
        if embedder is None:
            raise ConfigError("retrieval='relevance' needs an embedder")
        vectors = embedder.embed([current] + [text for text, _ in past])  # one call: comparable vectors
        sims = vectors[1:] @ vectors[0]
        chosen = sorted(order, key=lambda i: (float(sims[i]), i), reverse=True)[:k]
    return [past[i] for i in sorted(chosen, key=lambda i: (past[i][1], i))]


@dataclass
class _Proposal:
    text: str | None
    distance: int | None
    rejected: dict[str, int] = field(default_factory=dict)


def _deduplicate(proposals: list[_Proposal], known: list[str], rejected: dict[str, int]) -> list[tuple[str, int]]:
    """The proposals not seen before (normalized text), in candidate order; counts rejections by reason."""
    seen = {normalize_instruction(text) for text in known}
    fresh = []
    for p in proposals:
        for reason, n in p.rejected.items():
            rejected[reason] += n
        if p.text is None:
            continue
        key = normalize_instruction(p.text)
        if key in seen:
            rejected["duplicate"] += 1
            continue
        seen.add(key)
        fresh.append((p.text, p.distance))
    return fresh


class GPO(Optimizer):
    """Optimize each predictor's instruction with GPO; demos are kept as they are.

    Args:
        metric: ``metric(example, prediction) -> float``.
        optimizer_lm: the LM that writes instructions, or a model's name (see `cotune.lm.load`), loaded when
            `compile` starts (with the task LM's request cache) and closed when it ends; by default each
            predictor's own LM.
        num_steps: update steps per predictor.
        candidates_per_step: instructions proposed per step (distinct rollout ids), deduplicated, each
            scored on the mini-batch.
        retrieval: update direction: "relevance" (paper), "recency" or "topk" (OPRO-style), "none".
        num_retrieved: past instructions shown per step.
        update: "generation" (paper) or "edit".
        edit_budget: "cosine" (paper), "fixed" (``budget_start`` every step) or "none" (unlimited).
        budget_start, budget_end: words the first and the last step may change.
        minibatch_size: valset examples each candidate is scored on.
        num_task_examples: trainset examples (inputs and gold outputs) shown to the optimizer LM per step.
        max_retries: retries of a candidate that is over budget or unparsable before it is rejected.
        temperature: sampling temperature of the optimizer LM.
        num_confirm: best mini-batch instructions re-scored on the full valset at the end.
        embedder: an `Embedder` for "relevance"; by default `cotune.retrieve.embed.default_embedder()`.
        num_threads: parallel LM calls.
        seed: seeds the mini-batch, the task examples and the rollout ids.

    Learned attributes (after `compile`), keyed by predictor name:
        trajectory_: list of {step, instruction, score, budget, edit_distance, accepted}; step 0 is the
            initial instruction; ``accepted`` marks the instruction the step moved to.
        best_instructions_: the instruction chosen for each predictor.
        best_score_: the full-valset score of the returned program.
        confirmed_: full-valset score of each instruction re-scored at the end.
        rejected_: counts by reason: "over_budget", "parse", "empty" (per attempt, retries included) and
            "duplicate" (per candidate).

    Example:
        >>> from cotune.lm import FakeLM
        >>> from cotune.program.examples import QA
        >>> def lm(messages):  # answers well only when told to be brief; as optimizer, proposes exactly that
        ...     if "New Instruction:" in messages[0]["content"]:
        ...         return "New Instruction: Answer with digits only."
        ...     return "Answer: 4" if "digits" in messages[0]["content"] else "Answer: four"
        >>> data = [Example(question="2+2?", answer="4").with_inputs("question")] * 4
        >>> gpo = GPO(lambda ex, pred: float(pred["answer"] == ex["answer"]), num_steps=1,
        ...           candidates_per_step=1, retrieval="none", num_threads=1)
        >>> best = gpo.compile(QA().bind(FakeLM(lm)), trainset=data, valset=data)
        >>> best.answer.instruction, gpo.best_score_
        ('Answer with digits only.', 1.0)
    """

    def __init__(
        self,
        metric: Callable[..., float],
        *,
        optimizer_lm: LM | str | None = None,
        num_steps: Positive = 6,
        candidates_per_step: Positive = 4,
        retrieval: Literal[RETRIEVAL_MODES] = "relevance",
        num_retrieved: Count = 3,
        update: Literal[UPDATE_MODES] = "generation",
        edit_budget: Literal[BUDGET_KINDS] = "cosine",
        budget_start: Positive = 50,
        budget_end: Positive = 10,
        minibatch_size: Positive = 16,
        num_task_examples: Count = 3,
        max_retries: Count = 2,
        temperature: NonNegative = 0.7,
        num_confirm: Positive = 3,
        embedder: Any = None,
        num_threads: Positive = 8,
        seed: int = 0,
    ):
        self.metric = metric
        self.optimizer_lm = optimizer_lm
        self.num_steps = num_steps
        self.candidates_per_step = candidates_per_step
        self.retrieval = retrieval
        self.num_retrieved = num_retrieved
        self.update = update
        self.edit_budget = edit_budget
        self.budget_start = budget_start
        self.budget_end = budget_end
        self.minibatch_size = minibatch_size
        self.num_task_examples = num_task_examples
        self.max_retries = max_retries
        self.temperature = temperature
        self.num_confirm = num_confirm
        self.embedder = embedder
        self.num_threads = num_threads
        self.seed = seed

    def check_relations(self) -> None:
        budget_at(self.edit_budget, 0, self.num_steps, self.budget_start, self.budget_end)  # budget_end <= start
        if isinstance(self.optimizer_lm, str):
            registry.check(self.optimizer_lm)  # a misspelt or missing model fails before any model loads

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        valset = list(require_valset(valset, "GPO"))
        student = program.deepcopy()
        names = [name for name, _ in student.named_predictors()]
        if not names:
            raise ConfigError(f"{type(program).__name__} has no predictors to optimize")
        rng = random.Random(self.seed)
        minibatch = valset if len(valset) <= self.minibatch_size else rng.sample(valset, self.minibatch_size)
        embedder = self.embedder
        if embedder is None and self.retrieval == "relevance":
            from cotune.retrieve.embed import default_embedder

            embedder = default_embedder()

        self.trajectory_: dict[str, list[dict[str, Any]]] = {}
        self.rejected_: dict[str, dict[str, int]] = {}
        self.confirmed_: dict[str, dict[str, float]] = {}
        self.best_instructions_: dict[str, str] = {}
        self.best_score_: float = 0.0
        like = student.predictor(names[0]).lm
        with (
            registry.opened(self.optimizer_lm, like=like) as optimizer_lm,
            Progress(events, "gpo steps", total=len(names) * self.num_steps) as bar,
        ):
            for index, name in enumerate(names):
                self._optimize_predictor(
                    student, name, index, list(trainset), valset, minibatch, rng, embedder, bar, events, optimizer_lm
                )
        return student

    # -- one predictor -------------------------------------------------------------------------------
    def _optimize_predictor(
        self, student, name, index, trainset, valset, minibatch, rng, embedder, bar, events, optimizer_lm
    ):
        predictor = student.predictor(name)
        lm = optimizer_lm if optimizer_lm is not None else predictor.lm
        if lm is None:
            raise ConfigError(f"predictor {name!r} is not bound to an LM and no optimizer_lm was given")
        initial = predictor.instruction
        trajectory = self.trajectory_[name] = []
        rejected = self.rejected_[name] = dict.fromkeys(REJECT_REASONS, 0)
        scores: dict[str, float] = {}  # the mini-batch is fixed, so one score per instruction

        def score(*instructions: str) -> list[float]:
            """Each instruction's mini-batch score; the new ones scored at the same time, so a local engine
            batches all of a step's candidates together (one at a time, each batch held 16 rows)."""
            new = [text for text in dict.fromkeys(instructions) if text not in scores]
            scores.update(zip(new, self._score_all(student, name, new, minibatch), strict=True))
            return [scores[text] for text in instructions]

        current, (current_score,) = initial, score(initial)
        trajectory.append(
            dict(step=0, instruction=initial, score=current_score, budget=None, edit_distance=0, accepted=True)
        )
        for t in range(self.num_steps):
            budget = budget_at(self.edit_budget, t, self.num_steps, self.budget_start, self.budget_end)
            history = [(e["instruction"], e["score"]) for e in trajectory]
            direction = select_direction(history, current, self.retrieval, self.num_retrieved, embedder)
            k = min(self.num_task_examples, len(trainset))
            examples = prompts.format_examples(rng.sample(trainset, k)) if k else prompts.format_examples([])
            context = dict(
                task_examples=examples,
                past_instructions=prompts.format_past(direction),
                current_instruction=current,
                current_score=f"{current_score:.2f}",
            )
            with ThreadPoolExecutor(min(self.num_threads, self.candidates_per_step)) as pool:
                futures = [
                    pool.submit(self._propose, lm, context, budget, (index, t, c))
                    for c in range(self.candidates_per_step)
                ]
                proposals = [f.result() for f in futures]
            fresh = _deduplicate(proposals, [e["instruction"] for e in trajectory], rejected)
            fresh_scores = score(*(text for text, _ in fresh))
            scored = [(text, dist, s) for (text, dist), s in zip(fresh, fresh_scores, strict=True)]
            best = max(range(len(scored)), key=lambda i: (scored[i][2], -i), default=None)
            for i, (text, dist, s) in enumerate(scored):
                trajectory.append(
                    dict(step=t + 1, instruction=text, score=s, budget=budget, edit_distance=dist, accepted=i == best)
                )
            if best is not None:
                current, current_score = scored[best][0], scored[best][2]
            emit(
                events,
                "gpo.step",
                predictor=name,
                step=t + 1,
                budget=budget,
                candidates=len(scored),
                scores=[s for _, _, s in scored],
                current_score=current_score,
            )
            bar.advance(predictor=name, step=t + 1, budget=budget, score=current_score, best=max(scores.values()))

        chosen, full = self._confirm(student, name, initial, scores, valset, minibatch, events)
        predictor.instruction = chosen
        self.best_instructions_[name] = chosen
        self.best_score_ = full

    def _propose(self, lm, context: dict[str, str], budget: int | None, where: tuple[int, int, int]) -> _Proposal:
        """One candidate: ask, clean, measure; retry when over budget or unreadable; None when all tries fail."""
        rejected: dict[str, int] = {}
        last_distance = None
        # An answer longer than the current instruction plus the budget is over budget anyway; two tokens
        # per word leave room for punctuation and the "New Instruction:" label.
        current_words = len(words(context["current_instruction"]))
        max_tokens = 2 * (current_words + (budget if budget is not None else max(current_words, 50))) + 16
        for attempt in range(self.max_retries + 1):
            rollout = zlib.crc32(f"gpo/{self.seed}/{'/'.join(map(str, where))}/{attempt}".encode())
            ask = prompts.proposer(
                self.update, lm, temperature=self.temperature, rollout_id=rollout, max_tokens=max_tokens
            )
            try:
                raw = ask(**context, edit_budget=prompts.format_budget(budget, last_distance)).new_instruction
            except ParseError:
                rejected["parse"] = rejected.get("parse", 0) + 1
                continue
            text = prompts.clean_instruction(raw)
            if not text:
                rejected["empty"] = rejected.get("empty", 0) + 1
                continue
            distance = word_edit_distance(context["current_instruction"], text)
            if budget is not None and distance > budget:
                rejected["over_budget"] = rejected.get("over_budget", 0) + 1
                last_distance = distance
                continue
            return _Proposal(text, distance, rejected)
        return _Proposal(None, None, rejected)

    def _score_all(self, student, name: str, instructions: list[str], dataset: Sequence[Example]) -> list[float]:
        """`_score` of each instruction, all at the same time."""
        if len(instructions) <= 1:
            return [self._score(student, name, text, dataset) for text in instructions]
        with ThreadPoolExecutor(len(instructions)) as pool:
            return list(pool.map(lambda text: self._score(student, name, text, dataset), instructions))

    def _score(self, student: Program, name: str, instruction: str, dataset: Sequence[Example]) -> float:
        candidate = student.deepcopy()
        candidate.predictor(name).instruction = instruction
        # max_errors=None: a candidate whose program crashes scores 0 on those rows instead of stopping the
        # search (a metric that raises still stops it: that is a bug in the metric)
        return evaluate(candidate, dataset, self.metric, num_threads=self.num_threads, max_errors=None).score

    def _confirm(self, student, name, initial, scores, valset, minibatch, events) -> tuple[str, float]:
        """Re-score the initial and the best mini-batch instructions on the full valset; the highest wins."""
        ranked = sorted(scores, key=lambda text: scores[text], reverse=True)  # stable: earlier first on ties
        pool = [initial] + [text for text in ranked if text != initial][: self.num_confirm]
        full_is_mini = len(minibatch) == len(valset)
        full = (
            dict(zip(pool, self._score_all(student, name, pool, valset), strict=True)) if not full_is_mini else scores
        )
        confirmed = self.confirmed_[name] = {text: full[text] for text in pool}
        chosen = max(pool, key=lambda text: (confirmed[text], -pool.index(text)))
        emit(events, "gpo.confirm", predictor=name, scores=list(confirmed.values()), chosen=pool.index(chosen))
        return chosen, confirmed[chosen]
