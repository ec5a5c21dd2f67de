"""Benchmark of ``secagg.ckks`` against the usual TenSEAL way, measured in the same run.

Prints JSON. For P in {1e5, 1e6} parameters and n in {10, 100} clients it measures our
scheme end to end over all n clients (every update encrypted for real, combined streaming,
revealed with flooding and rounding) and the usual approach as baseline: N = 8192,
[60, 40, 40], scale 2^40, one ``ts.ckks_vector`` per model tensor (4 tensors), serialized
with ``.serialize()``, in two variants: public-key encryption (clients hold a public
context) and symmetric encryption (every client holds the secret key). The baseline is
timed on ``--baseline-clients`` clients per configuration (its cost per client does not
depend on n); its list conversion is done outside the timer, which favours the baseline.

Targets (ratios, not absolute times): bytes per client <= 0.5x the symmetric baseline's;
client encrypt+serialize seconds and aggregator combine seconds per client <= 0.5x the
public-key baseline's; max abs error of the n-client sum <= 1e-6 (updates in [-1, 1]).

Committees (``--committees K:T ...``, default 3:3 3:2 5:5 5:4), measured in the same run as
a single key holder (encrypting the same updates in alternation): collective key
generation, client encryption under the collective key, each member's check of the
aggregate against the committed blobs and its partial decryption, and the release from T
partials (and from all K, cross-checked). Targets: client bytes and encryption seconds
<= 1.1x the single key holder's; per-member partial decryption seconds and bytes <= 2x
the single key holder's decryption (its reveal seconds; its released float64 bytes);
error <= 1e-6.

Scale: with n = 1000 and P = 1e5 in the run, the target is one whole round in <= 60 s:
every client's encryption, one after another in this one process, plus the aggregator's
streaming combine and the key holder's reveal (``round_seconds``; key generation is
``setup_seconds``, once per federation, outside it). Per party, ``client_*`` is one
client's share and ``server_side_seconds`` the aggregator's and key holder's. Memory:
``peak_rss_mib`` is this process's peak during that round (Linux: reset at its start; else
the process's peak so far), with every update made, encrypted and dropped one at a time.

Usage: ``python benchmarks/bench_ckks.py [--sizes 100000 1000000] [--clients 10 100]
[--committees 3:3 3:2] [--no-baseline] [--clock process]``; the scale case:
``--sizes 100000 --clients 1000 --committees --no-baseline --clock process``. On a shared
machine, pass ``--clock process`` (CPU seconds of this process) so that ratios are not
skewed by others.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import tenseal as ts
from _memory import peak_rss_mib, reset_peak_rss  # benchmarks/_memory.py

from secagg.ckks import (
    CKKSAggregator,
    CKKSClient,
    CommitteeMember,
    CommitteeParams,
    KeyHolder,
    RevealPolicy,
    aggregation_params,
    combine_partials,
    smudging_budget,
)

TENSOR_FRACTIONS = (0.6, 0.3, 0.09, 0.01)  # a model of four tensors (weights and biases)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
_clock = time.perf_counter  # --clock process: CPU seconds, robust on a shared machine


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """TenSEAL prints warnings on stdout (C++); keep stdout for the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _tensor_sizes(size: int) -> list[int]:
    sizes = [int(size * fraction) for fraction in TENSOR_FRACTIONS[:-1]]
    return [*sizes, size - sum(sizes)]


def _update(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=size)


def bench_ours(size: int, clients: int, seed: int) -> dict[str, Any]:
    params = aggregation_params()
    policy = RevealPolicy(min_clients=2)
    start = _clock()
    holder = KeyHolder(params=params, policy=policy)
    context = holder.public_context_bytes()
    encryptor = CKKSClient(context)
    aggregator = CKKSAggregator(context, element_count=size)
    setup_seconds = _clock() - start
    rng = np.random.default_rng(seed)
    exact = np.zeros(size)
    protect_seconds = combine_seconds = 0.0
    blob_bytes = 0
    peak_reset = reset_peak_rss()
    for _ in range(clients):
        update = _update(rng, size)
        exact += update
        start = _clock()
        blob = encryptor.protect(update)
        protect_seconds += _clock() - start
        blob_bytes = len(blob)
        start = _clock()
        aggregator.add(blob)
        combine_seconds += _clock() - start
    start = _clock()
    aggregate = aggregator.aggregate()
    combine_seconds += _clock() - start
    start = _clock()
    revealed = holder.reveal(aggregate)
    reveal_seconds = _clock() - start
    peak = peak_rss_mib()
    return {
        "params": {
            "poly_modulus_degree": params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
            "scale_bits": params.scale_bits,
            "precision_bits": policy.precision_bits,
            "flood_std_bits": policy.flood_std_bits,
        },
        "setup_seconds": setup_seconds,
        "public_context_bytes": len(context),
        "client_encrypt_serialize_seconds": protect_seconds / clients,
        "bytes_per_client": blob_bytes,
        "expansion_over_float32": blob_bytes / (4 * size),
        "aggregator_combine_seconds_per_client": combine_seconds / clients,
        "aggregate_bytes": len(aggregate),
        "reveal_seconds": reveal_seconds,
        "all_clients_encrypt_seconds": protect_seconds,
        "aggregator_combine_seconds": combine_seconds,
        "server_side_seconds": combine_seconds + reveal_seconds,
        "round_seconds": protect_seconds + combine_seconds + reveal_seconds,
        "peak_rss_mib": peak,
        "peak_is_round_only": peak_reset,
        "max_abs_error": float(np.max(np.abs(revealed - exact))),
    }


def bench_committee(
    size: int, clients: int, seed: int, *, committee_size: int, threshold: int
) -> dict[str, Any]:
    """One round under a committee's collective key, against a single key holder.

    The same updates are encrypted under both keys in alternation (so that a busy machine
    slows both alike), and each member's partial decryption alternates with the single
    key holder's decryption of the same-shape aggregate.
    """
    params = aggregation_params()
    policy = RevealPolicy(min_clients=2)
    committee = CommitteeParams(size=committee_size, threshold=threshold)
    crp_seed = os.urandom(32)  # in a deployment, fixed on the ledger
    start = _clock()
    members = [
        CommitteeMember(
            member=index, params=params, committee=committee, policy=policy, crp_seed=crp_seed
        )
        for index in committee.members
    ]
    secret_share_bytes = 0
    for dealer in members:
        for recipient, message in dealer.deal_secret_shares().items():
            secret_share_bytes = len(message)
            members[recipient - 1].receive_secret_share(sender=dealer.member, message=message)
    shares = [member.public_key_share for member in members]
    contexts = [member.join(shares) for member in members]
    setup_seconds = _clock() - start
    context = contexts[0]
    holder = KeyHolder(params=params, policy=policy)
    single_context = holder.public_context_bytes()
    encryptor, single_encryptor = CKKSClient(context.to_bytes()), CKKSClient(single_context)
    aggregator = CKKSAggregator(context, element_count=size)
    single_aggregator = CKKSAggregator(single_context, element_count=size)
    rng = np.random.default_rng(seed)
    exact = np.zeros(size)
    protect_seconds = single_protect_seconds = 0.0
    blobs = []
    single_blob = b""
    for _ in range(clients):
        update = _update(rng, size)
        exact += update
        start = _clock()
        blob = encryptor.protect(update)
        protect_seconds += _clock() - start
        start = _clock()
        single_blob = single_encryptor.protect(update)
        single_protect_seconds += _clock() - start
        blobs.append(blob)
        aggregator.add(blob)
        single_aggregator.add(single_blob)
    aggregate, single_aggregate = aggregator.aggregate(), single_aggregator.aggregate()
    partials: list[bytes] = []
    check_seconds: list[float] = []
    partial_seconds: list[float] = []
    reveal_seconds: list[float] = []
    for member in members:
        start = _clock()
        member.verify_aggregate(aggregate, committed_blobs=blobs)
        check_seconds.append(_clock() - start)
        start = _clock()
        partials.append(member.partial_decrypt(aggregate))
        partial_seconds.append(_clock() - start)
        start = _clock()
        holder.reveal(single_aggregate)
        reveal_seconds.append(_clock() - start)
    start = _clock()
    release = combine_partials(
        aggregate, partials[:threshold], public_context=context, committee=committee, policy=policy
    )
    combine_seconds = _clock() - start
    start = _clock()
    checked = combine_partials(
        aggregate, partials, public_context=context, committee=committee, policy=policy
    )
    cross_check_seconds = _clock() - start
    budget = smudging_budget(params=params, committee=committee, policy=policy)
    single_reveal = sum(reveal_seconds) / len(reveal_seconds)
    partial_mean = sum(partial_seconds) / len(partial_seconds)
    result = {
        "committee_size": committee_size,
        "threshold": threshold,
        "setup_seconds_all_members": setup_seconds,
        "public_key_share_bytes": len(shares[0]),
        "secret_share_message_bytes": secret_share_bytes,
        "public_context_bytes": len(context.to_bytes()),
        "client_encrypt_serialize_seconds": protect_seconds / clients,
        "single_client_encrypt_serialize_seconds": single_protect_seconds / clients,
        "bytes_per_client": len(blobs[-1]),
        "single_bytes_per_client": len(single_blob),
        "member_verify_aggregate_seconds_mean": sum(check_seconds) / len(check_seconds),
        "member_partial_decrypt_seconds_mean": partial_mean,
        "member_partial_decrypt_seconds_max": max(partial_seconds),
        "single_reveal_seconds": single_reveal,
        "partial_bytes": len(partials[0]),
        "single_released_bytes": 8 * size,
        "combine_threshold_partials_seconds": combine_seconds,
        "combine_all_partials_cross_checked_seconds": cross_check_seconds,
        "release_noise_std_log2": math.log2(budget.release_std),
        "honest_member_noise_std_log2": math.log2(budget.honest_member_std),
        "max_abs_error": float(np.max(np.abs(release.values - exact))),
        "max_abs_error_all_partials": float(np.max(np.abs(checked.values - exact))),
    }
    ratios = {
        "client_bytes_vs_single": len(blobs[-1]) / len(single_blob),
        "client_encrypt_vs_single": protect_seconds / single_protect_seconds,
        "partial_seconds_vs_single_reveal": partial_mean / single_reveal,
        "partial_bytes_vs_single_release": len(partials[0]) / (8 * size),
    }
    targets = {
        "client_bytes_le_1.1x": ratios["client_bytes_vs_single"] <= 1.1,
        "client_encrypt_le_1.1x": ratios["client_encrypt_vs_single"] <= 1.1,
        "partial_seconds_le_2x": ratios["partial_seconds_vs_single_reveal"] <= 2.0,
        "partial_bytes_le_2x": ratios["partial_bytes_vs_single_release"] <= 2.0,
        "error_le_1e-6": max(result["max_abs_error"], result["max_abs_error_all_partials"]) <= 1e-6,
    }
    return {**result, "ratios": ratios, "targets_met": targets}


def bench_baseline(size: int, clients: int, seed: int, *, symmetric: bool) -> dict[str, Any]:
    encryption = ts.ENCRYPTION_TYPE.SYMMETRIC if symmetric else ts.ENCRYPTION_TYPE.ASYMMETRIC
    secret = ts.context(
        ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40], encryption_type=encryption
    )
    secret.global_scale = 2**40
    if symmetric:
        client_context = secret  # every client holds the secret key
        aggregator_context = secret
    else:
        public = secret.copy()
        public.make_context_public()
        client_context = ts.context_from(public.serialize())
        aggregator_context = ts.context_from(public.serialize())
    rng = np.random.default_rng(seed)
    sizes = _tensor_sizes(size)
    exact = np.zeros(size)
    accumulator: list[Any] | None = None
    protect_seconds = combine_seconds = 0.0
    blob_bytes = 0
    for _ in range(clients):
        update = _update(rng, size)
        exact += update
        tensors = [chunk.tolist() for chunk in np.split(update, np.cumsum(sizes)[:-1])]
        start = _clock()
        blobs = [ts.ckks_vector(client_context, tensor).serialize() for tensor in tensors]
        protect_seconds += _clock() - start
        blob_bytes = sum(len(blob) for blob in blobs)
        start = _clock()
        vectors = [ts.ckks_vector_from(aggregator_context, blob) for blob in blobs]
        if accumulator is None:
            accumulator = vectors
        else:
            for total, vector in zip(accumulator, vectors, strict=True):
                total.add_(vector)
        combine_seconds += _clock() - start
    assert accumulator is not None
    start = _clock()
    aggregate = [vector.serialize() for vector in accumulator]
    combine_seconds += _clock() - start
    decrypted = np.concatenate(
        [np.asarray(ts.ckks_vector_from(secret, blob).decrypt()) for blob in aggregate]
    )
    return {
        "clients_timed": clients,
        "client_encrypt_serialize_seconds": protect_seconds / clients,
        "bytes_per_client": blob_bytes,
        "expansion_over_float32": blob_bytes / (4 * size),
        "aggregator_combine_seconds_per_client": combine_seconds / clients,
        "max_abs_error_of_timed_sum": float(np.max(np.abs(decrypted - exact))),
    }


def _committee_spec(text: str) -> tuple[int, int]:
    size, _, threshold = text.partition(":")
    return int(size), int(threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--baseline-clients", type=int, default=3)
    parser.add_argument(
        "--committees", type=_committee_spec, nargs="*", default=[(3, 3), (3, 2), (5, 5), (5, 4)]
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the TenSEAL baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="process: CPU seconds"
    )
    args = parser.parse_args()
    global _clock
    _clock = CLOCKS[args.clock]
    results = []
    with _stdout_to_stderr():
        for size in args.sizes:
            timed = args.baseline_clients
            if not args.no_baseline:
                public = bench_baseline(size, timed, args.seed, symmetric=False)
                symmetric = bench_baseline(size, timed, args.seed, symmetric=True)
            for clients in args.clients:
                ours = bench_ours(size, clients, args.seed)
                entry: dict[str, Any] = {"parameters": size, "clients": clients, "ours": ours}
                if not args.no_baseline:
                    ratios = {
                        "bytes_vs_symmetric": ours["bytes_per_client"]
                        / symmetric["bytes_per_client"],
                        "encrypt_vs_public": ours["client_encrypt_serialize_seconds"]
                        / public["client_encrypt_serialize_seconds"],
                        "combine_vs_public": ours["aggregator_combine_seconds_per_client"]
                        / public["aggregator_combine_seconds_per_client"],
                    }
                    entry |= {
                        "baseline_public_key": public,
                        "baseline_symmetric": symmetric,
                        "ratios": ratios,
                        "targets_met": {
                            "bytes_le_0.5x_symmetric": ratios["bytes_vs_symmetric"] <= 0.5,
                            "encrypt_le_0.5x_public": ratios["encrypt_vs_public"] <= 0.5,
                            "combine_le_0.5x_public": ratios["combine_vs_public"] <= 0.5,
                            "error_le_1e-6": ours["max_abs_error"] <= 1e-6,
                        },
                    }
                entry["committees"] = [
                    bench_committee(size, clients, args.seed, committee_size=k, threshold=t)
                    for k, t in args.committees
                ]
                results.append(entry)
                print(json.dumps(results[-1]), file=sys.stderr)
    scale = next((r for r in results if (r["parameters"], r["clients"]) == (100_000, 1000)), None)
    targets = {
        f"{args.clock}_round_le_60s_at_n1000_P1e5": None
        if scale is None
        else scale["ours"]["round_seconds"] <= 60.0,
        "error_le_1e-6_all_cases": all(r["ours"]["max_abs_error"] <= 1e-6 for r in results),
    }
    report = {
        "benchmark": "ckks",
        "clock": args.clock,
        "machine": {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
        "results": results,
        "targets": targets,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
