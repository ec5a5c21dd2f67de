"""The ledger layer of a run: consortium, artifact store and the hardened round protocol.

With ``chain=inprocess|anvil|rpc`` the runner opens the backend, deploys the consortium's
ledger, registers an account for every party (fresh keys held in memory, or keys derived
from ``chain.keys_seed_file``, :mod:`secagg._party_keys`) and drives every round through
:class:`secagg.SecureRoundProtocol`: commitments, blind combination, attested reveal,
finalization, a per-round audit whose findings flag the culprits, and reputation-based
selection. ``chain=none`` runs the same round on a :class:`chain.MemoryLedger` (the
contract's rules for direct rounds and the decryption committee, kept in memory, no EVM):
one round driver for every configuration, so ``rounds[]`` has the same fields whichever
ledger ran; only gas is absent, and ``results.json`` records no ledger (nothing outlives
the run for an outside auditor; the run's own final audit is in ``final.audit``).

A resumed run (``run.resume``) deploys nothing: it attaches to the checkpoint's contract
and refuses (:class:`CheckpointError`) unless the node's chain id is the checkpoint's,
code is deployed at the address, the admin and the roles are the parties derived from the
seed (whose addresses the checkpoint recorded), every round the checkpoint recorded is in
the same state on chain, and the next round was never opened. A round the interrupted
process opened and did not checkpoint cannot be finished here (:func:`_open_round_reason`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from chain import (
    ChainConfigError,
    ChainError,
    Ledger,
    MemoryLedger,
    Role,
    WrongRound,
    commit_mode_of,
    open_backend,
)
from experiments._errors import CheckpointError, ConfigError
from secagg import (
    ArtifactStore,
    AuditReport,
    Consortium,
    LocalDirectoryStore,
    MemoryStore,
    Parties,
    PartyKeyError,
    ProtectionScheme,
    SecureRoundProtocol,
    audit,
    read_seed_file,
)
from secagg._hydra import scheme_class


@dataclasses.dataclass
class LedgerLayer:
    """What the federation needs of the ledger: the protocol and where things live."""

    protocol: SecureRoundProtocol
    backend_name: str
    url: str | None
    store_dir: Path
    party_keys: str = "fresh"  # "seed": derived from chain.keys_seed_file
    round_states: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        """Whether the ledger is a :class:`chain.MemoryLedger` (``chain=none``): nothing
        outlives the run, no gas."""
        return isinstance(self.consortium.ledger, MemoryLedger)

    @property
    def consortium(self) -> Consortium:
        return self.protocol.consortium

    def entry(self) -> dict[str, Any] | None:
        """``results.json``'s ``ledger`` entry (addresses only: no keys, no seed, no URL
        credentials); None for a memory ledger, which no one can consult after the run."""
        if self.in_memory:
            return None
        ledger = self.consortium.ledger
        return {
            "backend": self.backend_name,
            "url": self.url,
            "chain_id": ledger.chain_id,
            "address": str(ledger.address),
            "start_block": ledger.start_block,
            "store": str(self.store_dir),
            "deploy_gas": getattr(ledger, "deploy_gas", None),
            "party_keys": self.party_keys,
            "parties": self.consortium.parties.addresses(),
        }

    def reference(self, last_round: int) -> dict[str, Any] | None:
        """What a checkpoint after ``last_round`` records of the ledger: :meth:`entry` and
        the on-chain state of every round so far (status and aggregate digest); None for a
        memory ledger (a resumed ``chain=none`` run starts a fresh one)."""
        entry = self.entry()
        if entry is None:
            return None
        for round_id in range(1, last_round + 1):
            if round_id not in self.round_states or round_id == last_round:
                self.round_states[round_id] = round_state(self.consortium.ledger, round_id)
        rounds = [self.round_states[r] for r in range(1, last_round + 1)]
        return {**entry, "rounds": rounds}

    def final_audit(self) -> AuditReport:
        """A fresh auditor's verdict over every round, from ledger and store alone."""
        return audit(self.consortium.ledger, self.consortium.store)


def memory_layer(
    *,
    n_clients: int,
    scheme: ProtectionScheme,
    scheme_config: Mapping[str, Any],
    dim: int,
    dp_mode: str,
    store: ArtifactStore | None = None,
    store_dir: Path | None = None,
    dp_budget: float | None = None,
) -> LedgerLayer:
    """The ledger layer of ``chain=none``: fresh parties on a :class:`chain.MemoryLedger`
    and ``store`` (default: a :class:`secagg.MemoryStore`); the per-client budget on the
    ledger is ``dp_budget`` (the DP budget each client promises), none without it."""
    consortium = Consortium.in_memory(
        n_clients=n_clients,
        store=store if store is not None else MemoryStore(),
        epsilon_budget=dp_budget,
    )
    protocol = SecureRoundProtocol(
        consortium=consortium,
        scheme=scheme,
        scheme_config=dict(scheme_config),
        dim=dim,
        dp_mode=dp_mode,
    )
    return LedgerLayer(
        protocol=protocol,
        backend_name="none",
        url=None,
        store_dir=store_dir if store_dir is not None else Path("(memory)"),
    )


def round_state(ledger: Ledger, round_id: int) -> dict[str, Any]:
    """``{round, status, aggregate_digest}`` of ``round_id`` on chain (status NONE: never
    opened)."""
    try:
        info = ledger.round_info(round_id)
    except WrongRound:
        return {"round": round_id, "status": "NONE", "aggregate_digest": None}
    digest = info.aggregate_digest
    return {
        "round": round_id,
        "status": info.status.name,
        "aggregate_digest": None if digest is None else bytes(digest).hex(),
    }


def _open_round_reason(scheme: str, status: str) -> str:
    """Why a round the interrupted process opened (and never checkpointed) cannot be
    finished by a resumed run."""
    if status == "FINALIZED":
        return (
            "it was finalized after the checkpoint was written (the run stopped between "
            "the round's end and its checkpoint), so its result is on chain but not in the "
            "checkpoint, and the contract cannot open that round again"
        )
    why = scheme_class(scheme).interrupted_round_reason or (
        "finishing it (SecureRoundProtocol.resume_round) would release an aggregate "
        "whose privacy events and training records are not in the checkpoint's "
        "accountants"
    )
    return f"it is still {status.lower()} on chain and {why}"


def _derive_parties(chain_schema: Any, n_clients: int) -> Parties | None:
    seed_file = getattr(chain_schema, "keys_seed_file", None)
    if seed_file is None:
        return None
    try:
        return Parties.derive(n_clients, seed=read_seed_file(seed_file))
    except PartyKeyError as error:
        raise ConfigError(f"chain.{error}") from None


def _check_parties(saved: Mapping[str, Any] | None, parties: Parties) -> None:
    """The parties derived from this run's seed must be the checkpoint's, role by role."""
    if saved is None:
        raise CheckpointError(
            "run.resume: the checkpoint's run used fresh party keys (no "
            "chain.keys_seed_file), which no other process holds; it cannot resume"
        )
    derived = parties.addresses()
    differing = [role for role in derived if derived[role] != saved.get(role)]
    if differing:
        role = differing[0]
        shown = derived[role] if role != "clients" else f"{len(derived[role])} client addresses"
        recorded = saved.get(role) if role != "clients" else "other ones"
        raise CheckpointError(
            f"run.resume: the party keys derived from chain.keys_seed_file are not the "
            f"checkpoint's ({', '.join(differing)} differ: {role} {shown}, the checkpoint "
            f"recorded {recorded}); resume with the interrupted run's seed file"
        )


def _attach(
    backend: Any,
    reference: Mapping[str, Any],
    *,
    parties: Parties,
    scheme_name: str,
    url: str | None,
) -> Ledger:
    """The checkpoint's ledger on ``backend``, after every check of the module docstring."""
    address = str(reference["address"])
    where = f"the node at {url}" if url else "the node"
    if int(backend.chain_id) != int(reference["chain_id"]):
        raise CheckpointError(
            f"run.resume: {where} runs chain id {backend.chain_id}, the checkpoint's ledger "
            f"is on chain id {reference['chain_id']}"
        )
    try:
        ledger = Ledger.attach(backend, address, start_block=int(reference["start_block"]))
    except ChainConfigError:
        raise CheckpointError(
            f"run.resume: no contract code at the checkpoint's ledger address {address} on "
            f"{where} (chain id {backend.chain_id}): a node restarted without its state is a "
            "fresh chain that no longer holds the run's ledger; restart it with its state "
            "(`secagg node --state FILE`) or start a fresh run"
        ) from None
    ledger.deploy_gas = reference.get("deploy_gas")
    if ledger.admin.lower() != parties.admin.address.lower():
        raise CheckpointError(
            f"run.resume: the ledger at {address} has admin {ledger.admin}, not the admin "
            f"derived from chain.keys_seed_file ({parties.admin.address})"
        )
    expected = [
        (Role.AGGREGATOR, parties.aggregator.address),
        (Role.KEY_HOLDER, parties.key_holder.address),
        (Role.AUDITOR, parties.auditor.address),
        *((Role.CLIENT, account.address) for account in parties.clients),
    ]
    for role, party in expected:
        if role not in ledger.roles_of(party):
            raise CheckpointError(
                f"run.resume: {party} is not registered as {role.name} on the ledger at {address}"
            )
    for saved in reference.get("rounds", []):
        current = round_state(ledger, int(saved["round"]))
        if current != dict(saved):
            raise CheckpointError(
                f"run.resume: round {saved['round']} on the ledger at {address} is "
                f"{current['status']} (aggregate {current['aggregate_digest']}), the "
                f"checkpoint recorded {saved['status']} (aggregate {saved['aggregate_digest']})"
            )
    following = len(reference.get("rounds", [])) + 1
    status = round_state(ledger, following)["status"]
    if status != "NONE":
        raise CheckpointError(
            f"run.resume: round {following} of the ledger at {address} was opened by the "
            f"interrupted run and cannot be finished: {_open_round_reason(scheme_name, status)}"
            "; start a fresh run (a new contract)"
        )
    return ledger


def scheme_config_of(schema: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(schema) and not isinstance(schema, type):
        return dataclasses.asdict(schema)
    return dict(schema)


@contextlib.contextmanager
def open_ledger_layer(
    chain_schema: Any,
    *,
    n_clients: int,
    scheme: ProtectionScheme,
    scheme_schema: Any,
    dim: int,
    dp_mode: str,
    output_dir: Path | None,
    dp_budget: float | None = None,
    resume: Mapping[str, Any] | None = None,
) -> Iterator[LedgerLayer]:
    """Open the ledger ``chain_schema`` names (``chain=none``: :func:`memory_layer`);
    stops a node it started on exit. The on-chain per-client budget is
    ``chain.epsilon_budget``, lowered to ``dp_budget`` (the DP budget each client
    promises) when that is smaller, so the contract and the auditor enforce the run's own
    privacy promise. ``resume``: the checkpoint's ledger reference
    (:meth:`LedgerLayer.reference`) to attach to instead of deploying; its artifact store
    is reused."""
    if chain_schema.name == "none":
        # The blobs go to a temporary directory (bounded memory for large models), deleted
        # with the run: a memory ledger outlives nothing, so neither need its artifacts.
        with tempfile.TemporaryDirectory(prefix="secagg-none-") as tmp:
            yield memory_layer(
                n_clients=n_clients,
                scheme=scheme,
                scheme_config=scheme_config_of(scheme_schema),
                dim=dim,
                dp_mode=dp_mode,
                store=LocalDirectoryStore(tmp),
                store_dir=Path(tmp),
                dp_budget=dp_budget,
            )
        return
    parties = _derive_parties(chain_schema, n_clients)
    if resume is not None:
        if parties is None:  # validate_run refuses this first
            raise ConfigError("run.resume with a ledger needs chain.keys_seed_file")
        _check_parties(resume.get("parties"), parties)
    with contextlib.ExitStack() as stack:
        if resume is not None:
            store_dir = Path(str(resume["store"]))
            if not store_dir.is_dir():
                raise CheckpointError(
                    f"run.resume: the checkpoint's artifact store {store_dir} is not a "
                    "directory (the earlier rounds' blobs and manifests live there)"
                )
        elif chain_schema.store_dir is not None:
            store_dir = Path(chain_schema.store_dir)
        elif output_dir is not None:
            store_dir = output_dir / "artifacts"
        else:  # a run without an output directory keeps its artifacts only while it runs
            store_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="secagg-")))
        store_dir = store_dir.resolve()
        try:
            backend = stack.enter_context(open_backend(chain_schema))
            url = getattr(backend, "public_url", None)
            if resume is not None and parties is not None:
                consortium = Consortium(
                    ledger=_attach(
                        backend, resume, parties=parties, scheme_name=scheme.name, url=url
                    ),
                    store=LocalDirectoryStore(store_dir),
                    parties=parties,
                    deadline_blocks=chain_schema.deadline_blocks,
                    commit_mode=commit_mode_of(chain_schema),
                    challenge_window=chain_schema.challenge_window,
                    reputation_threshold=chain_schema.reputation_threshold,
                )
            else:
                consortium = Consortium.create(
                    backend,
                    n_clients=n_clients,
                    store=LocalDirectoryStore(store_dir),
                    epsilon_budget=min(
                        chain_schema.epsilon_budget,
                        dp_budget if dp_budget is not None else chain_schema.epsilon_budget,
                    ),
                    deadline_blocks=chain_schema.deadline_blocks,
                    commit_mode=commit_mode_of(chain_schema),
                    challenge_window=chain_schema.challenge_window,
                    reputation_threshold=chain_schema.reputation_threshold,
                    parties=parties,
                )
        except ChainError as error:
            if isinstance(error, ValueError):
                raise ConfigError(f"chain.{error}") from error
            raise
        protocol = SecureRoundProtocol(
            consortium=consortium,
            scheme=scheme,
            scheme_config=scheme_config_of(scheme_schema),
            dim=dim,
            dp_mode=dp_mode,
        )
        layer = LedgerLayer(
            protocol=protocol,
            backend_name=chain_schema.name,
            url=url,
            store_dir=store_dir,
            party_keys="fresh" if parties is None else "seed",
        )
        for saved in (resume or {}).get("rounds", []):
            layer.round_states[int(saved["round"])] = dict(saved)
        yield layer
