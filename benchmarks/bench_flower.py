"""Benchmark of the Flower transport's overhead per round over the in-process one, as JSON.

The same deployed federation (``deploy.RoundDriver``: n hospitals and a key holder, a real
anvil ledger, the same sites) runs twice in one process: over the in-process transport, and
over Flower 1.42's simulation engine (Ray, one actor). Reported per transport: the wall
seconds of the whole run, of the rounds alone (the run minus the join, the ledger deployment
and the simulation engine's start), and per round; then the Flower transport's overhead per
round (seconds and ratio) and the bytes the driver sent and received per round.

Then (``masking_vs_secaggplus``) one secure aggregation of n clients' D-dimensional updates
with 10% dropout (half lost before their masked input, half before the unmask stage), on
Flower's simulation engine both times (n SuperNodes, one Ray actor): our pairwise masking
(``deploy.RemoteMaskingSession`` over :class:`~deploy.FlowerTransport`; each client a
``MaskingClient`` whose state is restored from and saved to its node's ``Context.state`` at
every message) against Flower's own SecAgg+ (``SecAggPlusWorkflow`` in a ``DefaultWorkflow``
and ``secaggplus_mod``), with the same k neighbours, threshold t, clip range and unit
weights. Both run honest-but-curious (Flower's SecAgg+ has no signed keys). Reported per
protocol: wall seconds and CPU seconds (this process and every process under it: the Ray
actor that runs the clients included) of the protocol alone, bytes each client sent and
received (serialized ``RecordDict``s, counted at the ServerApp's grid; both receive the
global model, D float64, with their masked-input request, as Flower's fit message carries
it), also as multiples of one float32 vector (4 D bytes), and the max error of the mean;
then the goals (time at most 0.5x Flower's, bytes per client at most 1.1x).
``--authenticated`` adds ours as deployed (ledger-signed keys, the consistency check), for
reference: Flower's SecAgg+ has no such variant.

Usage: ``.venv/bin/python benchmarks/bench_flower.py [--clients 10] [--rounds 3]
[--scheme plain|ckks] [--parts overhead compare] [--n 50] [--dim 100000] [--dropout 0.1]
[--authenticated]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import torch

from chain import AnvilBackend
from deploy import (
    DeploymentSettings,
    HospitalSite,
    InProcessTransport,
    KeyHolderSite,
    RoundDriver,
    SitePolicy,
    Transport,
)


class _TimedDriver(RoundDriver):
    """Records when the first round starts (after join and ledger deployment)."""

    rounds_started: float | None = None

    def run_round(self, round_id: int, params: Any) -> Any:
        if self.rounds_started is None:
            self.rounds_started = time.perf_counter()
        return super().run_round(round_id, params)


def _settings(url: str, clients: int, rounds: int, scheme: str, out: Path) -> DeploymentSettings:
    committee = ("secagg.committee_size=1", "secagg.committee_threshold=1")
    return DeploymentSettings(
        overrides=(
            "dataset=synthetic",
            "dataset.n_samples=2000",
            "model=logreg",
            f"federation.clients={clients}",
            f"federation.rounds={rounds}",
            "federation.local_steps=5",
            "dp=off",
            f"secagg={scheme}",
            *(committee if scheme == "ckks" else ()),
            "chain=anvil",
        ),
        ledger_url=url,
        output_dir=out,
        hospitals=clients,
        stage_timeout_s=600.0,
    )


def _run(driver_settings: DeploymentSettings, transport: Transport) -> dict[str, float]:
    start = time.perf_counter()
    driver = _TimedDriver(driver_settings, transport)
    run = driver.run()
    end = time.perf_counter()
    rounds = len(run.results.rounds)
    in_rounds = end - (driver.rounds_started or start)
    return {
        "run_seconds": end - start,
        "rounds_seconds": in_rounds,
        "seconds_per_round": in_rounds / rounds,
        "bytes_sent_per_round": getattr(transport, "bytes_sent", 0) / rounds,
        "bytes_received_per_round": getattr(transport, "bytes_received", 0) / rounds,
    }


def measure(clients: int, rounds: int, scheme: str) -> dict[str, Any]:
    from deploy.flower_app import simulation_backend_config

    results: dict[str, Any] = {}
    with AnvilBackend() as node, tempfile.TemporaryDirectory() as folder:
        url = str(node.public_url)
        sites = {
            100 + p: HospitalSite(partition_id=p, policy=SitePolicy.permissive()).handle
            for p in range(clients)
        }
        sites[1] = KeyHolderSite().handle
        results["inprocess"] = _run(
            _settings(url, clients, rounds, scheme, Path(folder) / "a"), InProcessTransport(sites)
        )
        from flwr.app import Context
        from flwr.serverapp import Grid, ServerApp
        from flwr.simulation import run_simulation

        from deploy import FlowerTransport
        from deploy.flower_app import client_app

        flower: dict[str, float] = {}
        settings = _settings(url, clients, rounds, scheme, Path(folder) / "b")
        app = ServerApp()

        @app.main()
        def main(grid: Grid, context: Context) -> None:
            transport = FlowerTransport(grid)
            transport.wait_for_nodes(settings.nodes, timeout=settings.join_timeout_s)
            flower.update(_run(settings, transport))

        start = time.perf_counter()
        run_simulation(
            server_app=app,
            client_app=client_app,
            num_supernodes=settings.nodes,
            backend_config=simulation_backend_config(),
        )
        flower["engine_seconds"] = time.perf_counter() - start
        results["flower_simulation"] = flower
    local, remote = results["inprocess"], results["flower_simulation"]
    results["flower_overhead"] = {
        "seconds_per_round": remote["seconds_per_round"] - local["seconds_per_round"],
        "ratio_per_round": remote["seconds_per_round"] / local["seconds_per_round"],
    }
    return results


# ------------------------------------------------------- masking vs Flower's SecAgg+
if __name__ != "__main__":  # Flower ships the ClientApps to Ray: send them by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

STATE_RECORD = "bench.masking"


def client_update(seed: int, client: int, n: int, dim: int) -> np.ndarray:
    """One client's benchmark update (its own generator: any process rebuilds it)."""
    return np.random.default_rng([seed, client]).normal(0.0, 0.05, dim) / n


def dropout_schedule(n: int, dropout: float) -> tuple[set[int], set[int]]:
    """Clients lost before their masked input, and before the unmask stage (ids 0..)."""
    dropped = math.ceil(dropout * n)
    return set(range((dropped + 1) // 2)), set(range((dropped + 1) // 2, dropped))


def tree_cpu_seconds() -> float:
    """CPU seconds of this process and every live process under it (Linux ``/proc``)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def message_bytes(message: Any) -> int:
    """Serialized size of a Flower message's content (0 for an error reply)."""
    from flwr.common import serde

    if not message.has_content():
        return 0
    return int(serde.recorddict_to_proto(message.content).ByteSize())


class CountingGrid:
    """A Flower ``Grid`` that counts each node's bytes received (requests) and sent
    (replies); every other call goes to the grid it wraps."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid
        self.to_node: dict[int, int] = defaultdict(int)
        self.from_node: dict[int, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def _sent(self, messages: Iterable[Any]) -> list[Any]:
        listed = list(messages)
        for message in listed:
            self.to_node[int(message.metadata.dst_node_id)] += message_bytes(message)
        return listed

    def _received(self, replies: Iterable[Any]) -> list[Any]:
        listed = list(replies)
        for reply in listed:
            self.from_node[int(reply.metadata.src_node_id)] += message_bytes(reply)
        return listed

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
        return self.grid.push_messages(self._sent(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        return self._received(self.grid.pull_messages(message_ids))

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Any:
        return self._received(self.grid.send_and_receive(self._sent(messages), timeout=timeout))

    def per_client(self, nodes: Iterable[int], dim: int) -> dict[str, float]:
        nodes = list(nodes)
        sent = [self.from_node.get(n, 0) for n in nodes]
        received = [self.to_node.get(n, 0) for n in nodes]
        total = [a + b for a, b in zip(sent, received, strict=True)]
        return {
            "bytes_sent_per_client": float(np.mean(sent)),
            "bytes_received_per_client": float(np.mean(received)),
            "bytes_per_client": float(np.mean(total)),
            "float32_vectors_per_client": float(np.mean(total)) / (4 * dim),
        }


def bench_account(seed: int, client: int) -> Any:
    """A client's ledger account in the authenticated variant (derived: any process can
    rebuild it; benchmark keys only)."""
    from eth_account import Account

    from secagg import keccak256

    return Account.from_key(bytes(keccak256(b"bench_flower/account" + bytes([seed, client]))))


def masking_client_app(seed: int, n: int, dropout: float, *, authenticated: bool) -> Any:
    """Our ClientApp: one ``MaskingClient`` per node, its state in ``Context.state``;
    ``authenticated``: ledger-signed keys and the consistency check, as deployed."""
    from flwr.app import ConfigRecord, Context, Message
    from flwr.clientapp import ClientApp

    from deploy import (
        MASK_ADVERTISE,
        MASK_CONSISTENCY,
        MASK_SHARE,
        MASK_TYPES,
        MASK_UNMASK,
        TRAIN,
        WireMessage,
    )
    from deploy._transport import parse_request, reply_to
    from deploy._wire import flower_action
    from secagg.masking import MaskingClient, MaskingParams, plan_round

    before_input, before_unmask = dropout_schedule(n, dropout)
    plans: dict[tuple[int, int], Any] = {}
    registry: dict[int, str] = {}
    accounts: dict[int, Any] = {}

    def handle(message: Message, context: Context) -> Message:
        request = parse_request(message)
        record = context.state.config_records.get(STATE_RECORD)
        saved: dict[str, Any] = dict(record.items()) if record is not None else {}
        if "warmup" in request.fields:  # the actor has loaded this app's code: nothing else
            return reply_to(message, WireMessage(request.type, fields={"message": b""}))
        if request.type == MASK_ADVERTISE:
            saved = {"client": request.integer("client"), "dim": request.integer("dim")}
        client_id, dim = int(saved["client"]), int(saved["dim"])
        late = request.type in (MASK_CONSISTENCY, MASK_UNMASK)
        lost = before_input if request.type == TRAIN or late else set()
        if client_id in lost or (late and client_id in before_unmask):
            raise ConnectionError("SuperNode unreachable")
        identity: dict[str, Any] = {}
        if authenticated:  # the node's own key and the ledger's registry: set-up, cached
            if not registry:
                registry.update({c: str(bench_account(seed, c).address) for c in range(n)})
            if client_id not in accounts:
                accounts[client_id] = bench_account(seed, client_id)
            identity = {"account": accounts[client_id], "registry": registry}
        key = (n, dim)
        if key not in plans:
            plans[key] = plan_round(MaskingParams(), round_id=1, client_ids=range(n), dim=dim)
        plan = plans[key]
        if request.type == MASK_ADVERTISE:
            client = MaskingClient(plan, client_id, **identity)
            out = client.advertise_keys()
        else:
            client = MaskingClient.restore(plan, client_id, bytes(saved["state"]), **identity)
            data = request.blob("message")
            if request.type == MASK_SHARE:
                out = client.share_keys(data)
            elif request.type == TRAIN:
                out = client.masked_input(data, client_update(seed, client_id, n, dim))
            elif request.type == MASK_CONSISTENCY:
                out = client.sign_survivors(data)
            else:
                if authenticated:
                    client.check_consistency(request.blob("proof"))
                out = client.unmask(data)
        saved["state"] = client.export_state()
        context.state[STATE_RECORD] = ConfigRecord(saved)
        return reply_to(message, WireMessage(request.type, fields={"message": out}))

    app = ClientApp()
    app.train(flower_action(TRAIN))(handle)
    for message_type in MASK_TYPES:
        app.query(flower_action(message_type))(handle)
    return app


def run_ours(
    n: int, dim: int, dropout: float, seed: int, *, authenticated: bool = False
) -> dict[str, Any]:
    """Our masking over the Flower transport on the simulation engine."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from deploy import MASK_ADVERTISE, TRAIN, FlowerTransport, WireMessage
    from deploy._masking import RemoteMaskingSession, exchange_each, transport_send
    from deploy.flower_app import simulation_backend_config
    from secagg.masking import MaskingParams, plan_round

    result: dict[str, Any] = {}
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        counting = CountingGrid(grid)
        transport = FlowerTransport(counting)  # type: ignore[arg-type]
        nodes = sorted(transport.wait_for_nodes(n, timeout=600.0))[:n]
        node_of = dict(enumerate(nodes))
        # untimed: the actor loads this ClientApp's code (importing secagg takes ~3 s, once
        # per process: a real SuperNode pays it when it starts, not per round)
        warmup = WireMessage(MASK_ADVERTISE, fields={"warmup": True})
        transport.exchange({nodes[0]: warmup}, timeout=600.0)
        wall, cpu, own = time.perf_counter(), tree_cpu_seconds(), time.process_time()
        plan = plan_round(MaskingParams(), round_id=1, client_ids=range(n), dim=dim)
        registry = None
        if authenticated:  # account derivation is set-up, not timed (as bench_masking)
            registry = {c: str(bench_account(seed, c).address) for c in range(n)}
        session = RemoteMaskingSession(
            plan, send=transport_send(transport, node_of, timeout=600), registry=registry
        )
        deliveries = session.run_setup({"dim": dim}, own={c: {"client": c} for c in node_of})
        # the masked-input stage carries the global model, as Flower's fit message does
        train = exchange_each(
            transport,
            node_of,
            TRAIN,
            {c: {"round": 1, "message": d} for c, d in deliveries.items()},
            timeout=600.0,
            arrays={"params": np.zeros(dim)},
        )
        blobs = {c: reply.blob("message") for c, reply in train.replies.items()}
        aggregate = session.combine(blobs)
        total = session.reveal(aggregate, survivors=session.combined)
        result.update(
            wall_seconds=time.perf_counter() - wall,
            cpu_seconds=tree_cpu_seconds() - cpu,
            server_cpu_seconds=time.process_time() - own,
            degree_k=plan.degree,
            threshold_t=plan.threshold,
            included=len(session.combined),
            max_abs_error_of_mean=float(
                np.max(
                    np.abs(
                        total / len(session.combined)
                        - np.mean([client_update(seed, c, n, dim) for c in session.combined], 0)
                    )
                )
            ),
            **counting.per_client(nodes, dim),
        )

    run_simulation(
        server_app=app,
        client_app=masking_client_app(seed, n, dropout, authenticated=authenticated),
        num_supernodes=n,
        backend_config=simulation_backend_config(),
    )
    return result


def secaggplus_client_app(seed: int, n: int, dim: int, dropout: float) -> Any:
    """Flower's SecAgg+ client: ``secaggplus_mod`` around a client returning its update,
    behind a mod that loses the scheduled clients at their stage."""
    from flwr.client import NumPyClient
    from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.common.secure_aggregation.secaggplus_constants import Stage as FlowerStage

    before_input, before_unmask = dropout_schedule(n, dropout)

    class UpdateClient(NumPyClient):
        def __init__(self, client: int) -> None:
            self.client = client

        def fit(self, parameters: Any, config: Any) -> Any:
            return [client_update(seed, self.client, n, dim)], 1, {}

    def client_fn(context: Any) -> Any:
        return UpdateClient(int(context.node_config["partition-id"])).to_client()

    def lose(message: Any, context: Any, call_next: Any) -> Any:
        configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
        stage = configs.get(Key.STAGE) if configs is not None else None
        client = int(context.node_config["partition-id"])
        if (
            client in before_input
            and stage in (FlowerStage.COLLECT_MASKED_VECTORS, FlowerStage.UNMASK)
        ) or (client in before_unmask and stage == FlowerStage.UNMASK):
            raise ConnectionError("SuperNode unreachable")
        return call_next(message, context)

    return ClientApp(client_fn=client_fn, mods=[lose, secaggplus_mod])


def run_secaggplus(n: int, dim: int, dropout: float, seed: int, *, degree: int, threshold: int):
    """Flower's ``SecAggPlusWorkflow`` on the simulation engine (same k, t, clip, weights)."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import Context
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from deploy.flower_app import simulation_backend_config

    result: dict[str, Any] = {}
    counting_grids: list[CountingGrid] = []

    class TimedWorkflow(SecAggPlusWorkflow):
        def __call__(self, grid: Any, context: Any) -> None:
            wall, cpu, own = time.perf_counter(), tree_cpu_seconds(), time.process_time()
            super().__call__(grid, context)
            result.update(
                wall_seconds=time.perf_counter() - wall,
                cpu_seconds=tree_cpu_seconds() - cpu,
                server_cpu_seconds=time.process_time() - own,
            )

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        counting = CountingGrid(grid)
        counting_grids.append(counting)
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([np.zeros(dim)]),
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        # Our clip range (1.0) and unit weights (Flower's default max_weight=1000 would
        # drown each update in quantization error).
        fit = TimedWorkflow(
            num_shares=degree + 1,
            reconstruction_threshold=threshold,
            max_weight=1.0,
            clipping_range=1.0,
        )
        DefaultWorkflow(fit_workflow=fit)(counting, legacy)  # type: ignore[arg-type]
        nodes = sorted(int(x) for x in grid.get_node_ids())
        mean = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(
                legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
            )
        )[0]
        before_input, _ = dropout_schedule(n, dropout)
        expected = np.mean(
            [client_update(seed, c, n, dim) for c in range(n) if c not in before_input], 0
        )
        result.update(
            degree_k=degree,
            threshold_t=threshold,
            included=n - len(before_input),
            max_abs_error_of_mean=float(np.max(np.abs(mean - expected))),
            **counting.per_client(nodes, dim),
        )

    run_simulation(
        server_app=app,
        client_app=secaggplus_client_app(seed, n, dim, dropout),
        num_supernodes=n,
        backend_config=simulation_backend_config(),
    )
    return result


def compare(
    n: int, dim: int, dropout: float, seed: int = 0, *, authenticated: bool = False
) -> dict[str, Any]:
    """Both protocols, same n, D, dropout schedule, k and t; and the goals (judged like
    for like, honest-but-curious; ``authenticated`` adds ours as deployed, for reference)."""
    ours = run_ours(n, dim, dropout, seed)
    flower = run_secaggplus(
        n, dim, dropout, seed, degree=ours["degree_k"], threshold=ours["threshold_t"]
    )
    extra = {}
    if authenticated:
        extra["ours_authenticated"] = run_ours(n, dim, dropout, seed, authenticated=True)
    return {
        "n": n,
        "dim": dim,
        "dropout": dropout,
        "ours": ours,
        **extra,
        "flower_secaggplus": flower,
        "time_ratio_wall": ours["wall_seconds"] / flower["wall_seconds"],
        "time_ratio_cpu": ours["cpu_seconds"] / flower["cpu_seconds"],
        "bytes_ratio": ours["bytes_per_client"] / flower["bytes_per_client"],
        "bytes_sent_ratio": ours["bytes_sent_per_client"] / flower["bytes_sent_per_client"],
        "goals": {
            "time_le_0.5x_flower_wall": ours["wall_seconds"] <= 0.5 * flower["wall_seconds"],
            "time_le_0.5x_flower_cpu": ours["cpu_seconds"] <= 0.5 * flower["cpu_seconds"],
            "bytes_per_client_le_1.1x_flower": ours["bytes_per_client"]
            <= 1.1 * flower["bytes_per_client"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scheme", default="plain", choices=["plain", "ckks"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--parts", nargs="+", default=["overhead", "compare"], choices=["overhead", "compare"]
    )
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--authenticated", action="store_true", help="also ours as deployed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"benchmark": "bench_flower", "load_average_1min": os.getloadavg()[0]}
    if "overhead" in args.parts:
        report |= {"clients": args.clients, "rounds": args.rounds, "scheme": args.scheme}
        report["transport_overhead"] = measure(args.clients, args.rounds, args.scheme)
    if "compare" in args.parts:
        report["masking_vs_secaggplus"] = compare(
            args.n, args.dim, args.dropout, authenticated=args.authenticated
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
