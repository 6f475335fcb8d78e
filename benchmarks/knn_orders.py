"""How often a shuffled option order would change a question's kNN demos, were the demos chosen per order.

    .venv/bin/python benchmarks/knn_orders.py          # three BBH tasks, MiniLM (~1 min)

MedPrompt's choice-shuffle ensemble asks each question with its options in ``--m`` orders
(`ChoiceShuffleEnsemble.permutations`). A kNN selector embeds the predictor's inputs, the lettered choices
included (`cotune.program.selectors.demo_text`), so each shuffled order is another text. Per task: the ``--train``
training questions as the pool (embedded as the built-in program's predictor sees them), and for each of the
first ``--test`` test questions and each shuffled order, whether its ``--k`` nearest pool questions (in rank
order) differ from the original order's. Since `cotune.program.demo_pins`, the ensemble shows every order the
original order's demos; this counts what that changes. Writes ``benchmarks/results/knn_orders.json``.
"""

from __future__ import annotations

import time

from bench import RESULTS, arguments, write_results


def main() -> None:
    parser = arguments(__doc__, RESULTS / "knn_orders.json")
    parser.add_argument("--tasks", default="date_understanding,logical_deduction_three_objects,hyperbaton")
    parser.add_argument("--data-dir", default="../shared/data/bbh")
    parser.add_argument("--train", type=int, default=50)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--m", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()

    import numpy as np

    from cotune.program.choices import format_options
    from cotune.program.ensemble import ChoiceShuffleEnsemble
    from cotune.program.selectors import demo_text, embedder_spec
    from cotune.retrieve.embed import default_embedder
    from cotune.tasks import load_task
    from cotune.tasks.multiple_choice import MultipleChoiceQA

    embedder = default_embedder()
    rows = {}
    for name in args.tasks.split(","):
        task = load_task(f"bbh:{name}", data_dir=args.data_dir, seed=0, train=args.train, test=args.test)
        predictor = task.program().choose
        fields = predictor.signature.input_names

        def text(question, options, fields=fields):
            # the inputs MultipleChoiceQA.forward calls its predictor with: the options lettered into "choices"
            return demo_text({"question": question, "choices": format_options(options)}, fields)

        pool = np.asarray(embedder.embed([text(ex["question"], ex["options"]) for ex in task.train]), dtype=np.float32)
        ensemble = ChoiceShuffleEnsemble(MultipleChoiceQA(), m=args.m)
        other, orders = 0, 0
        for ex in task.test:
            options = ex["options"]
            tops = []
            for order in ensemble.permutations(options):
                vector = np.asarray(embedder.embed([text(ex["question"], [options[i] for i in order])]))[0]
                tops.append(tuple(np.argsort(-(pool @ vector), kind="stable")[: args.k].tolist()))
            orders += len(tops) - 1
            other += sum(top != tops[0] for top in tops[1:])
        rows[name] = {"shuffled_orders": orders, "other_top_k": other, "share": round(other / max(orders, 1), 3)}
        print(f"{name}: {other} of {orders} shuffled orders get another top {args.k}", flush=True)
    write_results(
        args.out,
        {
            "benchmark": "knn_orders",
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "embedder": embedder_spec(embedder),
            "tasks": rows,
        },
        started=started,
    )


if __name__ == "__main__":
    main()
