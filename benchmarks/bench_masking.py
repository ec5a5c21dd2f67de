"""Benchmark of pairwise-masking secure aggregation (SecAgg+), all parties in one process.

Prints JSON: for each (n clients, D coordinates, dropout fraction) the per-client and
server seconds, whole-protocol wall seconds, bytes per client and their expansion over a
float32 vector, and the max abs error of the recovered mean against the plain mean.
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


def run_case(params: MaskingParams, *, n: int, dim: int, dropout: float, seed: int) -> dict:
    """One round with ``dropout * n`` clients lost: half before masked input, half before unmask."""
    rng = np.random.default_rng(seed)  # benchmark data only; masks come from AES-CTR
    ids = list(range(n))
    updates = {c: (rng.normal(0.0, 0.05, dim) / n) for c in ids}
    dropped = math.ceil(dropout * n)
    before_input = set(ids[: (dropped + 1) // 2])
    before_unmask = set(ids[(dropped + 1) // 2 : dropped])

    client_seconds = 0.0
    server_seconds = 0.0
    bytes_up = 0
    bytes_down = 0
    wall_start = time.perf_counter()

    tick = time.perf_counter()
    plan = plan_round(params, round_id=1, client_ids=ids, dim=dim)
    server = MaskingServer(plan)
    server_seconds += time.perf_counter() - tick

    tick = time.perf_counter()
    clients = {c: MaskingClient(plan, c) for c in ids}
    adverts = {c: clients[c].advertise_keys() for c in ids}
    client_seconds += time.perf_counter() - tick
    bytes_up += sum(map(len, adverts.values()))

    tick = time.perf_counter()
    server.collect(server.receive_advertise, adverts)
    broadcasts = server.broadcast_keys()
    server_seconds += time.perf_counter() - tick
    bytes_down += sum(map(len, broadcasts.values()))

    tick = time.perf_counter()
    uploads = {c: clients[c].share_keys(b) for c, b in broadcasts.items()}
    client_seconds += time.perf_counter() - tick
    bytes_up += sum(map(len, uploads.values()))

    tick = time.perf_counter()
    server.collect(server.receive_share_keys, uploads)
    deliveries = server.deliver_shares()
    server_seconds += time.perf_counter() - tick

    senders = [c for c in deliveries if c not in before_input]
    bytes_down += sum(len(deliveries[c]) for c in senders)
    tick = time.perf_counter()
    blobs = {c: clients[c].masked_input(deliveries[c], updates[c]) for c in senders}
    client_seconds += time.perf_counter() - tick
    bytes_up += sum(map(len, blobs.values()))

    tick = time.perf_counter()
    server.receive_masked_inputs(blobs)
    requests = server.unmask_requests([c for c in senders if c not in before_unmask])
    server_seconds += time.perf_counter() - tick
    bytes_down += sum(map(len, requests.values()))

    tick = time.perf_counter()
    responses = {c: clients[c].unmask(r) for c, r in requests.items()}
    client_seconds += time.perf_counter() - tick
    bytes_up += sum(map(len, responses.values()))

    tick = time.perf_counter()
    server.collect(server.receive_unmask_response, responses)
    recovered = server.finish()
    server_seconds += time.perf_counter() - tick
    wall = time.perf_counter() - wall_start

    included = server.included
    plain_mean = np.sum([updates[c] for c in included], axis=0)
    error = float(np.max(np.abs(recovered - plain_mean)))
    plain_wall = _plain_seconds({c: updates[c] for c in included}, dim)
    mask_seconds = _mask_seconds(dim)
    float32_bytes = 4 * dim
    return {
        "n": n,
        "dim": dim,
        "dropout": dropout,
        "degree_k": plan.degree,
        "threshold_t": plan.threshold,
        "graph": "complete" if plan.complete else "sparse",
        "included": len(included),
        "per_client_seconds": client_seconds / n,
        "server_seconds": server_seconds,
        "wall_seconds": wall,
        "bytes_up_per_client": bytes_up / n,
        "bytes_total_per_client": (bytes_up + bytes_down) / n,
        "expansion_over_float32": bytes_up / n / float32_bytes,
        "expansion_total_over_float32": (bytes_up + bytes_down) / n / float32_bytes,
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
