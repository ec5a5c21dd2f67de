"""The round driver of a deployment: the aggregator's side, over any :class:`Transport`.

It runs on the ServerApp (or in a test, over the in-process transport). Per run:

1. ``join``: every node answers with its role; hospitals with their ledger address, sample
   count and initial model; the key holder (CKKS) with its address and public context;
2. the ledger: with ``ledger-address`` the driver attaches to the consortium's contract,
   deployed and administered by someone else (``secagg consortium deploy``), as the
   aggregator registered there (``aggregator-key-file``), and leaves out every joined
   hospital the consortium did not register; without it (a test or a single-operator
   run) a fresh admin funded from the node's faucet deploys a ledger and registers each
   party's *own* address;

per round (docs/architecture.md, "A round over Flower"):

3. the aggregator stores the manifest and opens the round on chain;
4. ``train``: each selected hospital trains (``dp=sample``: DP-SGD under its own
   accountant, which never leaves its node), protects, commits with its own account and
   keeps its blob, and hands over its privacy event (stored: the ledger commits to it); one
   that does not answer within the stage timeout is a dropout;
5. the commit phase closes; ``reveal``: each committed hospital reveals on chain and hands
   its blob over, which the aggregator puts in the store;
6. the aggregator collects the committed blobs, combines blindly and publishes;
7. ``release`` (CKKS): the key holder checks and decrypts once (plain: the aggregator
   reads the sum); with a decryption committee (``secagg.committee_size`` K > 1,
   :mod:`deploy._committee`, whose key is made with the K members after ``join``)
   ``committee.release`` to every member, each checking and attesting its partial, then
   ``committee.combine`` to the lowest member that answered (any T partials release the
   sum; fewer: a refused round, the run goes on); the aggregator finalizes, audits the
   round (which recombines the attested partials) and flags culprits;
8. the mean update moves the global model; ``evaluate``: each hospital's test metrics.

With ``chain.commit_mode=batched|merkle`` (plain, CKKS; :mod:`deploy._commit_modes`) the
hospitals sign their commitments with their own accounts instead of sending them; the
driver checks each row and sends one ``commitBatch`` (batched) or opens the round with the
root of the leaves (merkle: the round is only drafted at step 3, and each ``reveal``
carries the hospital's leaf proof); in CKKS merkle rounds it signs the publication and the
key holder sends it with its reservation.

With ``secagg=masking`` (:mod:`deploy._masking`) the driver also runs the masking server:
``mask.advertise`` and ``mask.share`` before ``train`` (whose blob is the masked input),
rebuttals in the combine, the consistency check and ``mask.unmask`` instead of
``release`` (a hospital lost at any stage is a dropout the others' shares recover).

With ``dp=client`` (DP-FedAvg) the driver holds the federation's accountant (the runner's
:class:`experiments._privacy.ClientLevelPrivacy`, over the joined hospitals): it refuses a
round the budget would not cover before any training, gives every selected hospital the
uniform weight ``1/n``, and each manifest commits the federation's policy and the head of
its event chain (the releases before the round, put in the store first). Each hospital
clips its update to C on its own node (and, with ``dp.distributed=true``, adds its noise
share). The releasing party adds the central noise inside its release: the key holder
(CKKS; from the committed policy, after re-accounting the chain this driver sends it) or
this driver (plain); masking has no single releasing party, so it needs distributed noise.
After the release the driver accounts the round (its event). ``dp.audit=one_run`` (with
dp=client only) puts the canary clients into each released mean here, as the runner does.

``results.json`` has the schema of ``experiments`` (same writer), so ``secagg audit
--results`` audits a deployed run unchanged; with ``dp=sample`` its epsilon fields are the
runner's (per round: each hospital's cumulative epsilon from its events, and the maximum);
with ``dp=client`` the federation's, as the runner reports them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from eth_account import Account
from eth_utils import is_address

from chain import (
    AlreadyFlagged,
    AnvilBackend,
    ChainError,
    Ledger,
    Role,
    RoundStatus,
    SignedCommit,
    SignedPublication,
    budget_to_fixed,
    commit_mode_of,
    epsilon_from_fixed,
)
from deploy._commit_modes import (
    LEAF_SET,
    leaf_proof_fields,
    publication_fields,
    refusal_of,
    signed_commit_from,
)
from deploy._committee import ROLE_COMMITTEE, CommitteeNodes
from deploy._errors import DeploymentError, SettingsError, WireFormatError
from deploy._hospital import ROLE_HOSPITAL
from deploy._keyholder import ROLE_KEY_HOLDER
from deploy._masking import open_masking_session
from deploy._sites import (
    SiteAccounts,
    SiteView,
    attach_ledger,
    compose_run_config,
    load_key_file,
    public_session,
)
from deploy._transport import Exchange, Transport
from deploy._wire import EVALUATE, JOIN, RELEASE, REVEAL, TRAIN, WireMessage
from secagg import (
    AggregatorParty,
    Auditor,
    KeyHolderParty,
    LocalDirectoryStore,
    ManifestClient,
    PrivacyPolicy,
    RoundManifest,
    SecAggError,
    keccak256,
)
from secagg._auditor import DEFAULT_EPSILON_TOLERANCE, culprits
from secagg._hydra import scheme_class
from secagg._merkle_round import check_inclusion, round_commitments
from secagg.ckks._config import committee_from_schema, params_from_schema, policy_from_schema

if TYPE_CHECKING:
    from experiments._privacy import PrivacyLayer

log = logging.getLogger("deploy")

SUPPORTED_SCHEMES = ("plain", "ckks", "masking")
SUPPORTED_DP = ("off", "sample", "client")
#: Ether the admin gives each party for its own transactions (10 ETH: far above a run's gas).
FUNDING_WEI = 10**19


@dataclass(frozen=True)
class DeploymentSettings:
    """What the ServerApp needs besides the Hydra config (run config keys in brackets).

    ``overrides``: Hydra overrides of ``conf/config.yaml`` [``overrides``, one per line];
    ``ledger_url``: the JSON-RPC node every site reaches [``ledger-url``]; ``output_dir``:
    where ``results.json`` and the artifact store go [``output-dir``]; ``hospitals``: how
    many hospital nodes to wait for [``hospitals``]; ``key_holder``: whether a key holder
    node takes part [``key-holder``]; ``stage_timeout_s``: how long a stage waits for
    replies (later ones are dropouts) [``stage-timeout``]; ``join_timeout_s``: how long to
    wait for the nodes to connect [``join-timeout``]; ``ledger_address``: the
    consortium's deployed contract to attach to [``ledger-address``], with
    ``aggregator_key_file``, the key of the aggregator account registered there
    [``aggregator-key-file``] and ``ledger_start_block``, the block it was deployed in
    [``ledger-start-block``], ``committee``: how many decryption committee nodes take
    part (``secagg.committee_size`` K > 1, with ``key_holder=False``) [``committee``], and
    optionally ``auditor_key_file``, an auditor account
    registered there with which the driver flags the culprits its audit finds
    [``auditor-key-file``]; without ``ledger_address`` the driver deploys its own ledger
    (whose admin it is: fine for one operator, not for a consortium, see
    docs/threat-model.md)."""

    overrides: tuple[str, ...]
    ledger_url: str
    output_dir: Path | None = None
    hospitals: int = 4
    key_holder: bool = True
    stage_timeout_s: float = 120.0
    join_timeout_s: float = 120.0
    ledger_address: str | None = None
    aggregator_key_file: Path | None = None
    ledger_start_block: int = 0
    auditor_key_file: Path | None = None
    committee: int = 0

    def __post_init__(self) -> None:
        if not self.ledger_url.startswith(("http://", "https://")):
            raise SettingsError(f"ledger_url must be an http(s) URL, got {self.ledger_url!r}")
        if self.ledger_address is not None:
            if not is_address(self.ledger_address):
                raise SettingsError(f"ledger_address is not an address: {self.ledger_address!r}")
            if self.aggregator_key_file is None:
                raise SettingsError(
                    "ledger_address needs aggregator_key_file: the key of the aggregator "
                    "account the consortium registered on that contract"
                )
        if self.ledger_start_block < 0:
            raise SettingsError(f"ledger_start_block must be >= 0, got {self.ledger_start_block}")
        if self.committee < 0 or (self.committee and self.key_holder):
            raise SettingsError(
                f"committee={self.committee}: a decryption committee's nodes replace the key "
                "holder (committee >= 2 with key_holder false, or committee 0)"
            )
        if self.hospitals < 1:
            raise SettingsError(f"hospitals must be >= 1, got {self.hospitals}")
        for name in ("stage_timeout_s", "join_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(f"{name} must be finite and > 0, got {value}")

    @property
    def nodes(self) -> int:
        return self.hospitals + (1 if self.key_holder else 0) + self.committee

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> DeploymentSettings:
        """From a Flower run config (``[tool.flwr.app.config]`` and ``--run-config``)."""
        try:
            output = run_config.get("output-dir") or None
            address = run_config.get("ledger-address") or None
            key_file = run_config.get("aggregator-key-file") or None
            auditor_file = run_config.get("auditor-key-file") or None
            return cls(
                overrides=split_overrides(str(run_config["overrides"])),
                ledger_url=str(run_config["ledger-url"]),
                output_dir=Path(str(output)) if output else None,
                hospitals=int(run_config.get("hospitals", 4)),
                key_holder=bool(run_config.get("key-holder", True)),
                stage_timeout_s=float(run_config.get("stage-timeout", 120.0)),
                join_timeout_s=float(run_config.get("join-timeout", 120.0)),
                ledger_address=str(address) if address else None,
                aggregator_key_file=Path(str(key_file)) if key_file else None,
                ledger_start_block=int(run_config.get("ledger-start-block", 0)),
                auditor_key_file=Path(str(auditor_file)) if auditor_file else None,
                committee=int(run_config.get("committee", 0)),
            )
        except KeyError as error:
            raise SettingsError(f"run config: missing {error}") from error


def committee_nodes_for(schema: Any, settings: DeploymentSettings) -> CommitteeNodes | None:
    """The committee nodes a run waits for (``secagg.committee_size`` K > 1), or None;
    :class:`SettingsError` unless ``settings.committee`` is K."""
    size = int(getattr(schema, "committee_size", 1) or 1)
    if size == 1:
        if settings.committee:
            raise SettingsError(f"committee={settings.committee} but secagg.committee_size=1")
        return None
    if schema.name != "ckks":
        raise SettingsError(f"secagg={schema.name} has no decryption committee")
    if settings.committee != size:
        raise SettingsError(
            f"secagg.committee_size={size}: the run waits for {size} committee nodes "
            f"(committee={size} and key_holder false), got committee={settings.committee}"
        )
    return CommitteeNodes(committee_from_schema(schema), policy_from_schema(schema))


def split_overrides(text: str) -> tuple[str, ...]:
    """Hydra overrides from one run-config string: split at commas (and newlines) outside
    brackets and quotes, so ``secagg.coeff_mod_bit_sizes=[60,40]`` stays whole."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quote: str | None = None
    for char in text:
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char in ",\n" and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return tuple(part for part in parts if part)


@dataclass(frozen=True)
class _Population:
    """What the runner's privacy layer reads of the data (its size and scaling): the
    driver holds no data, only the joined hospitals' ids."""

    clients: tuple[int, ...]
    preprocessing: str


@dataclass
class _Hospital:
    node_id: int
    partition_id: int
    name: str
    address: str
    n_train: int
    policy: PrivacyPolicy | None = None


@dataclass
class DeploymentRun:
    """What :meth:`RoundDriver.run` returns: the results and the final global model."""

    results: Any
    params: np.ndarray
    results_path: Path | None = None
    excluded: dict[int, dict[int, str]] = field(default_factory=dict)


class RoundDriver:
    """The aggregator of a deployed federation (see the module docstring)."""

    def __init__(self, settings: DeploymentSettings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self.cfg, self.resolved = compose_run_config(settings.overrides)
        if self.cfg.secagg.name not in SUPPORTED_SCHEMES:
            raise SettingsError(
                f"secagg={self.cfg.secagg.name} is not deployed yet ({list(SUPPORTED_SCHEMES)})"
            )
        if self.cfg.dp.name not in SUPPORTED_DP:
            raise SettingsError(
                f"dp={self.cfg.dp.name} is not deployed on Flower yet ({list(SUPPORTED_DP)})"
            )
        if getattr(self.cfg.dp, "audit", "none") != "none" and self.cfg.dp.name != "client":
            raise SettingsError(
                "dp.audit=one_run is deployed with dp=client only: with dp=sample the "
                "canaries live in each hospital's DP-SGD and no message brings their "
                "bounds back (dp.audit=none)"
            )
        self._check_client_level()
        if self.cfg.chain.name == "none":
            raise SettingsError("a deployment needs a ledger (chain=anvil or chain=rpc)")
        self.commit_mode = commit_mode_of(self.cfg.chain)
        if self.commit_mode != "direct" and scheme_class(self.cfg.secagg.name).key_agreement_stages:
            raise SettingsError(
                f"chain.commit_mode={self.commit_mode} with secagg={self.cfg.secagg.name} is "
                "not deployed yet: masking rounds commit directly (chain.commit_mode=direct)"
            )
        self.committee_nodes = committee_nodes_for(self.cfg.secagg, settings)
        if self.committee_nodes is not None and self.commit_mode != "direct":
            raise SettingsError(
                f"chain.commit_mode={self.commit_mode} with a decryption committee is not "
                "deployed yet (the committee's release is reserved before publication only in "
                "direct rounds): use chain.commit_mode=direct"
            )
        if (
            self.committee_nodes is not None
            and self.cfg.dp.name == "client"
            and not getattr(self.cfg.dp, "distributed", False)
        ):
            raise SettingsError(
                "dp=client with central noise needs a single releasing party that adds the "
                "noise inside its release; a decryption committee combines partials to the "
                "exact sum: use dp.distributed=true, or one key holder node"
            )
        if (
            scheme_class(self.cfg.secagg.name).releases_via_key_holder
            and not settings.key_holder
            and self.committee_nodes is None
        ):
            raise SettingsError(f"secagg={self.cfg.secagg.name} needs a key holder node")
        # round -> member -> its seconds and bytes (results.json rounds[].committee)
        self.committee_stats: dict[int, dict[int, dict[str, float]]] = {}
        self.hospitals: dict[int, _Hospital] = {}  # partition id (= client id) -> hospital
        self.key_holder_node: int | None = None
        self.public_context: bytes | None = None
        self.per_client_accuracy: dict[str, float] = {}
        self.events: dict[int, list[Any]] = {}  # partition -> its privacy events (dp=sample)
        # dp=client: the federation's accountant (experiments' ClientLevelPrivacy), built
        # once the hospitals joined (their number is the population it accounts over)
        self.privacy: PrivacyLayer | None = None
        # partition -> why it joined but takes no part (not registered on the consortium's ledger)
        self.excluded_at_join: dict[int, str] = {}

    # --------------------------------------------------------------------------- join
    def _overrides_text(self) -> str:
        return "\n".join(self.settings.overrides)

    def join(self, nodes: Sequence[int]) -> np.ndarray:
        """Ask every node for its role; returns the initial global model."""
        request = WireMessage(JOIN, fields={"overrides": self._overrides_text()})
        exchange = self.transport.exchange(
            dict.fromkeys(nodes, request), timeout=self.settings.join_timeout_s
        )
        if exchange.failures:
            raise DeploymentError(f"nodes failed to join: {exchange.failures}")
        initial: np.ndarray | None = None
        for node_id, reply in sorted(exchange.replies.items()):
            role = reply.text("role")
            if role == ROLE_HOSPITAL:
                partition = reply.integer("partition_id")
                if partition in self.hospitals:
                    raise DeploymentError(f"two nodes claim hospital partition {partition}")
                if any(
                    h.address.lower() == reply.text("address").lower()
                    for h in self.hospitals.values()
                ):
                    raise DeploymentError(
                        f"hospital {partition} claims the ledger address {reply.text('address')} "
                        "of another hospital"
                    )
                params = reply.array("params")
                if initial is None:
                    initial = params
                elif params.shape != initial.shape or not np.array_equal(params, initial):
                    raise DeploymentError(f"hospital {partition} built another initial model")
                self.hospitals[partition] = _Hospital(
                    node_id=node_id,
                    partition_id=partition,
                    name=reply.text("name"),
                    address=reply.text("address"),
                    n_train=reply.integer("n_train"),
                    policy=self._policy_of(partition, reply),
                )
            elif role == ROLE_KEY_HOLDER:
                if self.key_holder_node is not None:
                    raise DeploymentError("two nodes claim the key holder role")
                self.key_holder_node = node_id
                self._key_holder_address = reply.text("address")
                if "public_context" in reply.fields:
                    self.public_context = reply.blob("public_context")
            elif role == ROLE_COMMITTEE and self.committee_nodes is not None:
                self.committee_nodes.add(node_id, reply)
            else:
                raise DeploymentError(f"node {node_id}: unknown role {role!r}")
        if initial is None:
            raise DeploymentError("no hospital joined")
        if self.committee_nodes is not None:  # its collective key is made on the ledger
            self.committee_nodes.check_complete(others=[h.address for h in self.hospitals.values()])
        elif scheme_class(self.cfg.secagg.name).has_public_material and self.public_context is None:
            raise DeploymentError(
                f"secagg={self.cfg.secagg.name}: no key holder sent a public context"
            )
        return initial

    def _policy_of(self, partition: int, reply: WireMessage) -> PrivacyPolicy | None:
        """dp=sample: the hospital's declared policy, checked against the run's config (the
        sample rate is ``batch_size / n_train``; sigma, clip norm, delta and accountant are
        the run's): a hospital cannot claim a weaker mechanism than the run asks for."""
        if self.cfg.dp.name != "sample":
            if "policy" in reply.fields:
                raise DeploymentError(f"hospital {partition} declared a policy in a run without DP")
            return None
        if "policy" not in reply.fields:
            raise DeploymentError(f"hospital {partition} declared no privacy policy (dp=sample)")
        try:
            policy = PrivacyPolicy.from_dict(json.loads(reply.text("policy")))
        except (SecAggError, ValueError) as error:
            raise DeploymentError(f"hospital {partition}: bad privacy policy: {error}") from error
        dp_cfg = self.cfg.dp
        n_train = reply.integer("n_train")
        expected = {
            "mechanism": "dpsgd-sample",
            "sample_rate": self.cfg.federation.batch_size / n_train,
            "max_grad_norm": float(dp_cfg.max_grad_norm),
            "delta": float(dp_cfg.delta),
            "accountant": dp_cfg.accountant,
            "poisson_sampling": bool(dp_cfg.poisson_sampling),
        }
        if dp_cfg.noise_multiplier is not None:
            expected["noise_multiplier"] = float(dp_cfg.noise_multiplier)
        for name, value in expected.items():
            if getattr(policy, name) != value:
                raise DeploymentError(
                    f"hospital {partition}: policy {name}={getattr(policy, name)!r}, "
                    f"the run asks for {value!r}"
                )
        if reply.integer("expected_steps") != policy.steps:
            raise DeploymentError(f"hospital {partition}: steps differ from its policy's")
        return policy

    # ------------------------------------------------------------------------- ledger
    def open_ledger(self) -> None:
        settings = self.settings
        chain = self.cfg.chain
        self.backend = AnvilBackend(url=settings.ledger_url)
        if settings.ledger_address is None:
            ledger, accounts = self._deploy_own_ledger()
        else:
            ledger, accounts = self._attach_consortium_ledger(settings.ledger_address)
        clients = {p: h.address for p, h in sorted(self.hospitals.items())}
        if settings.output_dir is not None:
            store_dir = settings.output_dir / "artifacts"
        else:
            store_dir = Path(tempfile.mkdtemp(prefix="secagg-deploy-"))
        self.store_dir = store_dir.resolve()
        self.ledger = ledger
        self.view = SiteView(
            ledger=ledger,
            store=LocalDirectoryStore(self.store_dir),
            parties=accounts,
            addresses=clients,
            deadline_blocks=chain.deadline_blocks,
            batch_commits=False,
            reputation_threshold=chain.reputation_threshold,
            commit_mode=self.commit_mode,
            challenge_window=chain.challenge_window,
        )
        self.aggregator = AggregatorParty(consortium=self.view.as_consortium())
        self.auditor = Auditor(
            ledger=ledger, store=self.view.store, epsilon_tolerance=DEFAULT_EPSILON_TOLERANCE
        )
        if self.committee_nodes is not None:
            self.public_context = self.committee_nodes.form(
                self.transport,
                ledger=ledger,
                store=self.view.store,
                ledger_fields=self._ledger_fields(),
                params=params_from_schema(self.cfg.secagg),
                timeout=self.settings.stage_timeout_s,
            )
        self.public_material = (
            self.view.store.put(self.public_context).hex() if self.public_context else None
        )

    def _deploy_own_ledger(self) -> tuple[Ledger, SiteAccounts]:
        """A fresh ledger whose admin is a fresh account of this driver (single operator)."""
        admin, aggregator, auditor = Account.create(), Account.create(), Account.create()
        clients = [h.address for _, h in sorted(self.hospitals.items())]
        everyone = [admin.address, aggregator.address, auditor.address, *clients]
        if self.key_holder_node is not None:
            everyone.append(self._key_holder_address)
        if self.committee_nodes is not None:
            everyone.extend(self.committee_nodes.member_addresses())
        self.backend.fund(everyone, FUNDING_WEI)
        ledger = Ledger.deploy(
            self.backend, admin=admin, epsilon_budget=self.cfg.chain.epsilon_budget
        )
        ledger.register(Role.CLIENT, clients, sender=admin)
        ledger.register(Role.AGGREGATOR, aggregator.address, sender=admin)
        if self.key_holder_node is not None:
            ledger.register(Role.KEY_HOLDER, self._key_holder_address, sender=admin)
        ledger.register(Role.AUDITOR, auditor.address, sender=admin)
        if self.committee_nodes is not None:
            members = self.committee_nodes.member_addresses()
            ledger.register(Role.COMMITTEE, members, sender=admin)
            threshold = self.committee_nodes.committee.threshold
            ledger.setup_committee(members, threshold=threshold, sender=admin)
        return ledger, SiteAccounts(admin=admin, aggregator=aggregator, auditor=auditor)

    def _attach_consortium_ledger(self, address: str) -> tuple[Ledger, SiteAccounts]:
        """The consortium's contract: this driver is its registered aggregator, not its
        admin, so it can neither register a party nor change the budget. Hospitals the
        consortium did not register are left out of the run (named in the log and in
        ``excluded_at_join``); a key holder it did not register ends the run."""
        settings = self.settings
        if settings.aggregator_key_file is None:  # DeploymentSettings enforces it
            raise SettingsError("ledger_address needs aggregator_key_file")
        aggregator = load_key_file(settings.aggregator_key_file)
        auditor = None
        if settings.auditor_key_file is not None:
            auditor = load_key_file(settings.auditor_key_file)
        try:
            ledger = attach_ledger(
                settings.ledger_url, address, start_block=settings.ledger_start_block
            )
            if Role.AGGREGATOR not in ledger.roles_of(aggregator.address):
                raise DeploymentError(
                    f"{aggregator.address} is not a registered aggregator of the ledger at "
                    f"{address}: the consortium's admin registers it (secagg consortium "
                    "register --role aggregator)"
                )
            if auditor is not None and Role.AUDITOR not in ledger.roles_of(auditor.address):
                raise DeploymentError(
                    f"{auditor.address} is not a registered auditor of the ledger at {address}"
                )
            on_chain = ledger.epsilon_budget_fixed()
            if on_chain != budget_to_fixed(self.cfg.chain.epsilon_budget):
                raise SettingsError(
                    f"chain.epsilon_budget={self.cfg.chain.epsilon_budget} differs from the "
                    f"consortium ledger's {epsilon_from_fixed(on_chain)}"
                )
            if self.key_holder_node is not None and Role.KEY_HOLDER not in ledger.roles_of(
                self._key_holder_address
            ):
                raise DeploymentError(
                    f"the key holder {self._key_holder_address} is not registered on the "
                    f"ledger at {address}"
                )
            if self.committee_nodes is not None and ledger.committee() is None:
                raise DeploymentError(
                    f"no decryption committee is set up on the ledger at {address}: the "
                    "consortium's admin sets it up with the members' addresses"
                )
            for partition, hospital in sorted(self.hospitals.items()):
                if Role.CLIENT not in ledger.roles_of(hospital.address):
                    reason = f"{hospital.address} is not a registered client of {address}"
                    log.warning("hospital %d (%s) left out: %s", partition, hospital.name, reason)
                    self.excluded_at_join[partition] = reason
                    del self.hospitals[partition]
        except ChainError as error:
            raise DeploymentError(f"cannot use the ledger at {address}: {error}") from error
        if not self.hospitals:
            raise DeploymentError(f"no joined hospital is registered on the ledger at {address}")
        return ledger, SiteAccounts(aggregator=aggregator, auditor=auditor)

    def _ledger_fields(self) -> dict[str, Any]:
        return {
            "ledger_url": self.settings.ledger_url,
            "ledger_address": str(self.ledger.address),
            "start_block": int(self.ledger.start_block),
        }

    # -------------------------------------------------------------------------- round
    def _select(self, round_id: int) -> list[int]:
        from experiments._federation import SEED_SELECT, derive_seed

        fed = self.cfg.federation
        every = sorted(self.hospitals)
        n_selected = max(1, round(fed.client_fraction * len(every)))
        if n_selected < len(every):
            rng = np.random.default_rng(derive_seed(fed.seed, SEED_SELECT, round_id))
            every = sorted(int(c) for c in rng.choice(every, size=n_selected, replace=False))
        return self.aggregator.select(every)

    def run_round(self, round_id: int, params: np.ndarray) -> tuple[np.ndarray, Any]:
        """One round; returns the new global model and the round's record."""
        from experiments._federation import RoundRecord, RoundSeconds

        selected = self._select(round_id)
        # dp=client: the federation's budget, before any training (dp=sample: each hospital)
        refused = self.privacy.admit(round_id, selected) if self.privacy is not None else {}
        admitted = [c for c in selected if c not in refused]
        if not admitted:
            return params, self._refused_round(round_id, params, refused)
        sizes = {c: self.hospitals[c].n_train for c in admitted}
        if self.privacy is not None:  # dp=client: uniform (the sum's sensitivity is C)
            weights = self.privacy.weights(sizes)
        else:
            total_size = sum(sizes.values())
            weights = {c: n / total_size for c, n in sizes.items()}
        manifest = self._manifest(round_id, admitted, weights, dim=int(params.size))
        excluded: dict[int, str] = dict(refused)
        self.aggregator.open_round(manifest)
        fields: dict[str, Any] = {
            "round": round_id,
            "manifest": manifest.canonical_bytes(),
            **self._ledger_fields(),
        }
        if self.public_context is not None:
            fields["public_context"] = self.public_context
        masking, own_fields = None, None
        if scheme_class(manifest.scheme).key_agreement_stages:  # keys first (deploy._masking)
            masking, deliveries = open_masking_session(
                manifest,
                ledger=self.ledger,
                transport=self.transport,
                nodes={c: self.hospitals[c].node_id for c in admitted},
                timeout=self.settings.stage_timeout_s,
                request=fields,
                excluded=excluded,
            )
            own_fields = {c: {"message": d} for c, d in deliveries.items()}
        train = self._exchange(
            TRAIN,
            admitted if own_fields is None else sorted(own_fields),
            fields,
            excluded,
            "dropped out before committing",
            params=params,
            per_client=own_fields,
        )
        committed = sorted(train.replies)
        for client_id, reply in train.replies.items():
            self._keep_events(client_id, round_id, reply.text("events"))
        proofs: dict[int, dict[str, Any]] = {}
        if self.commit_mode != "direct":  # the hospitals' signed rows: one transaction
            committed, proofs = self._submit_signed(round_id, manifest, train.replies, excluded)
        self.aggregator.close_commit_phase(round_id)
        reveal = self._exchange(
            REVEAL, committed, {"round": round_id}, excluded, "no reveal", per_client=proofs
        )
        for reply in reveal.replies.values():
            self.view.store.put(reply.blob("blob"))
        collected = self.aggregator.collect(round_id, manifest)
        for client_id, reason in {**collected.unrevealed, **collected.rejected}.items():
            excluded.setdefault(client_id, reason)
        total: np.ndarray | None = None
        included: tuple[int, ...] = ()
        session = masking or public_session(
            manifest, scheme_schema=self.cfg.secagg, public_context=self.public_context
        )
        if collected.blobs:
            try:
                aggregate, publication = self._combine(round_id, manifest, session, collected)
                included = tuple(session.combined)
                total = self._release(
                    round_id, manifest, session, aggregate, included, publication=publication
                )
            except (SecAggError, ChainError) as error:
                for client_id in collected.blobs:
                    excluded.setdefault(
                        client_id, f"round aborted: {type(error).__name__}: {error}"
                    )
                total, included = None, ()
            for client_id, reason in collected.rejected.items():
                excluded.setdefault(client_id, reason)
            if self.ledger.round_info(round_id).status is RoundStatus.RELEASING:
                # a committee reserved the release and no member ended it (all lost before
                # the combine): only a member can, so the round stays reserved, unfinalized
                # (no reputation event), the auditor names it, and the next round goes on
                log.warning(
                    "round %d: the committee reserved its release and no member ended it; "
                    "the round stays reserved on chain, unfinalized",
                    round_id,
                )
            else:
                self.aggregator.finalize(round_id)
        for client_id in included:
            excluded.pop(client_id, None)
        _, findings = self.auditor.audit_round(round_id)
        flagged = self._flag(findings)
        mean_update: np.ndarray | None = None
        if total is not None and included:
            mean_update = total / math.fsum(weights[c] for c in included)
        if self.privacy is not None:  # dp=client: account the release (its noise is in it)
            mean_update = self.privacy.after_reveal(
                round_id=round_id, mean_update=mean_update, selected=admitted, survivors=included
            )
        if mean_update is not None:
            step = self.server.step(mean_update)
            params = params + np.asarray(step, dtype=np.float64).astype(params.dtype)
        accuracy, loss, per_client = self._evaluate(params)
        self.per_client_accuracy = per_client
        gas = sum(self.ledger.gas_by_round(round_id).values())
        spent = self._round_privacy()
        record = RoundRecord(
            round=round_id,
            accuracy=accuracy,
            auc=None,
            loss=loss,
            n_clients=len(included),
            dropped=sorted(c for c in admitted if c not in train.replies),
            bytes_up=int(sum(session.stats.bytes_up.values())),
            bytes_down=0,
            seconds=RoundSeconds(
                train=sum(r.number("train_seconds") for r in train.replies.values()),
                protect=sum(r.number("protect_seconds") for r in train.replies.values()),
                combine=session.stats.seconds.get("combine", 0.0),
                reveal=session.stats.seconds.get("reveal", 0.0),
            ),
            gas_used=gas,
            epsilon=spent.epsilon,
            epsilon_per_client=spent.epsilon_per_client,
            delta=spent.delta,
            excluded=excluded,
            reputation={
                h.name: self.ledger.reputation(h.address).score for h in self.hospitals.values()
            },
            flagged=flagged,
            committee=self.committee_stats.pop(round_id, None),
        )
        return params, record

    def _manifest(
        self, round_id: int, admitted: Sequence[int], weights: dict[int, float], *, dim: int
    ) -> RoundManifest:
        """The round's manifest; with dp=client it commits the federation's policy and the
        head of its event chain (the releases before this round, put in the store first)."""
        federation_policy, federation_event = None, None
        if self.privacy is not None:
            federation_policy = self.privacy.federation_policy()
            events = self.privacy.federation_events()
            for event in events:
                self.view.store.put(event.canonical_bytes())
            federation_event = events[-1].digest().hex() if events else None
        return RoundManifest(
            round_id=round_id,
            scheme=self.cfg.secagg.name,
            scheme_config=dataclasses.asdict(self.cfg.secagg),
            dim=dim,
            clients=tuple(
                ManifestClient(
                    client_id=c,
                    address=self.hospitals[c].address,
                    weight=weights[c],
                    expected_steps=None if (p := self.hospitals[c].policy) is None else p.steps,
                    policy=self.hospitals[c].policy,
                )
                for c in admitted
            ),
            public_material=self.public_material,
            dp_mode=self.cfg.dp.name,
            federation_policy=federation_policy,
            federation_event=federation_event,
        )

    def _refused_round(self, round_id: int, params: np.ndarray, refused: dict[int, str]) -> Any:
        """The record of a round the federation's budget refused before any training (as
        the runner: no round on the ledger, nothing released, nothing accounted)."""
        from experiments._federation import RoundRecord, RoundSeconds

        accuracy, loss, per_client = self._evaluate(params)
        self.per_client_accuracy = per_client
        spent = self._round_privacy()
        return RoundRecord(
            round=round_id,
            accuracy=accuracy,
            auc=None,
            loss=loss,
            n_clients=0,
            dropped=[],
            bytes_up=0,
            bytes_down=0,
            seconds=RoundSeconds(train=0.0, protect=0.0, combine=0.0, reveal=0.0),
            gas_used=0,
            epsilon=spent.epsilon,
            epsilon_per_client=spent.epsilon_per_client,
            delta=spent.delta,
            excluded=dict(refused),
            reputation={
                h.name: self.ledger.reputation(h.address).score for h in self.hospitals.values()
            },
            flagged={},
        )

    def _exchange(
        self,
        message_type: str,
        clients: Sequence[int],
        fields: dict[str, Any],
        excluded: dict[int, str],
        reason: str,
        *,
        params: np.ndarray | None = None,
        per_client: dict[int, dict[str, Any]] | None = None,
    ) -> Exchange:
        """Send one stage to ``clients`` (``per_client``: fields added for one client);
        a client without a reply is excluded."""
        arrays = {"params": params} if params is not None else {}
        by_node = {self.hospitals[c].node_id: c for c in clients}
        extra = per_client or {}
        requests = {
            node: WireMessage(message_type, fields={**fields, **extra.get(c, {})}, arrays=arrays)
            for node, c in by_node.items()
        }
        exchange = self.transport.exchange(requests, timeout=self.settings.stage_timeout_s)
        for node_id, why in exchange.failures.items():
            excluded.setdefault(by_node[node_id], f"{reason}: {why}")
        return Exchange(
            replies={by_node[n]: r for n, r in exchange.replies.items()},
            failures={by_node[n]: why for n, why in exchange.failures.items()},
        )

    # ----------------------------------------------------------- batched and merkle rounds
    def _submit_signed(
        self,
        round_id: int,
        manifest: RoundManifest,
        replies: dict[int, WireMessage],
        excluded: dict[int, str],
    ) -> tuple[list[int], dict[int, dict[str, Any]]]:
        """Batched and merkle rounds: put the hospitals' signed rows on chain in one
        transaction (``commitBatch``; merkle: ``openRoundWithRoot`` with the root of their
        leaves). Each row is checked first (round, manifest, the hospital's own signature):
        a bad one leaves only its hospital out, with the reason in ``excluded`` (the
        contract would revert the whole batch). Returns the hospitals whose commitment
        counts and, merkle, each one's leaf proof for its ``reveal`` request."""
        label = "leaf refused" if self.commit_mode == "merkle" else "batch commit refused"
        manifest_digest = keccak256(manifest.canonical_bytes())
        rows: dict[int, SignedCommit] = {}
        for client_id, reply in sorted(replies.items()):
            try:
                signed = signed_commit_from(reply, client=self.hospitals[client_id].address)
            except WireFormatError as error:
                excluded[client_id] = f"{label}: {error}"
                continue
            reason = refusal_of(
                self.ledger, signed, round_id=round_id, manifest_digest=manifest_digest
            )
            if reason is not None:
                log.warning("round %d: hospital %d's row refused: %s", round_id, client_id, reason)
                excluded[client_id] = f"{label}: {reason}"
                continue
            rows[client_id] = signed
        refused: dict[str, str] = {}
        try:
            if self.commit_mode == "merkle":  # opens the round, even with no leaf
                _, refused = self.aggregator.submit_root(round_id, list(rows.values()))
            elif rows:
                _, refused = self.aggregator.submit_batch(round_id, list(rows.values()))
        except ChainError as error:  # nothing committed
            refused = {s.client: f"{type(error).__name__}: {error}" for s in rows.values()}
        by_address = {s.client.lower(): c for c, s in rows.items()}
        for address, reason in refused.items():
            owner = by_address.get(address.lower())
            if owner is not None:
                excluded[owner] = f"{label}: {reason}"
                del rows[owner]
        proofs: dict[int, dict[str, Any]] = {}
        if self.commit_mode == "merkle" and rows:
            info = self.ledger.round_info(round_id)
            for client_id, signed in rows.items():
                inclusion = check_inclusion(
                    self.ledger, self.view.store, round_id, signed, info=info
                )
                proofs[client_id] = leaf_proof_fields(inclusion.at_index, inclusion.proof)
        return sorted(rows), proofs

    def _combine(
        self, round_id: int, manifest: RoundManifest, session: Any, collected: Any
    ) -> tuple[bytes, SignedPublication | None]:
        """Combine and publish; a merkle round the key holder releases: combine and sign
        the publication, which the key holder sends with its reservation (as in-process)."""
        if self.commit_mode == "merkle" and scheme_class(manifest.scheme).releases_via_key_holder:
            return self.aggregator.combine_and_sign(round_id, session, collected)
        aggregate, _ = self.aggregator.combine_and_publish(round_id, session, collected)
        return aggregate, None

    def _release(
        self,
        round_id: int,
        manifest: RoundManifest,
        session: Any,
        aggregate: bytes,
        included: Sequence[int],
        *,
        publication: SignedPublication | None = None,
    ) -> np.ndarray:
        """The revealed sum: the key holder's release (CKKS), or the plain sum, or (masking)
        the sum the aggregator unmasks with the hospitals' shares (no single party
        decrypts, nothing to attest: as the runner)."""
        if not scheme_class(manifest.scheme).releases_via_key_holder:
            # the driver releases (plain, masking): dp=client's central noise is its own,
            # added inside the release (masking: refused at construction, distributed only)
            party = KeyHolderParty(consortium=self.view.as_consortium(), attests=False)
            noise = (
                None
                if self.privacy is None
                else self.privacy.release_noise_std(len(manifest.clients))
            )
            total, _ = party.reveal(
                round_id, manifest, session, aggregate, survivors=included, noise_std=noise
            )
            return np.asarray(total, dtype=np.float64)
        if self.key_holder_node is None and self.committee_nodes is None:
            raise DeploymentError("no key holder")
        fields: dict[str, Any] = {
            "round": round_id,
            "manifest": manifest.canonical_bytes(),
            "aggregate": aggregate,
            **self._ledger_fields(),
        }
        commitments = round_commitments(self.ledger, self.view.store, round_id)
        committed = {c.client.lower(): c.blob_digest for c in commitments}
        info = self.ledger.round_info(round_id)
        if info.merkle and info.leaves_digest is not None:  # the commitments under the root
            fields[LEAF_SET] = self.view.store.get(info.leaves_digest)
        if publication is not None:
            fields |= publication_fields(publication)
        for index, client_id in enumerate(included):
            digest = committed[self.view.address_of(client_id).lower()]
            fields[f"blob.{index}"] = self.view.store.get(digest)
        fields["blobs"] = len(included)
        if self.privacy is not None:  # dp=client: the chain the key holder re-accounts
            fields["federation_events"] = json.dumps(
                [e.canonical_bytes().decode("ascii") for e in self.privacy.federation_events()]
            )
        if self.committee_nodes is not None:
            total, stats = self.committee_nodes.release(
                self.transport,
                round_id=round_id,
                fields=fields,
                ledger=self.ledger,
                store=self.view.store,
                timeout=self.settings.stage_timeout_s,
            )
            self.committee_stats[round_id] = stats
            return self._check_released(round_id, total)
        node = self.key_holder_node
        assert node is not None
        exchange = self.transport.exchange(
            {node: WireMessage(RELEASE, fields=fields)}, timeout=self.settings.stage_timeout_s
        )
        if node not in exchange.replies:
            raise DeploymentError(f"the key holder did not release: {exchange.failures.get(node)}")
        total = exchange.replies[node].array("total").astype(np.float64)
        return self._check_released(round_id, total)

    def _check_released(self, round_id: int, total: np.ndarray) -> np.ndarray:
        # The attested reveal digest names these bytes: keep them beside the blobs.
        released = self.view.store.put(np.asarray(total, dtype="<f8").tobytes())
        attested = self.ledger.round_info(round_id).reveal_digest
        if attested is None or bytes(attested) != bytes(released):
            raise DeploymentError(f"round {round_id}: the released sum is not the attested one")
        return total

    # ------------------------------------------------------------------------ privacy
    def _check_client_level(self) -> None:
        """dp=client: what the runner's :class:`ClientLevelPrivacy` refuses, refused before
        any node is asked: central noise needs a single releasing party (not masking),
        distributed noise needs secure aggregation (not plain)."""
        from dp import DPError, require_secure_aggregation

        dp_cfg = self.cfg.dp
        if dp_cfg.name != "client":
            return
        scheme = self.cfg.secagg.name
        distributed = bool(getattr(dp_cfg, "distributed", False))
        refusal = scheme_class(scheme).release_noise_refusal
        if not distributed and refusal is not None:
            raise SettingsError(
                "dp=client with central noise needs a single releasing party that adds the "
                f"noise inside its release; with secagg={scheme} {refusal}: use "
                "dp.distributed=true (or secagg=plain|ckks)"
            )
        try:
            require_secure_aggregation(distributed, scheme)
        except DPError as error:
            raise SettingsError(f"dp=client: {error}") from error

    def _build_client_level_privacy(self) -> None:
        """dp=client: the federation's accountant, as the runner builds it, over the
        hospitals that take part (the population its client sampling rate is over). It
        lives on the driver, which keeps the federation's event chain; the noise is added
        by the releasing party (CKKS: the key holder, from the committed federation policy;
        plain: this driver inside its release; distributed: each hospital's share)."""
        from experiments._errors import ConfigError
        from experiments._privacy import build_privacy_layer, preprocessing_for

        if self.cfg.dp.name != "client":
            return
        population = _Population(
            clients=tuple(sorted(self.hospitals)), preprocessing=preprocessing_for(self.cfg.dp)
        )
        try:
            self.privacy = build_privacy_layer(
                self.cfg.dp,
                federation=self.cfg.federation,
                data=population,  # type: ignore[arg-type]  # only its size is read
                scheme_name=self.cfg.secagg.name,
            )
        except ConfigError as error:
            raise SettingsError(f"dp=client: {error}") from error

    def _keep_events(self, client_id: int, round_id: int, text: str) -> None:
        """Store a hospital's chain of privacy events (the auditor follows it through the
        store) and keep it for the epsilon of ``results.json``. The events are public: the
        ledger commits their digests and cumulative epsilon; the accountant stays on the
        site. The whole chain comes with every reply, so an event whose reply was lost
        (the hospital trained, then its reply never arrived) reaches the store later."""
        from dp import GENESIS_DIGEST, DPError, PrivacyEvent

        if self.hospitals[client_id].policy is None:
            if text:
                raise DeploymentError(f"hospital {client_id} sent privacy events without DP")
            return
        try:
            chain = [PrivacyEvent.from_bytes(raw.encode("ascii")) for raw in json.loads(text)]
        except (DPError, ValueError, TypeError, AttributeError) as error:
            raise DeploymentError(f"hospital {client_id}: bad privacy events: {error}") from error
        previous = GENESIS_DIGEST
        for event in chain:
            if event.previous_digest != previous:
                raise DeploymentError(f"hospital {client_id}: its privacy events do not chain")
            previous = event.digest_hex()
        if not chain or chain[-1].round_id != round_id:
            raise DeploymentError(f"hospital {client_id}: no privacy event for round {round_id}")
        for event in chain:
            self.view.store.put(event.canonical_bytes())
        self.events[client_id] = chain

    def _epsilon_per_client(self) -> dict[str, float]:
        return {
            h.name: self.events[p][-1].cumulative_epsilon if self.events.get(p) else 0.0
            for p, h in sorted(self.hospitals.items())
        }

    def _round_privacy(self) -> Any:
        """The record's cumulative privacy fields, as the runner's ``dp=sample`` reports
        them (max over hospitals, and each hospital's), from the hospitals' events; with
        ``dp=client`` the federation's accountant's."""
        from experiments._privacy import RoundPrivacy

        if self.privacy is not None:
            return self.privacy.round_privacy()
        if self.cfg.dp.name != "sample":
            return RoundPrivacy()
        per_client = self._epsilon_per_client()
        return RoundPrivacy(
            epsilon=max(per_client.values()),
            epsilon_per_client=per_client,
            delta=float(self.cfg.dp.delta),
        )

    def _final_privacy(self) -> tuple[float | None, float | None, dict[str, Any] | None]:
        """``(final.epsilon, final.delta, final.privacy)`` as the runner's."""
        from dp import summarize_events
        from experiments._privacy import preprocessing_for

        if self.privacy is not None:
            return self.privacy.final_privacy()
        if self.cfg.dp.name != "sample":
            return None, None, None
        summaries: dict[str, Any] = {}
        for partition, hospital in sorted(self.hospitals.items()):
            events = self.events.get(partition, [])
            if events:
                summary = summarize_events(events)
            else:
                summary = {"client_id": hospital.name, "rounds": 0, "total_steps": 0}
                summary["epsilon"] = 0.0
            policy = hospital.policy
            if policy is not None:
                summary["planned_noise_multiplier"] = policy.noise_multiplier
                summary["planned_sample_rate"] = policy.sample_rate
                summary["planned_steps_per_round"] = policy.steps
            summary["preprocessing"] = preprocessing_for(self.cfg.dp)
            summaries[hospital.name] = summary
        epsilon = max(self._epsilon_per_client().values())
        return epsilon, float(self.cfg.dp.delta), summaries

    def _flag(self, findings: Sequence[Any]) -> dict[int, int]:
        flagged: dict[int, int] = {}
        sender = self.view.parties.auditor
        caught = culprits(findings)
        if sender is None:  # attached without an auditor key: the findings stay in the results
            for (round_id, address), code in caught.items():
                log.warning(
                    "round %d: %s would be flagged (code %d); this driver holds no auditor "
                    "account (auditor-key-file)",
                    round_id,
                    address,
                    code,
                )
            return flagged
        for (round_id, address), code in caught.items():
            try:
                self.ledger.flag(address, round_id, code, sender=sender)
            except AlreadyFlagged:
                continue
            except ChainError as error:
                log.warning("round %d: could not flag %s: %s", round_id, address, error)
                continue
            flagged[self.view.client_id_of(address)] = code
        return flagged

    def _evaluate(self, params: np.ndarray) -> tuple[float, float, dict[str, float]]:
        """Pooled test accuracy and loss (weighted by each hospital's test size)."""
        nodes = {h.node_id: h for h in self.hospitals.values()}
        message = WireMessage(EVALUATE, arrays={"params": params})
        exchange = self.transport.exchange(
            dict.fromkeys(nodes, message), timeout=self.settings.stage_timeout_s
        )
        n_total = sum(r.integer("n_samples") for r in exchange.replies.values())
        if n_total == 0:
            return math.nan, math.nan, {}
        accuracy = sum(
            r.number("accuracy") * r.integer("n_samples") for r in exchange.replies.values()
        )
        loss = sum(r.number("loss") * r.integer("n_samples") for r in exchange.replies.values())
        per_client = {nodes[n].name: r.number("accuracy") for n, r in exchange.replies.items()}
        return accuracy / n_total, loss / n_total, per_client

    # ---------------------------------------------------------------------------- run
    def run(self) -> DeploymentRun:
        """Join, open the ledger, run every round, audit, write ``results.json``."""
        from experiments._artifacts import run_metadata
        from experiments._federation import FinalRecord, RunResults
        from experiments._runner import write_results
        from experiments._strategies import ServerOptimizer, server_params
        from secagg import audit

        start = time.perf_counter()
        nodes = self.transport.nodes()
        params = self.join(nodes)
        self.server = ServerOptimizer(server_params(self.cfg.federation), int(params.size))
        self.open_ledger()
        self._build_client_level_privacy()
        records = []
        self.per_client_accuracy = {}
        for round_id in range(1, self.cfg.federation.rounds + 1):
            params, record = self.run_round(round_id, params)
            log.info(
                "round %d: accuracy=%.4f clients=%d", round_id, record.accuracy, record.n_clients
            )
            records.append(record)
        if self.privacy is not None:  # the last release's event: no later manifest commits it
            for event in self.privacy.federation_events():
                self.view.store.put(event.canonical_bytes())
        report = audit(self.ledger, self.view.store)
        last = records[-1]
        epsilon, delta, privacy = self._final_privacy()
        final = FinalRecord(
            accuracy=last.accuracy,
            auc=None,
            per_client_accuracy=dict(self.per_client_accuracy),
            mean_client_accuracy=float(np.mean(list(self.per_client_accuracy.values())))
            if self.per_client_accuracy
            else math.nan,
            epsilon=epsilon,
            delta=delta,
            wall_seconds=time.perf_counter() - start,
            bytes_up_total=sum(r.bytes_up for r in records),
            gas_total=sum(r.gas_used or 0 for r in records),
            audit={
                "verdict": report.to_dict()["verdict"],
                "exit_code": report.exit_code,
                "findings": report.to_dict()["findings"],
            },
            privacy=privacy,
            privacy_audit=None if self.privacy is None else self.privacy.privacy_audit(),
        )
        import torch

        meta = run_metadata(torch.device("cpu"))
        meta["transport"] = type(self.transport).__name__
        if self.excluded_at_join:  # joined, but not registered on the consortium's ledger
            meta["left_out_at_join"] = {str(p): r for p, r in self.excluded_at_join.items()}
        ledger_entry = {
            "backend": "anvil",
            "url": self.backend.public_url,
            "chain_id": self.ledger.chain_id,
            "address": str(self.ledger.address),
            "store": str(self.store_dir),
            "deploy_gas": self.ledger.deploy_gas,
        }
        results = RunResults(
            config=self.resolved, rounds=records, final=final, ledger=ledger_entry, meta=meta
        )
        path = None
        if self.settings.output_dir is not None:
            path = write_results(results, self.settings.output_dir)
        return DeploymentRun(results=results, params=params, results_path=path)


__all__ = ["DeploymentRun", "DeploymentSettings", "RoundDriver"]
