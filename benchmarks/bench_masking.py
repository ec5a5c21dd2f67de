"""Benchmark of pairwise-masking secure aggregation (SecAgg+), all parties in one process.

Prints JSON: for each (n clients, D coordinates, dropout fraction) the per-client and
server seconds, whole-protocol wall seconds (and this process's CPU seconds, which a
shared machine's load does not inflate), bytes per client that took part in every stage
(mean; expansion over a float32 vector for the largest), and the max abs error of the
recovered mean against the plain mean.
Baselines measured in the same run: the ``plain`` scheme on the same updates and one
AES-CTR mask expansion of D words, so the ratios compare across machines; with
``--flower``, Flower's SecAgg+ (``SecAggPlusWorkflow`` and ``secaggplus_mod``, flwr 1.42,
in one process through a minimal in-memory grid) on the same n, D, dropout schedule,
neighbour count k and threshold t, and the speed-up of ours over it.

``--authenticated`` adds, per case, the actively secure variant (ledger-signed keys and
the consistency check). Memory: ``protocol_peak_rss_mib`` is this process's peak resident
set during the protocol alone (Linux: the peak is reset just before it starts and read
just after it ends; elsewhere the process's peak so far), of which ``inputs_mib`` are the
benchmark's inputs (every client's float64 update, held in one process by the
simulation) and about ``masked_inputs_mib`` the masked vectors, which the server's API
receives together; the server's own sum is one vector (streamed combine).
``process_peak_rss_mib`` is the whole process's peak so far.

``--clock process`` judges the time targets on this process's CPU seconds (plus the
workers' with ``--workers``), which other jobs on a shared machine do not inflate; the
default ``wall`` judges them on wall seconds. Both are always reported.

Usage: .venv/bin/python benchmarks/bench_masking.py [--n 10 50 100] [--dims 100000 1000000]
       [--dropouts 0.0 0.1] [--flower] [--authenticated] [--workers 2] [--clock process]
       (Flower: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import resource
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from _memory import peak_rss_mib, reset_peak_rss  # benchmarks/_memory.py
from eth_account import Account

from secagg._scheme import PlainScheme
from secagg.masking import MaskingClient, MaskingParams, MaskingServer, RoundPlan, plan_round
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


_WORKER_CLIENTS: dict[int, MaskingClient] = {}
_WORKER_UPDATES: dict[int, np.ndarray] = {}


def _client_update(seed: int, client: int, n: int, dim: int) -> np.ndarray:
    """Benchmark data of one client (its own generator, so any process can rebuild it)."""
    return np.random.default_rng([seed, client]).normal(0.0, 0.05, dim) / n


def _worker_start(plan: RoundPlan, clients: list[int], seed: int) -> None:
    for client in clients:
        _WORKER_CLIENTS[client] = MaskingClient(plan, client)
        _WORKER_UPDATES[client] = _client_update(seed, client, len(plan.client_ids), plan.dim)


def _worker_call(method: str, messages: dict[int, bytes]) -> tuple[dict, dict, float]:
    """Run one stage for this worker's clients: (replies, seconds per client, CPU seconds)."""
    cpu_start = time.process_time()
    replies, seconds = {}, {}
    for client, message in messages.items():
        start = time.perf_counter()
        args = (message, _WORKER_UPDATES[client]) if method == "masked_input" else (message,)
        if method == "advertise_keys":
            args = ()
        replies[client] = getattr(_WORKER_CLIENTS[client], method)(*args)
        seconds[client] = time.perf_counter() - start
    return replies, seconds, time.process_time() - cpu_start


class _Clients:
    """The clients of one round: in this process, or split over worker processes.

    With workers, each worker process owns a fixed share of the clients (as separate
    machines would); only serialized messages cross process boundaries.
    """

    def __init__(
        self,
        plan: RoundPlan,
        clients: dict[int, MaskingClient],
        meter: _Meter,
        *,
        workers: int,
        seed: int,
        updates: dict[int, np.ndarray],
    ) -> None:
        self.clients, self.meter, self.updates = clients, meter, updates
        self.worker_cpu = 0.0
        self.pools: list[tuple[ProcessPoolExecutor, set[int]]] = []
        ids = list(plan.client_ids)
        for index in range(workers):
            part = ids[index::workers]
            pool = ProcessPoolExecutor(
                max_workers=1, initializer=_worker_start, initargs=(plan, part, seed)
            )
            pool.submit(time.sleep, 0).result()  # start the process before timing
            self.pools.append((pool, set(part)))

    def call(self, method: str, messages: dict[int, bytes]) -> dict[int, bytes]:
        if not self.pools:
            out = {}
            for client, message in messages.items():
                client_object = self.clients[client]
                if method == "advertise_keys":
                    out[client] = self.meter.call(client, client_object.advertise_keys)
                elif method == "masked_input":
                    update = self.updates[client]
                    out[client] = self.meter.call(
                        client, client_object.masked_input, message, update
                    )
                else:
                    out[client] = self.meter.call(client, getattr(client_object, method), message)
            return out
        futures = [
            pool.submit(_worker_call, method, {c: m for c, m in messages.items() if c in part})
            for pool, part in self.pools
        ]
        out = {}
        for future in futures:
            replies, seconds, cpu = future.result()
            out.update(replies)
            for client, value in seconds.items():
                self.meter.seconds[client] += value
            self.worker_cpu += cpu
        return out

    def close(self) -> None:
        for pool, _ in self.pools:
            pool.shutdown()


def run_case(
    params: MaskingParams,
    *,
    n: int,
    dim: int,
    dropout: float,
    seed: int,
    authenticated: bool = False,
    workers: int = 0,
) -> dict:
    """One round with ``dropout * n`` clients lost: half before masked input, half before unmask.

    ``authenticated``: the actively secure variant (ledger accounts, signed advertisements,
    consistency check); account creation is not timed. ``workers``: run the clients in that
    many worker processes (each owns a fixed share of them; messages cross as bytes), the
    server in this one; CPU seconds then add the workers' CPU time.
    """
    if workers and authenticated:
        raise ValueError("--workers runs the honest-but-curious variant only")
    ids = list(range(n))  # benchmark data: numpy generators; masks come from AES-CTR
    accounts = {c: Account.create() for c in ids} if authenticated else {}
    registry = {c: str(a.address) for c, a in accounts.items()} if authenticated else None
    updates = {c: _client_update(seed, c, n, dim) for c in ids}
    dropped = math.ceil(dropout * n)
    before_input = set(ids[: (dropped + 1) // 2])
    before_unmask = set(ids[(dropped + 1) // 2 : dropped])
    meter = _Meter()
    server_party = "server"

    def send(messages: dict[int, bytes], direction: dict[object, int]) -> dict[int, bytes]:
        for client, message in messages.items():
            direction[client] += len(message)
        return messages

    plan = plan_round(params, round_id=1, client_ids=ids, dim=dim)
    pool = _Clients(plan, {}, meter, workers=workers, seed=seed, updates=updates)
    peak_reset = reset_peak_rss()
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    plan = meter.call(server_party, lambda: plan_round(params, round_id=1, client_ids=ids, dim=dim))
    server = MaskingServer(plan, registry=registry)
    if not workers:
        pool.clients = {
            c: MaskingClient(plan, c, account=accounts.get(c), registry=registry) for c in ids
        }
    clients = pool.clients
    adverts = send(pool.call("advertise_keys", dict.fromkeys(ids, b"")), meter.up)
    meter.call(server_party, server.collect, server.receive_advertise, adverts)
    broadcasts = send(meter.call(server_party, server.broadcast_keys), meter.down)
    uploads = send(pool.call("share_keys", broadcasts), meter.up)
    meter.call(server_party, server.collect, server.receive_share_keys, uploads)
    deliveries = meter.call(server_party, server.deliver_shares)
    senders = [c for c in deliveries if c not in before_input]
    blobs = send(
        pool.call("masked_input", send({c: deliveries[c] for c in senders}, meter.down)),
        meter.up,
    )
    meter.call(server_party, server.receive_masked_inputs, blobs)
    online = [c for c in senders if c not in before_unmask]
    if authenticated:
        checks = send(meter.call(server_party, server.consistency_requests, online), meter.down)
        signatures = send(
            {c: meter.call(c, clients[c].sign_survivors, r) for c, r in checks.items()}, meter.up
        )
        meter.call(server_party, server.collect, server.receive_consistency, signatures)
        proofs = send(meter.call(server_party, server.consistency_proofs), meter.down)
        for c, proof in proofs.items():
            meter.call(c, clients[c].check_consistency, proof)
    requests = send(meter.call(server_party, server.unmask_requests, online), meter.down)
    responses = send(pool.call("unmask", requests), meter.up)
    meter.call(server_party, server.collect, server.receive_unmask_response, responses)
    recovered = meter.call(server_party, server.finish)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start + pool.worker_cpu
    protocol_peak = peak_rss_mib()
    pool.close()

    included = server.included
    plain_mean = np.zeros(dim)
    for client in included:  # a running sum: no n x D array
        plain_mean += updates[client]
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
        "authenticated": authenticated,
        "client_worker_processes": workers,
        "protocol_peak_rss_mib": protocol_peak,
        "protocol_peak_is_protocol_only": peak_reset,
        "inputs_mib": sum(u.nbytes for u in updates.values()) / 2**20,
        "masked_inputs_mib": sum(len(b) for b in blobs.values()) / 2**20,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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


def run_flower_case(
    *, n: int, dim: int, dropout: float, seed: int, degree: int, threshold: int
) -> dict:
    """Flower's SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) in one process.

    A minimal in-process grid hands each message to the addressed client's mod stack and
    returns its reply; dropped clients simply do not reply from their stage on (the same
    dropout schedule as :func:`run_case`). Same neighbour count ``k`` and threshold ``t``.
    """
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.common.secure_aggregation.secaggplus_constants import Stage as FlowerStage
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 0, 0, 0

    rng = np.random.default_rng(seed)
    node_ids = list(range(1, n + 1))
    updates = {nid: (rng.normal(0.0, 0.05, dim) / n) for nid in node_ids}
    dropped = math.ceil(dropout * n)
    before_input = set(node_ids[: (dropped + 1) // 2])
    before_unmask = set(node_ids[(dropped + 1) // 2 : dropped])
    contexts = {nid: Context(0, nid, {}, RecordDict(), {}) for nid in node_ids}

    class _Proxy(ClientProxy):  # only node ids are used by the workflow
        def get_properties(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        get_parameters = fit = evaluate = reconnect = get_properties

    def train(msg: Message, context: Context) -> Message:
        nid = msg.metadata.dst_node_id
        parameters = ndarrays_to_parameters([updates[nid]])
        fitres = FitRes(Status(Code.OK, ""), parameters, 1, {})
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    class _InProcessGrid:
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            replies = []
            for index, sent in enumerate(messages):
                # A real transport serializes each message; copying stands in for that (the
                # workflow shares one content object between messages, and the mod pops keys).
                msg = copy.deepcopy(sent)
                nid = msg.metadata.dst_node_id
                stage = msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]
                if nid in before_input and stage in (
                    FlowerStage.COLLECT_MASKED_VECTORS,
                    FlowerStage.UNMASK,
                ):
                    continue
                if nid in before_unmask and stage == FlowerStage.UNMASK:
                    continue
                msg.metadata.__dict__["_message_id"] = f"{stage}-{nid}-{index}"
                replies.append(secaggplus_mod(msg, contexts[nid], train))
            return replies

    manager = SimpleClientManager()
    for nid in node_ids:
        proxy = _Proxy(str(nid))
        proxy.node_id = nid
        manager.register(proxy)
    strategy = FedAvg(min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0)
    state = RecordDict()
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros(dim)]), keep_input=True
    )
    context = LegacyContext(Context(0, 0, {}, state, {}), strategy=strategy, client_manager=manager)
    # Our clip range (1.0) and unit weights; Flower's default max_weight=1000 would scale
    # each update by 1/1000 before quantizing and drown it in quantization error.
    workflow = SecAggPlusWorkflow(
        num_shares=degree + 1,
        reconstruction_threshold=threshold,
        max_weight=1.0,
        clipping_range=1.0,
    )
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    workflow(_InProcessGrid(), context)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    survivors = [nid for nid in node_ids if nid not in before_input]
    result = compat.arrayrecord_to_parameters(
        state.array_records[MAIN_PARAMS_RECORD], keep_input=True
    )
    mean = parameters_to_ndarrays(result)[0]
    expected = np.mean([updates[nid] for nid in survivors], axis=0)
    return {
        "n": n,
        "dim": dim,
        "dropout": dropout,
        "degree_k": degree,
        "threshold_t": threshold,
        "included": len(survivors),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "max_abs_error_of_mean": float(np.max(np.abs(mean - expected))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument(
        "--flower", action="store_true", help="also run Flower's SecAgg+ on each case"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the clients in this many worker processes (default: all in this one)",
    )
    parser.add_argument(
        "--authenticated",
        action="store_true",
        help="also run each case in the actively secure variant (ledger-signed keys)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="judge the time targets on wall seconds or on CPU seconds (shared machine)",
    )
    args = parser.parse_args()
    seconds_key = "wall_seconds" if args.clock == "wall" else "cpu_seconds"
    params = MaskingParams()
    cases = []
    for index, (n, dim, dropout) in enumerate(
        (n, dim, dropout) for n in args.n for dim in args.dims for dropout in args.dropouts
    ):
        case = run_case(params, n=n, dim=dim, dropout=dropout, seed=index, workers=args.workers)
        if args.flower:
            logging.getLogger("flwr").setLevel(logging.ERROR)
            flower = run_flower_case(
                n=n,
                dim=dim,
                dropout=dropout,
                seed=index,
                degree=case["degree_k"],
                threshold=case["threshold_t"],
            )
            case["flower"] = flower
            case["speedup_over_flower_wall"] = flower["wall_seconds"] / case["wall_seconds"]
            case["speedup_over_flower_cpu"] = flower["cpu_seconds"] / case["cpu_seconds"]
        if args.authenticated:
            case["authenticated_case"] = run_case(
                params, n=n, dim=dim, dropout=dropout, seed=index, authenticated=True
            )
        cases.append(case)

    def find(n: int, dim: int, dropout: float) -> dict | None:
        return next(
            (c for c in cases if (c["n"], c["dim"], c["dropout"]) == (n, dim, dropout)), None
        )

    expansion_case = find(100, 1_000_000, 0.1) or find(100, 1_000_000, 0.0)
    wall_case = find(100, 100_000, 0.1)
    scale_case = find(1000, 100_000, 0.05)
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
        "speedup_ge_4_over_flower_at_n100_D1e5_dropout0.1": None
        if wall_case is None or "flower" not in wall_case
        else wall_case["speedup_over_flower_cpu"] >= 4.0,
        f"{args.clock}_le_60s_at_n1000_D1e5_dropout0.05": None
        if scale_case is None
        else scale_case[seconds_key] <= 60.0,
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
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min": os.getloadavg()[0],
        },
        "clock": args.clock,
        "cases": cases,
        "targets": targets,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
