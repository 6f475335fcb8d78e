"""The latency column is wall time per uncached call, not a sum of batched calls' latencies or cache hits."""

from cotune.experiment.results import summarize, wall_per_uncached_call


def node(strategy, *, calls, hits, summed_latency, wall):
    evaluation = {
        "score": 0.5, "n": 10, "format_adherence": 1.0, "seconds": wall,
        "usage": {"calls": calls, "cache_hits": hits, "seconds": summed_latency},
        "usage_per_call": {"prompt_tokens": 100.0, "completion_tokens": 4.0, "seconds": summed_latency / calls},
    }  # fmt: skip
    return {"strategy": strategy, "seed": 0, "test": evaluation, "dev": evaluation,
            "cumulative_optimize_seconds": 0.0, "cumulative_train_seconds": 0.0}  # fmt: skip


def test_calls_that_waited_in_one_batch_are_not_counted_once_each():
    # 10 calls answered together in a 5.7 s batch: each call's own latency is 5.7 s, the wall time 5.7 s.
    row = summarize([node("p", calls=10, hits=0, summed_latency=57.0, wall=5.7)], ["p"])[0]
    assert row["seconds_per_call"] == 5.7 / 10


def test_cache_hits_are_left_out_and_an_all_cached_evaluation_has_no_latency():
    assert wall_per_uncached_call(node("w", calls=10, hits=8, summed_latency=0.2, wall=2.0)["test"]) == 1.0
    row = summarize([node("p-w-p", calls=10, hits=10, summed_latency=0.17, wall=0.17)], ["p-w-p"])[0]
    assert row["seconds_per_call"] is None
