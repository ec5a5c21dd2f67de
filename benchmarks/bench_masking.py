"""Benchmark of pairwise-masking secure aggregation (SecAgg+), all parties in one process.

Prints JSON: for each (n clients, D coordinates, dropout fraction) the per-client and
server seconds, whole-protocol wall seconds (and this process's CPU seconds, which a
shared machine's load does not inflate), bytes per client that took part in every stage
(mean; expansion over a float32 vector for the largest), and the max abs error of the
recovered mean against the plain mean.
Baselines measured in the same run: the ``plain`` scheme on the same updates and one
AES-CTR mask expansion of D words, so the ratios compare across machines.

Usage: .venv/bin/python benchmarks/bench_masking.py [--n 10 50 100] [--dims 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections import defaultdict

import numpy as np

from secagg._scheme import PlainScheme
from secagg.masking import MaskingClient, MaskingParams, MaskingServer, plan_round
from secagg.masking._prg import expand_mask


def _plain_seconds(updates: dict[int, np.ndarray], dim: int) -> float:
    start = time.perf_counter()
    session = PlainScheme().start_round(round_id=1, client_ids=list(updates), dim=dim)
    blobs = {c: session.protect(c, u) for c, u in updates.items()}
    session.reveal(session.combine(blobs), survivors=list(updates))
    return time.perf_counter() - start


def _mask_seconds(dim: int) -> float:
    key = os.urandom(32)
    start = time.perf_counter()
    for _ in range(5):
        expand_mask(key, dim=dim)
    return (time.perf_counter() - start) / 5


class _Meter:
    """Seconds and bytes per party; ``cpu`` counts this process's CPU time (robust to load)."""

    def __init__(self) -> None:
        self.seconds: dict[object, float] = defaultdict(float)
        self.up: dict[object, int] = defaultdict(int)
        self.down: dict[object, int] = defaultdict(int)

    def call(self, party: object, function, *args):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        result = function(*args)
        self.seconds[party] += time.perf_counter() - start
        return result


def run_case(params: MaskingParams, *, n: int, dim: int, dropout: float, seed: int) -> dict:
    """One round with ``dropout * n`` clients lost: half before masked input, half before unmask."""
    rng = np.random.default_rng(seed)  # benchmark data only; masks come from AES-CTR
    ids = list(range(n))
    updates = {c: (rng.normal(0.0, 0.05, dim) / n) for c in ids}
    dropped = math.ceil(dropout * n)
    before_input = set(ids[: (dropped + 1) // 2])
    before_unmask = set(ids[(dropped + 1) // 2 : dropped])
    meter = _Meter()
    server_party = "server"

    def send(messages: dict[int, bytes], direction: dict[object, int]) -> dict[int, bytes]:
        for client, message in messages.items():
            direction[client] += len(message)
        return messages

    wall_start, cpu_start = time.perf_counter(), time.process_time()
    plan = meter.call(server_party, lambda: plan_round(params, round_id=1, client_ids=ids, dim=dim))
    server = MaskingServer(plan)
    clients = {c: MaskingClient(plan, c) for c in ids}
    adverts = send({c: meter.call(c, clients[c].advertise_keys) for c in ids}, meter.up)
    meter.call(server_party, server.collect, server.receive_advertise, adverts)
    broadcasts = send(meter.call(server_party, server.broadcast_keys), meter.down)
    uploads = send(
        {c: meter.call(c, clients[c].share_keys, b) for c, b in broadcasts.items()}, meter.up
    )
    meter.call(server_party, server.collect, server.receive_share_keys, uploads)
    deliveries = meter.call(server_party, server.deliver_shares)
    senders = [c for c in deliveries if c not in before_input]
    send({c: deliveries[c] for c in senders}, meter.down)
    blobs = send(
        {c: meter.call(c, clients[c].masked_input, deliveries[c], updates[c]) for c in senders},
        meter.up,
    )
    meter.call(server_party, server.receive_masked_inputs, blobs)
    online = [c for c in senders if c not in before_unmask]
    requests = send(meter.call(server_party, server.unmask_requests, online), meter.down)
    responses = send(
        {c: meter.call(c, clients[c].unmask, r) for c, r in requests.items()}, meter.up
    )
    meter.call(server_party, server.collect, server.receive_unmask_response, responses)
    recovered = meter.call(server_party, server.finish)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start

    included = server.included
    plain_mean = np.sum([updates[c] for c in included], axis=0)
    error = float(np.max(np.abs(recovered - plain_mean)))
    plain_wall = _plain_seconds({c: updates[c] for c in included}, dim)
    mask_seconds = _mask_seconds(dim)
    float32_bytes = 4 * dim
    complete = list(requests)  # clients that took part in every stage
    up = [meter.up[c] for c in complete]
    total = [meter.up[c] + meter.down[c] for c in complete]
    return {
        "n": n,
        "dim": dim,
        "dropout": dropout,
        "degree_k": plan.degree,
        "threshold_t": plan.threshold,
        "graph": "complete" if plan.complete else "sparse",
        "included": len(included),
        "per_client_seconds": float(np.mean([meter.seconds[c] for c in complete])),
        "server_seconds": meter.seconds[server_party],
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "bytes_up_per_client": float(np.mean(up)),
        "bytes_up_down_per_client": float(np.mean(total)),
        "expansion_over_float32": max(up) / float32_bytes,
        "expansion_up_down_over_float32": max(total) / float32_bytes,
        "max_abs_error_of_mean": error,
        "baseline_plain_wall_seconds": plain_wall,
        "wall_over_plain": wall / plain_wall,
        "baseline_one_mask_expansion_seconds": mask_seconds,
        "wall_in_mask_expansions": wall / mask_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1])
    args = parser.parse_args()
    params = MaskingParams()
    cases = [
        run_case(params, n=n, dim=dim, dropout=dropout, seed=index)
        for index, (n, dim, dropout) in enumerate(
            (n, dim, dropout) for n in args.n for dim in args.dims for dropout in args.dropouts
        )
    ]

    def find(n: int, dim: int, dropout: float) -> dict | None:
        return next(
            (c for c in cases if (c["n"], c["dim"], c["dropout"]) == (n, dim, dropout)), None
        )

    expansion_case = find(100, 1_000_000, 0.1) or find(100, 1_000_000, 0.0)
    wall_case = find(100, 100_000, 0.1)
    targets = {
        "expansion_le_1.1_at_n100_D1e6": None
        if expansion_case is None
        else expansion_case["expansion_over_float32"] <= 1.1,
        "wall_le_3s_at_n100_D1e5_dropout0.1": None
        if wall_case is None
        else wall_case["wall_seconds"] <= 3.0,
        "cpu_le_3s_at_n100_D1e5_dropout0.1": None
        if wall_case is None
        else wall_case["cpu_seconds"] <= 3.0,
        "error_le_1e-5_all_cases": all(c["max_abs_error_of_mean"] <= 1e-5 for c in cases),
    }
    report = {
        "benchmark": "masking",
        "params": {
            "bits": params.bits,
            "clip_range": params.clip_range,
            "max_corrupt_fraction": params.max_corrupt_fraction,
            "max_dropout_fraction": params.max_dropout_fraction,
            "security_bits": params.security_bits,
            "correctness_bits": params.correctness_bits,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "cases": cases,
        "targets": targets,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
