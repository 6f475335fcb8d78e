"""What classical classifiers trained on the gold labels score on Iris's test split: a ceiling for Table 1.

    .venv/bin/python benchmarks/iris_ceiling.py

cotune's Θ learns from the model's own passing runs, never a gold label. These classifiers are fit on the same
50 training flowers *with* their gold species and scored on the same 50 test flowers (split seed 0, cotune's
Iris task), so they show how hard this particular split is; the flowers they miss are the boundary
versicolor/virginica ones that the 92% adapters miss too. Writes ``benchmarks/results/iris_ceiling.json``.
"""

from __future__ import annotations

import time

from bench import RESULTS, arguments, write_results

FEATURES = ("petal_length", "petal_width", "sepal_length", "sepal_width")


def main() -> None:
    args = arguments(__doc__, RESULTS / "iris_ceiling.json").parse_args()
    started = time.perf_counter()

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    from cotune.tasks import load_task

    task = load_task("iris", seed=0)

    def xy(split):
        return np.array([[float(e[f]) for f in FEATURES] for e in split]), np.array([e["species"] for e in split])

    (x_train, y_train), (x_test, y_test) = xy(task.train), xy(task.test)
    models = {
        "logistic regression": LogisticRegression(max_iter=1000),
        "k nearest neighbours (k=5)": KNeighborsClassifier(5),
        "decision tree": DecisionTreeClassifier(random_state=0),
        "SVM (RBF)": SVC(),
    }
    rows = []
    for name, model in models.items():
        predicted = model.fit(x_train, y_train).predict(x_test)
        missed = [
            dict(zip(FEATURES, map(float, x), strict=True), species=str(y), predicted=str(p))
            for x, y, p in zip(x_test, y_test, predicted, strict=True)
            if y != p
        ]
        rows.append({"classifier": name, "test_accuracy": float((predicted == y_test).mean()), "missed": missed})
        print(f"{name:<28} {rows[-1]['test_accuracy']:.0%}")
    write_results(
        args.out, {"split_seed": 0, "train": len(x_train), "test": len(x_test), "rows": rows}, started=started
    )


if __name__ == "__main__":
    main()
