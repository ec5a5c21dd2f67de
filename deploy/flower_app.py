"""The Flower 1.42 app: a ServerApp running the round driver, a ClientApp running a site.

``pyproject.toml``'s ``[tool.flwr.app.components]`` names :data:`server_app` and
:data:`client_app`, so the repository is a Flower app (README, "Deploy across sites").

The ServerApp reads :class:`~deploy.DeploymentSettings` from the run config, waits for the
SuperNodes and drives the rounds over :class:`~deploy.FlowerTransport`.

The ClientApp registers one function per wire message type (``query.secagg_v1_join``,
``train.secagg_v1_train``, ``query.secagg_v1_reveal``, ``query.secagg_v1_release``,
``evaluate.secagg_v1_evaluate``, and masking's ``query.secagg_v1_mask_advertise|share|
rebut|consistency|unmask``) and hands the request to this node's site, chosen by the
node config: ``role`` (``hospital``, ``keyholder`` or ``committee``, with ``member``: its
index 1..K among the decryption committee's members), ``partition-id`` (the hospital's index
among the dataset's clients), ``data-dir`` (its own data folder) and ``key-file`` (a file
holding its ledger account's private key, hex; absent: a fresh key made on the node). In
Flower's simulation engine, where node configs only carry ``partition-id`` and
``num-partitions``, the node with the last partition id is the key holder and the others
are hospitals; with a decryption committee (``secagg.committee_size`` K > 1, read from the
join request) the last K partition ids are its members 1..K.

The decryption committee's stages (``query.secagg_v1_committee_keygen|setup|release|
combine``) go to the committee nodes (:mod:`deploy._committee`).

State between messages: a 1.42 SuperNode runs each message in a new ClientApp process, so
:func:`handle` restores the site from ``Context.state`` (record ``secagg.site``, kept by the
node's own SuperNode, never sent) before the message and saves it after
(``export_state``/``restore_state``: a hospital's config, ledger, pending submission and,
with ``dp=sample``, its accountant (event chain and sigma), with ``secagg=masking`` its
masking client's round state (keys and held shares); the key holder's config and
secrets; a committee member's index, box key, key share and the rounds it decrypted).
Within one process the site also stays in memory, keyed by
run and node (Flower's simulation engine keeps its actor for the whole run; run it with one
actor, :func:`simulation_backend_config`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from deploy._committee import ROLE_COMMITTEE, CommitteeSite
from deploy._driver import DeploymentRun, DeploymentSettings, RoundDriver
from deploy._errors import SettingsError
from deploy._hospital import ROLE_HOSPITAL, HospitalSite
from deploy._keyholder import ROLE_KEY_HOLDER, KeyHolderSite
from deploy._sites import SitePolicy, compose_run_config, load_key_file
from deploy._transport import FlowerTransport, parse_request, reply_to
from deploy._wire import (
    COMMITTEE_TYPES,
    EVALUATE,
    JOIN,
    MASK_TYPES,
    RELEASE,
    REVEAL,
    TRAIN,
    WireMessage,
    flower_action,
)

Site = HospitalSite | KeyHolderSite | CommitteeSite
#: The ``Context.state`` record holding a site's state between messages (on its node only).
STATE_RECORD = "secagg.site"
#: This process's sites, by (run id, node id).
_SITES: dict[tuple[int, int], Site] = {}


def run_on_grid(grid: Grid, settings: DeploymentSettings) -> DeploymentRun:
    """Wait for the SuperNodes, then run the federation over ``grid``."""
    transport = FlowerTransport(grid)
    transport.wait_for_nodes(settings.nodes, timeout=settings.join_timeout_s)
    return RoundDriver(settings, transport).run()


def make_server_app(
    settings: DeploymentSettings | None = None,
    *,
    on_done: Callable[[DeploymentRun], None] | None = None,
) -> ServerApp:
    """A ServerApp with fixed ``settings`` (None: read from the run config)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        chosen = settings or DeploymentSettings.from_run_config(dict(context.run_config))
        run = run_on_grid(grid, chosen)
        if on_done is not None:
            on_done(run)

    return app


def simulated_role(
    config: dict[str, Any], request: WireMessage | None, state: dict[str, Any]
) -> tuple[str, int]:
    """A simulation node's role (and committee index): the last partition is the key
    holder, or with a committee of K (``secagg.committee_size`` of the join request) the
    last K partitions are its members 1..K; the others are hospitals."""
    partition = int(config.get("partition-id", -1))
    count = int(config.get("num-partitions", 0))
    if "member" in state:  # a committee member's saved state (a fresh process)
        return ROLE_COMMITTEE, int(state["member"])
    size = 1
    if request is not None and request.type == JOIN:
        cfg, _ = compose_run_config([x for x in request.text("overrides").splitlines() if x])
        size = int(getattr(cfg.secagg, "committee_size", 1) or 1)
    if size > 1 and partition >= count - size:
        return ROLE_COMMITTEE, partition - (count - size) + 1
    return (ROLE_KEY_HOLDER if partition == count - 1 else ROLE_HOSPITAL), 0


def site_for(
    context: Context, request: WireMessage | None = None, state: dict[str, Any] | None = None
) -> Site:
    """This node's site (made on the first message of a run)."""
    key = (int(context.run_id), int(context.node_id))
    known = _SITES.get(key)
    if known is not None:
        return known
    config = dict(context.node_config)
    role = config.get("role")
    member = int(config.get("member", 0) or 0)
    # a site's policy comes from its own node config; a simulation's nodes (no role: one
    # operator runs every site on one machine) accept every scheme
    policy = SitePolicy.from_node_config(config) if role is not None else SitePolicy.permissive()
    if role is None:
        role, member = simulated_role(config, request, state or {})
    account = load_key_file(str(config["key-file"])) if config.get("key-file") else None
    if role == ROLE_HOSPITAL:
        if "partition-id" not in config:
            raise SettingsError("a hospital node needs partition-id in its node config")
        data_dir = config.get("data-dir")
        site: Site = HospitalSite(
            partition_id=int(config["partition-id"]),
            data_dir=str(data_dir) if data_dir else None,
            account=account,
            policy=policy,
        )
    elif role == ROLE_KEY_HOLDER:
        site = KeyHolderSite(account=account, policy=policy)
    elif role == ROLE_COMMITTEE:
        if member < 1:
            raise SettingsError("a committee node needs member=1..K in its node config")
        site = CommitteeSite(member=member, account=account, policy=policy)
    else:
        raise SettingsError(
            f"node config role must be hospital, keyholder or committee, got {role!r}"
        )
    _SITES[key] = site
    return site


def handle(message: Message, context: Context) -> Message:
    """Parse, dispatch to this node's site, reply (a raised error becomes Flower's error
    reply, which the driver counts as this node's failure)."""
    request = parse_request(message)
    saved = context.state.config_records.get(STATE_RECORD)
    site = site_for(context, request, dict(saved.items()) if saved is not None else None)
    if saved is not None:
        site.restore_state(dict(saved.items()))  # type: ignore[arg-type]  # a fresh ClientApp process (SuperNode deployment)
    reply: WireMessage = site.handle(request)
    context.state[STATE_RECORD] = ConfigRecord(site.export_state())  # type: ignore[arg-type]
    return reply_to(message, reply)


client_app = ClientApp()
client_app.query(flower_action(JOIN))(handle)
client_app.train(flower_action(TRAIN))(handle)
client_app.query(flower_action(REVEAL))(handle)
client_app.query(flower_action(RELEASE))(handle)
client_app.evaluate(flower_action(EVALUATE))(handle)
for _mask_type in MASK_TYPES:  # secagg=masking's stages (query.secagg_v1_mask_*)
    client_app.query(flower_action(_mask_type))(handle)
for _committee_type in COMMITTEE_TYPES:  # a decryption committee's stages
    client_app.query(flower_action(_committee_type))(handle)

server_app = make_server_app()


def simulation_backend_config() -> dict[str, Any]:
    """Flower's Ray backend with one actor, so every site stays in one process."""
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 1}}


def run_in_simulation(
    settings: DeploymentSettings, *, client: ClientApp | None = None
) -> DeploymentRun:
    """Run the federation on Flower's simulation engine (``settings.nodes`` SuperNodes)."""
    from flwr.simulation import run_simulation

    done: list[DeploymentRun] = []
    run_simulation(
        server_app=make_server_app(settings, on_done=done.append),
        client_app=client or client_app,
        num_supernodes=settings.nodes,
        backend_config=simulation_backend_config(),
    )
    if not done:
        raise SettingsError("the simulation ended without a result (see Flower's log)")
    return done[0]


__all__ = [
    "client_app",
    "handle",
    "make_server_app",
    "run_in_simulation",
    "run_on_grid",
    "server_app",
    "simulated_role",
    "simulation_backend_config",
    "site_for",
]
