"""`cotune serve` under load: one client's heavy request must not hold another's small one behind it, and clients
that trickle request heads without the API key must not lock out a client that has it.

    .venv/bin/python benchmarks/server_fairness.py      # ~3 min on 2 CPU cores; writes results/server_fairness.json

SmolLM2-135M behind cotune's own server (in-process, real HTTP on 127.0.0.1). The small request: "Say hello.",
4 tokens, greedy. Its latency alone is the median of ``--repeats`` requests on the idle server; under load it is
sent as soon as the heavy request's batch has started on the model (the engine's generate count moved), and its
latency is divided by the median alone. Heavy requests: a 1,500-word prompt (2 new tokens), a 300-token
generation, and an 8,550-word prompt (over the model's 8,192-token context: refused before it queues). Then
128 connections that sent the start of a request head and nothing more hold the server's connection places while a
client with the key posts the small request. Targets (reliability issue, round two): small request under load
≤ 2× its latency alone; the over-context prompt answered 400 at once; the keyed client answered 200 within 10 s.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Any

import httpx
from bench import RESULTS, arguments, write_results

SMALL = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "temperature": 0}
HEAVY = {
    "1500-word prompt": {"messages": [{"role": "user", "content": " ".join(["apple"] * 1500)}], "max_tokens": 2},
    "300-token generation": {"messages": [{"role": "user", "content": "Count from 1 to 500."}], "max_tokens": 300},
}
OVER_CONTEXT = {"messages": [{"role": "user", "content": " ".join(["apple"] * 8550)}]}
KEY = "bench-key"


def post(url: str, body: dict[str, Any], key: str | None = None) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    t0 = time.monotonic()
    r = httpx.post(url + "/chat/completions", json=body, headers=headers, timeout=300)
    return r.status_code, time.monotonic() - t0


def alone(url: str, repeats: int) -> list[float]:
    post(url, SMALL)  # warm
    return [post(url, SMALL)[1] for _ in range(repeats)]


def beside(lm: Any, url: str, heavy: dict[str, Any]) -> dict[str, float]:
    """The small request's latency while ``heavy`` runs, and the heavy one's."""
    out: dict[str, float] = {}

    def send_heavy() -> None:
        status, out["heavy_s"] = post(url, {**SMALL, **heavy})
        assert status == 200, status

    calls = lm.engine.generate_calls
    thread = threading.Thread(target=send_heavy)
    thread.start()
    deadline = time.monotonic() + 60
    while lm.engine.generate_calls == calls and time.monotonic() < deadline:  # the heavy batch has begun
        time.sleep(0.005)
    status, out["small_s"] = post(url, SMALL)
    assert status == 200, status
    thread.join(300)
    return out


def lockout(lm: Any, tricklers: int) -> dict[str, Any]:
    """A keyed client's small request while ``tricklers`` connections hold heads open without the key."""
    from cotune.serve.server import start_server

    with start_server(lm, model_name="m", api_key=KEY) as srv:
        held = []
        try:
            t0 = time.monotonic()
            for _ in range(tricklers):
                sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                held.append(sock)
            status, seconds = post(srv.url, SMALL, key=KEY)
            return {
                "tricklers": tricklers,
                "status": status,
                "seconds": round(time.monotonic() - t0, 3),
                "request_s": round(seconds, 3),
            }
        finally:
            for sock in held:
                sock.close()


def main() -> None:
    ap = arguments(__doc__, RESULTS / "server_fairness.json")
    ap.add_argument("--repeats", type=int, default=5, help="small requests alone, and runs beside each heavy one")
    args = ap.parse_args()
    started = time.perf_counter()
    from cotune.lm.registry import load
    from cotune.serve.server import start_server

    lm = load("smollm2-135m", cache=False)
    try:
        with start_server(lm, model_name="m") as srv:
            solo = alone(srv.url, args.repeats)
            base = statistics.median(solo)
            print(f"small request alone: median {base:.3f} s of {[round(s, 3) for s in solo]}")
            loaded = {}
            for name, heavy in HEAVY.items():
                runs = [beside(lm, srv.url, heavy) for _ in range(args.repeats)]
                ratios = [r["small_s"] / base for r in runs]
                loaded[name] = {
                    "small_s": [round(r["small_s"], 3) for r in runs],
                    "heavy_s": [round(r["heavy_s"], 3) for r in runs],
                    "ratio_median": round(statistics.median(ratios), 2),
                    "ratio_max": round(max(ratios), 2),
                }
                print(
                    f"beside a {name}: small {loaded[name]['ratio_median']}x alone (max {loaded[name]['ratio_max']}x)"
                )
            status, seconds = post(srv.url, {**SMALL, **OVER_CONTEXT})
            over = {"status": status, "seconds": round(seconds, 3)}
            print(f"8,550-word prompt: {status} in {seconds:.2f} s")
        lock = lockout(lm, 128)
        print(f"128 tricklers, keyed client: {lock['status']} in {lock['seconds']} s")
    finally:
        lm.close()
    targets = {
        "small_within_2x_beside_every_heavy": all(v["ratio_median"] <= 2.0 for v in loaded.values()),
        "over_context_refused_at_once": over["status"] == 400 and over["seconds"] < 10,
        "keyed_client_not_locked_out": lock["status"] == 200 and lock["seconds"] < 10,
    }
    print(targets)
    write_results(
        args.out,
        {
            "benchmark": "server_fairness",
            "model": "smollm2-135m",
            "small_alone_s": [round(s, 3) for s in solo],
            "small_alone_median_s": round(base, 3),
            "beside": loaded,
            "over_context": over,
            "lockout": lock,
            "targets": targets,
        },
        started=started,
    )


if __name__ == "__main__":
    main()
