"""Finding 5 (issue 12): the advisor chooses on dev, as the runner does, and reports test."""

from cotune.report.advisor import advise

from .test_report import make_run


def test_the_advisor_chooses_on_dev_and_reports_test(tmp_path):
    # "p" is best on dev, "p-w" looks best on test: choosing on test would be choosing on the test set
    run = make_run(tmp_path, "a", {"p": [(0.9, 0.5)], "p-w": [(0.5, 0.9)]}, tokens={"p": 100, "p-w": 100}, n=400)
    advice = advise(run, calls_per_day=1000)
    (rec,) = advice.recommendations
    assert rec.strategy == "p"
    assert "50.0%" in rec.text  # the chosen strategy's accuracy is reported on test
