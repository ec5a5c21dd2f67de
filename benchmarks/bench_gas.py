"""Gas figures of the consortium ledger, printed as JSON.

Measures deploy gas; gas and wall seconds of every phase of a round (open, commit,
reveal, publish, release = reserve + attest, finalize); gas per client per round for direct
commits (+ the one reveal transaction per client of the commit/reveal split) and for
batched EIP-712 signed commits (no reveal transaction: publication marks the participants
revealed) at n in {1, 5, 8, 32, 64, 100}; and a baseline measured in the same run: a plain
storage-mapping commit (PlainCommitBaseline: one fresh slot per commit, no role, selection,
deadline or budget checks).

Merkle (optimistic) rounds are measured beside them at ``--merkle-sizes`` (default 5, 10,
100, 1000), every transaction of the round counted: without a release (plain, masking: the
aggregator's opening with the root, its publication) and with the CKKS key holder's release
(the opening with the root, the key holder's one transaction that publishes the
aggregator's signed publication and reserves the release, its attestation). Each
transaction is broken down into the 21,000 intrinsic gas, calldata gas and the execution
rest. The lazy settlement of reputation after the challenge window
(``finalizeOptimisticRoundBatch``, any account, any time later) is reported beside the
round, per client per round, for one round per transaction (k = 1) and for k =
``SETTLE_BATCH`` rounds with the same selected list in one transaction (each client's
reputation written once for all of them; at n <= 100); the round with its release and its
share of a k-round settlement is checked against the same goals. Each challenge type's gas
is measured (upheld), and the goals (whole round <= 3,000 gas per client at n = 100,
<= 30,000 at n = 5) are printed as booleans, with and without the release.

Every figure is receipt ``gasUsed``, which INCLUDES the 21,000 intrinsic gas of a
transaction. Per-client batched figures are given three ways: total/n, (total - 21,000)/n,
and (total - fixed)/n where ``fixed`` is the intercept of a least-squares line through
(n, total); the slope is the marginal gas of one more client in a batch.

Gas is deterministic for a given EVM fork; the numbers do not depend on machine speed.
Seconds are wall time of the web3.py calls (signing, estimation, mining) on this machine;
they depend on the machine and backend, gas does not.
Usage: python benchmarks/bench_gas.py [--backend anvil|inprocess] [--sizes 1,5,8,32,64,100]
       [--merkle-sizes 5,10,100,1000]
Direct and batched rounds are not run above n = 100 (2n transactions per direct round; the
n = 1000 row is merkle only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eth_account import Account
from eth_utils import keccak
from hexbytes import HexBytes

from chain import (
    EMPTY_LEAF,
    AnvilBackend,
    InProcessBackend,
    LeafSet,
    Ledger,
    Role,
    find_anvil,
    load_artifact,
)
from chain._ledger import send_signed
from chain._types import SignedCommit, TxResult

DIRECT_TARGET = 40_000
BATCH_TARGET_PER_CLIENT = 10_000
BATCH_TARGET_N = 64
MERKLE_GOALS = {100: 3_000, 5: 30_000}  # whole-round gas per client, at n
MERKLE_WINDOW = 3
SETTLE_BATCH = 10  # rounds settled in one transaction (amortized settlement)
SETTLE_BATCH_MAX_N = 100  # k rounds of n signed leaves each: kept small
MERKLE_PHASE_BLOCKS = 5  # the leaves are signed off chain: no block passes before the root
REGISTER_CHUNK = 250
INTRINSIC_GAS = 21_000


def _fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    return slope, intercept


def _baseline(backend: Any, n: int) -> dict[str, Any]:
    art = load_artifact("PlainCommitBaseline")
    w3 = backend.w3
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    admin = backend.faucet
    receipt = send_signed(
        w3, admin, factory.constructor().build_transaction({"from": admin.address})
    )
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])
    users = [Account.create() for _ in range(n)]
    backend.fund([u.address for u in users], 10**17)
    gas = []
    for i, u in enumerate(users):
        fn = contract.functions.commit(1, keccak(text=f"b{i}"), keccak(text=f"e{i}"), 1_500_000 + i)
        tx = fn.build_transaction({"from": u.address, "gas": 200_000})
        gas.append(int(send_signed(w3, u, tx)["gasUsed"]))
    return {"deploy_gas": int(receipt["gasUsed"]), "commit_gas_mean": statistics.fmean(gas)}


@contextmanager
def _timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[phase] = time.perf_counter() - start


def _tx_breakdown(backend: Any, tx: TxResult) -> dict[str, int]:
    """One transaction's gas: the 21,000 intrinsic, its calldata (4 per zero byte, 16 per
    other byte) and the execution rest (storage, logs, hashing, signature checks)."""
    data = bytes(backend.w3.eth.get_transaction(HexBytes(tx.tx_hash))["input"])
    calldata = sum(4 if b == 0 else 16 for b in data)
    return {
        "gas": tx.gas_used,
        "intrinsic": INTRINSIC_GAS,
        "calldata": calldata,
        "execution": tx.gas_used - INTRINSIC_GAS - calldata,
    }


def _open_merkle(
    ledger: Ledger,
    aggregator: Any,
    members: list[Any],
    round_id: int,
    leaves: dict[str, SignedCommit],
) -> tuple[TxResult, LeafSet]:
    """Open a merkle round with the root of ``leaves`` (signed before the opening)."""
    clients = tuple(sorted((c.address for c in members), key=lambda a: int(a, 16)))
    leaf_set = LeafSet(
        round_id=round_id,
        chain_id=ledger.chain_id,
        contract=ledger.address,
        clients=clients,
        leaves=tuple(leaves.get(c) for c in clients),
    )
    opened = ledger.open_merkle_round(
        leaf_set,
        config_digest=keccak(text=f"cfg{round_id}"),
        leaves_digest=keccak(leaf_set.canonical_bytes()),
        reveal_deadline=ledger.block_number() + MERKLE_PHASE_BLOCKS,
        challenge_window=MERKLE_WINDOW,
        sender=aggregator,
    )
    return opened, leaf_set


def _merkle_round(
    ledger: Ledger,
    backend: Any,
    aggregator: Any,
    key_holder: Any,
    members: list[Any],
    round_id: int,
) -> dict[str, Any]:
    """Two merkle rounds over ``members`` (every one signs), with gas per transaction: one
    without a release (plain, masking: open with the root, publication) and one with the
    key holder's (CKKS: open with the root, the key holder's publish-and-reserve carrying
    the aggregator's signed publication, the attestation)."""
    txs: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = {}
    for release in (False, True):
        rid = round_id + (1 if release else 0)
        start = time.perf_counter()
        signed = {
            c.address: ledger.sign_commit(
                c,
                round_id=rid,
                manifest_digest=keccak(text=f"cfg{rid}"),
                blob_digest=keccak(text=f"b{rid}.{i}"),
                event_digest=keccak(text=f"e{rid}.{i}"),
                epsilon=1.0 + i / 1000,
            )
            for i, c in enumerate(members)
        }
        seconds["sign_all"] = time.perf_counter() - start
        start = time.perf_counter()
        opened, leaf_set = _open_merkle(ledger, aggregator, members, rid, signed)
        seconds["open_with_root"] = time.perf_counter() - start
        agg = keccak(text=f"agg{rid}")
        if not release:
            published = ledger.publish_merkle(
                rid, aggregate_digest=agg, participants=list(leaf_set.clients), sender=aggregator
            )
            txs["open_with_root"] = _tx_breakdown(backend, opened)
            txs["publish"] = _tx_breakdown(backend, published)
            continue
        publication = ledger.sign_publication(
            rid, aggregate_digest=agg, participants=list(leaf_set.clients), account=aggregator
        )
        reserved = ledger.publish_and_reserve(publication, sender=key_holder)
        attested = ledger.attest_reveal(
            rid, reveal_digest=keccak(text=f"rev{rid}"), sender=key_holder
        )
        txs["open_with_root_ckks"] = _tx_breakdown(backend, opened)
        txs["publish_and_reserve"] = _tx_breakdown(backend, reserved)
        txs["attest"] = _tx_breakdown(backend, attested)
        ledger.advance_past(ledger.round_info(rid).challenge_deadline or 0)
        settled = ledger.settle_reputation(rid, sender=key_holder)
        txs["settle"] = _tx_breakdown(backend, settled)
    n = len(members)
    no_release = txs["open_with_root"]["gas"] + txs["publish"]["gas"]
    release_txs = ("open_with_root_ckks", "publish_and_reserve", "attest")
    with_release = sum(txs[k]["gas"] for k in release_txs)
    return {
        "n": n,
        "transactions": txs,
        "round_gas_no_release": no_release,
        "round_gas_with_release": with_release,
        "transactions_per_round": {"no_release": 2, "with_release": 3},
        "per_client_no_release": round(no_release / n, 1),
        "per_client_with_release": round(with_release / n, 1),
        "per_client_with_release_and_settlement": round(
            (with_release + txs["settle"]["gas"]) / n, 1
        ),
        "settle_gas_per_client": round(txs["settle"]["gas"] / n, 1),
        "client_transactions_per_client": 0,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def _batch_settlement(
    ledger: Ledger, backend: Any, aggregator: Any, members: list[Any], round_id: int, k: int
) -> dict[str, Any]:
    """``k`` published merkle rounds over ``members`` (every one signs) settled in ONE
    transaction after their windows: the settlement's gas per client per round."""
    rounds = []
    for rid in range(round_id, round_id + k):
        signed = {
            c.address: ledger.sign_commit(
                c,
                round_id=rid,
                manifest_digest=keccak(text=f"cfg{rid}"),
                blob_digest=keccak(text=f"b{rid}.{i}"),
                event_digest=keccak(text=f"e{rid}.{i}"),
                epsilon=1.0,
            )
            for i, c in enumerate(members)
        }
        _, leaf_set = _open_merkle(ledger, aggregator, members, rid, signed)
        ledger.publish_merkle(
            rid,
            aggregate_digest=keccak(text=f"agg{rid}"),
            participants=list(leaf_set.clients),
            sender=aggregator,
        )
        rounds.append(rid)
    ledger.advance_past(max(ledger.round_info(r).challenge_deadline or 0 for r in rounds))
    (settled,) = ledger.settle_reputations(rounds, sender=aggregator)
    return {
        "k": k,
        "transaction": _tx_breakdown(backend, settled),
        "per_client_per_round": round(settled.gas_used / (k * len(members)), 1),
    }


def _challenge_gas(
    ledger: Ledger, aggregator: Any, watcher: Any, members: list[Any], round_id: int
) -> dict[str, int]:
    """Gas of each challenge type, upheld, in a round over ``members``: the aggregator
    leaves client 0 out (omission), client 1 claims over the budget (over budget) and
    signs twice (equivocation)."""
    config = keccak(text=f"cfg{round_id}")
    clients = sorted((c.address for c in members), key=lambda a: int(a, 16))
    by_address = {c.address: c for c in members}

    def sign(address: str, epsilon: float, tag: str = "") -> Any:
        return ledger.sign_commit(
            by_address[address],
            round_id=round_id,
            manifest_digest=config,
            blob_digest=keccak(text=f"b{round_id}.{address}{tag}"),
            event_digest=keccak(text=f"e{round_id}.{address}"),
            epsilon=epsilon,
        )

    censored, greedy = clients[0], clients[1]
    leaves = {c: sign(c, 1.0) for c in clients[2:]}
    leaves[greedy] = sign(greedy, 100.0)
    _, leaf_set = _open_merkle(ledger, aggregator, members, round_id, leaves)
    tree = leaf_set.tree()
    omission = ledger.challenge_omission(
        round_id, leaf=sign(censored, 1.0), at_index=EMPTY_LEAF, proof=tree.proof(0), sender=watcher
    )
    over = ledger.challenge_over_budget(
        round_id, leaf=leaves[greedy], proof=tree.proof(1), sender=watcher
    )
    equivocation = ledger.challenge_equivocation(
        round_id, first=leaves[greedy], second=sign(greedy, 100.0, "x"), sender=watcher
    )
    return {
        "n": len(members),
        "omission": omission.gas_used,
        "over_budget": over.gas_used,
        "equivocation": equivocation.gas_used,
    }


def run_merkle(backend: Any, sizes: list[int]) -> dict[str, Any]:
    """Merkle rounds at ``sizes``: clients only sign (they need no funds)."""
    admin = backend.faucet
    aggregator, key_holder = Account.create(), Account.create()
    backend.fund([aggregator.address, key_holder.address], 10**21)
    ledger = Ledger.deploy(backend, admin=admin, epsilon_budget=8.0)
    ledger.register(Role.AGGREGATOR, aggregator.address, sender=admin)
    ledger.register(Role.KEY_HOLDER, key_holder.address, sender=admin)
    pool = [Account.create() for _ in range(max(sizes))]
    for k in range(0, len(pool), REGISTER_CHUNK):
        chunk = pool[k : k + REGISTER_CHUNK]
        ledger.register(Role.CLIENT, [c.address for c in chunk], sender=admin)
    rows = [
        _merkle_round(ledger, backend, aggregator, key_holder, pool[:n], 10_000 + n) for n in sizes
    ]
    for row in rows:
        n = row["n"]
        if n > SETTLE_BATCH_MAX_N:
            continue
        batch = _batch_settlement(
            ledger, backend, aggregator, pool[:n], 20_000 + 100 * n, SETTLE_BATCH
        )
        per_round = batch["per_client_per_round"]
        row["settlement"] = {
            "k1_per_client_per_round": row["settle_gas_per_client"],
            f"k{SETTLE_BATCH}": batch,
            f"k{SETTLE_BATCH}_per_client_per_round": per_round,
        }
        row[f"per_client_with_release_and_settlement_k{SETTLE_BATCH}"] = round(
            row["per_client_with_release"] + per_round, 1
        )
    challenge_n = max((n for n in sizes if n <= 100), default=min(sizes))
    challenges = _challenge_gas(ledger, aggregator, key_holder, pool[: max(challenge_n, 2)], 9_999)
    goals: dict[str, Any] = {}
    for n, limit in MERKLE_GOALS.items():
        row = next((r for r in rows if r["n"] == n), None)
        goals[f"n={n}"] = {
            "limit_per_client": limit,
            "measured": row is not None,
            "per_client_no_release": row and row["per_client_no_release"],
            "per_client_with_release": row and row["per_client_with_release"],
            "pass_no_release": bool(row and row["per_client_no_release"] <= limit),
            "pass_with_release": bool(row and row["per_client_with_release"] <= limit),
        }
        amortized = row and row.get(f"per_client_with_release_and_settlement_k{SETTLE_BATCH}")
        goals[f"n={n}"] |= {
            f"per_client_with_release_and_settlement_k{SETTLE_BATCH}": amortized,
            f"pass_with_release_and_settlement_k{SETTLE_BATCH}": bool(
                amortized and amortized <= limit
            ),
        }
    goals["all_pass"] = all(g["pass_no_release"] and g["pass_with_release"] for g in goals.values())
    goals[f"all_pass_with_settlement_k{SETTLE_BATCH}"] = all(
        g[f"pass_with_release_and_settlement_k{SETTLE_BATCH}"]
        for key, g in goals.items()
        if key.startswith("n=")
    )
    return {
        "deploy_gas": ledger.deploy_gas,
        "challenge_window_blocks": MERKLE_WINDOW,
        "rows": rows,
        "challenge_gas": challenges,
        "goals": goals,
    }


def run(backend: Any, sizes: list[int]) -> dict[str, Any]:
    admin = backend.faucet
    aggregator, key_holder = Account.create(), Account.create()
    backend.fund([aggregator.address, key_holder.address], 10**21)
    ledger = Ledger.deploy(backend, admin=admin, epsilon_budget=8.0)
    ledger.register(Role.AGGREGATOR, aggregator.address, sender=admin)
    ledger.register(Role.KEY_HOLDER, key_holder.address, sender=admin)
    pool = [Account.create() for _ in range(max(sizes))]
    backend.fund([c.address for c in pool], 10**17)
    ledger.register(Role.CLIENT, [c.address for c in pool], sender=admin)

    baseline = _baseline(backend, 8)
    direct_rows, batched_rows = [], []
    round_id = 0
    for n in sizes:
        members = pool[:n]
        for batched in (False, True):
            round_id += 1
            config = keccak(text=f"cfg{round_id}")
            seconds: dict[str, float] = {}
            with _timed(seconds, "open"):
                opened = ledger.open_round(
                    round_id,
                    config_digest=config,
                    clients=[c.address for c in members],
                    deadline=ledger.block_number() + 10_000,
                    batched=batched,
                    sender=aggregator,
                )
            start = time.perf_counter()
            if batched:
                signed = [
                    ledger.sign_commit(
                        c,
                        round_id=round_id,
                        manifest_digest=config,
                        blob_digest=keccak(text=f"b{round_id}.{i}"),
                        event_digest=keccak(text=f"e{round_id}.{i}"),
                        epsilon=1.0 + i / 1000,
                    )
                    for i, c in enumerate(members)
                ]
                commit_gas = [ledger.commit_batch(round_id, signed, sender=aggregator).gas_used]
            else:
                commit_gas = [
                    ledger.commit(
                        round_id,
                        manifest_digest=config,
                        blob_digest=keccak(text=f"b{round_id}.{i}"),
                        event_digest=keccak(text=f"e{round_id}.{i}"),
                        epsilon=1.0 + i / 1000,
                        sender=c,
                    ).gas_used
                    for i, c in enumerate(members)
                ]
            seconds["commit"] = time.perf_counter() - start
            start = time.perf_counter()
            # Every client committed, so the reveal phase is open. Direct rounds: one reveal
            # transaction per client; batched rounds: none (publication marks them).
            reveal_gas = (
                [] if batched else [ledger.reveal(round_id, sender=c).gas_used for c in members]
            )
            seconds["reveal"] = time.perf_counter() - start
            with _timed(seconds, "publish"):
                published = ledger.publish_aggregate(
                    round_id,
                    aggregate_digest=keccak(text=f"agg{round_id}"),
                    participants=[c.address for c in members],
                    sender=aggregator,
                )
            start = time.perf_counter()
            reserved = ledger.reserve_release(round_id, sender=key_holder)
            attested = ledger.attest_reveal(
                round_id, reveal_digest=keccak(text=f"rev{round_id}"), sender=key_holder
            )
            seconds["release"] = time.perf_counter() - start
            with _timed(seconds, "finalize"):
                finalized = ledger.finalize(round_id, sender=aggregator)
            phases = {
                "open": opened.gas_used,
                "commit": sum(commit_gas),
                "reveal": sum(reveal_gas),
                "publish": published.gas_used,
                "release": reserved.gas_used + attested.gas_used,
                "finalize": finalized.gas_used,
            }
            row: dict[str, Any] = {
                "n": n,
                "open_gas": opened.gas_used,
                "publish_gas": published.gas_used,
                "release_gas": phases["release"],
                "finalize_gas": finalized.gas_used,
                "phase_gas": phases,
                "phase_seconds": {k: round(v, 4) for k, v in seconds.items()},
                "round_gas_total": sum(phases.values()),
                "client_transactions_per_client": 0 if batched else 2,
            }
            if batched:
                total = commit_gas[0]
                row |= {
                    "batch_tx_gas": total,
                    "per_client_total": round(total / n, 1),
                    "per_client_net_of_intrinsic": round((total - 21_000) / n, 1),
                    "reveal_transactions": 0,
                }
                batched_rows.append(row)
            else:
                row |= {
                    "commit_gas_mean": statistics.fmean(commit_gas),
                    "commit_gas_max": max(commit_gas),
                    "commit_gas_net_of_intrinsic": statistics.fmean(commit_gas) - 21_000,
                    "reveal_gas_mean": statistics.fmean(reveal_gas),
                    "reveal_gas_max": max(reveal_gas),
                    "reveal_transactions": len(reveal_gas),
                    "commit_plus_reveal_per_client": statistics.fmean(commit_gas)
                    + statistics.fmean(reveal_gas),
                }
                direct_rows.append(row)

    slope, intercept = _fit([(r["n"], r["batch_tx_gas"]) for r in batched_rows])
    for r in batched_rows:
        r["per_client_net_of_fixed"] = round((r["batch_tx_gas"] - intercept) / r["n"], 1)
    open_slope_direct, open_fixed_direct = _fit([(r["n"], r["open_gas"]) for r in direct_rows])
    open_slope_batched, open_fixed_batched = _fit([(r["n"], r["open_gas"]) for r in batched_rows])
    fin_slope, fin_fixed = _fit([(r["n"], r["finalize_gas"]) for r in batched_rows])
    direct_max = max(r["commit_gas_max"] for r in direct_rows)
    reveal_max = max(r["reveal_gas_max"] for r in direct_rows)
    at_target = next((r for r in batched_rows if r["n"] == BATCH_TARGET_N), None)
    return {
        "benchmark": "gas",
        "backend": backend.name,
        "chain_id": backend.chain_id,
        "gas_includes_21k_intrinsic": True,
        "deploy_gas": ledger.deploy_gas,
        "baseline_plain_mapping_commit": baseline,
        "direct": direct_rows,
        "batched": batched_rows,
        "fits": {
            "batch_marginal_gas_per_client": round(slope, 1),
            "batch_fixed_gas_per_tx": round(intercept, 1),
            "open_direct_fixed": round(open_fixed_direct, 1),
            "open_direct_per_client": round(open_slope_direct, 1),
            "open_batched_fixed": round(open_fixed_batched, 1),
            "open_batched_per_client": round(open_slope_batched, 1),
            "finalize_fixed": round(fin_fixed, 1),
            "finalize_per_client": round(fin_slope, 1),
        },
        "ratios_vs_baseline": {
            "direct_commit": round(direct_max / baseline["commit_gas_mean"], 3),
            "batched_marginal_per_client": round(slope / baseline["commit_gas_mean"], 3),
        },
        "targets": {
            "direct_commit_max_gas": direct_max,
            "direct_commit_le_40k": direct_max <= DIRECT_TARGET,
            "direct_reveal_max_gas": reveal_max,
            "extra_transactions_per_client_direct": 1,
            "extra_transactions_per_client_batched": 0,
            "batched_per_client_total_at_64": at_target and at_target["per_client_total"],
            "batched_le_10k_per_client_at_64": bool(
                at_target and at_target["per_client_total"] <= BATCH_TARGET_PER_CLIENT
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the gas benchmark and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["anvil", "inprocess"], default=None)
    parser.add_argument("--sizes", default="1,5,8,32,64,100")
    parser.add_argument("--merkle-sizes", default="5,10,100,1000")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    merkle_sizes = sorted({int(s) for s in args.merkle_sizes.split(",") if s})
    if min(sizes + merkle_sizes, default=1) < 1 or max(merkle_sizes, default=1) > 4096:
        parser.error("--sizes and --merkle-sizes must be integers in [1, 4096]")
    if sizes and max(sizes) > 100:
        parser.error("--sizes (direct and batched) stops at 100; use --merkle-sizes above")
    name = args.backend or ("anvil" if find_anvil() else "inprocess")
    backend = AnvilBackend() if name == "anvil" else InProcessBackend()
    with backend:
        result = run(backend, sizes) if sizes else {"benchmark": "gas", "backend": backend.name}
        if merkle_sizes:
            result["merkle"] = run_merkle(backend, merkle_sizes)
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
