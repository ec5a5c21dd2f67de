"""The masking scheme behind the runner's interface: all parties simulated in-process.

:class:`MaskingSession` plays the server and every client of one round, passing only
serialized messages between them (exactly what a deployment would send over a network),
and records bytes and seconds per phase. Stage mapping:

* ``setup(dropouts=...)``: advertise keys, then share keys; ``dropouts`` advertise their
  keys and vanish before sending shares (``advertise_dropouts`` vanish before advertising).
* ``protect``: the masked-input message of one client (its bytes down are the sealed shares
  the server routes to it at the start of this stage).
* ``combine``: accused clients rebut their accusers (whoever lied is excluded), then the
  server's modular sum of the valid masked inputs (deterministic).
* ``reveal(aggregate, survivors=...)``: in authenticated rounds the consistency check
  first (``survivors`` sign the survivor set; each reveals only after checking enough
  signatures on it), then unmask with the shares of ``survivors``.

Authenticated rounds: give ``accounts`` (client id -> its ledger ``LocalAccount``; in a
deployment each client holds only its own) and ``registry`` (client id -> the address the
ledger registered for it; defaults to the accounts' addresses). The round then runs the
actively secure variant (signed key advertisements checked against the registry, signed
accusations, the consistency check); see :mod:`secagg.masking._client`.

Clients that sent masked input stay in the sum even if they miss the unmask stage (their
self-mask seed is reconstructed); clients that did not are excluded (their masking key is
reconstructed). :attr:`MaskingSession.included`, :attr:`excluded` and :attr:`misbehaving`
say who is in the sum and why the others are not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from eth_account.signers.local import LocalAccount

from secagg._errors import EmptyAggregateError, ParameterMismatchError, SecAggError
from secagg._scheme import ProtectionScheme, RoundSession
from secagg.masking._client import MaskingClient
from secagg.masking._constants import SERVER_ID, Stage
from secagg.masking._errors import (
    BelowThresholdError,
    KeyAuthenticationError,
    MaskingParameterError,
    StageError,
    UnknownClientError,
)
from secagg.masking._messages import Aggregate, Header, MaskedInput
from secagg.masking._params import MaskingParams, RoundPlan, _count, plan_round
from secagg.masking._server import MaskingServer

if TYPE_CHECKING:
    from secagg._manifest import RoundManifest
    from secagg._store import ArtifactStore


class MaskingSession(RoundSession):
    """One round of pairwise-masking secure aggregation (SecAgg / SecAgg+)."""

    def __init__(
        self,
        params: MaskingParams,
        *,
        round_id: int,
        client_ids: Sequence[int],
        dim: int,
        accounts: Mapping[int, LocalAccount] | None = None,
        registry: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(round_id=round_id, client_ids=client_ids, dim=dim)
        self.params = params
        self.plan: RoundPlan = plan_round(params, round_id=round_id, client_ids=client_ids, dim=dim)
        if accounts is None and registry is not None:
            raise MaskingParameterError("a registry needs the clients' accounts")
        if accounts is not None:
            missing = set(self.plan.client_ids) - set(accounts)
            if missing:
                raise MaskingParameterError(f"no ledger account for clients {sorted(missing)}")
            if registry is None:
                registry = {client: str(accounts[client].address) for client in accounts}
        self.server = MaskingServer(self.plan, registry=registry)
        self.clients = {
            client: MaskingClient(
                self.plan,
                client,
                account=None if accounts is None else accounts[client],
                registry=registry,
            )
            for client in self.plan.client_ids
        }
        self._deliveries: dict[int, bytes] = {}
        self._dropped: dict[int, str] = {}
        self._aggregate: bytes | None = None

    def _check_known(self, clients: Collection[int], what: str) -> None:
        unknown = set(clients) - set(self.plan.client_ids)
        if unknown:
            raise UnknownClientError(f"{what} {sorted(unknown)} are not in this round")

    def setup(
        self, *, dropouts: Collection[int] = (), advertise_dropouts: Collection[int] = ()
    ) -> None:
        """Advertise keys, then share keys; see the module docstring for the dropouts."""
        self._check_known(dropouts, "dropouts")
        self._check_known(advertise_dropouts, "advertise_dropouts")
        if self.server.stage != Stage.ADVERTISE_KEYS:
            raise StageError("setup already ran for this round")
        stats = self.stats
        with stats.timed("setup"):
            adverts = {
                client: self.clients[client].advertise_keys()
                for client in self.plan.client_ids
                if client not in advertise_dropouts
            }
            stats.bytes_up["setup"] += sum(map(len, adverts.values()))
            self.server.collect(self.server.receive_advertise, adverts)
            broadcasts = self.server.broadcast_keys()
            stats.bytes_down["setup"] += sum(map(len, broadcasts.values()))
            uploads = {}
            for client, broadcast in broadcasts.items():
                if client in dropouts:
                    continue
                try:
                    uploads[client] = self.clients[client].share_keys(broadcast)
                except BelowThresholdError as error:
                    self._dropped[client] = f"aborted in share keys: {error}"
            stats.bytes_up["setup"] += sum(map(len, uploads.values()))
            self.server.collect(self.server.receive_share_keys, uploads)
            self._deliveries = self.server.deliver_shares()
        for client in advertise_dropouts:
            self._dropped[client] = "dropped before advertising keys"
        for client in dropouts:
            self._dropped[client] = "dropped before sharing keys"

    def protect(self, client_id: int, update: np.ndarray) -> bytes:
        """The masked-input message of ``client_id`` (after :meth:`setup`)."""
        self._check_known([client_id], "client")
        delivery = self._deliveries.get(client_id)
        if delivery is None:
            raise StageError(f"client {client_id} did not complete setup (or setup did not run)")
        with self.stats.timed("protect"):
            blob = self.clients[client_id].masked_input(delivery, self.check_update(update))
        self.stats.bytes_down["protect"] += len(delivery)
        self.stats.bytes_up["protect"] += len(blob)
        return blob

    def combine(self, blobs: Mapping[int, bytes]) -> bytes:
        """The server's modular sum of the valid masked inputs (same blobs, same bytes)."""
        if not blobs:
            raise EmptyAggregateError("no masked inputs to combine")
        with self.stats.timed("combine"):
            if self._aggregate is None:
                self._rebut(blobs)
                self._aggregate = self.server.receive_masked_inputs(blobs)
                self.combined = self.included
                return self._aggregate
            return self.server.combine(blobs).aggregate

    def _rebut(self, blobs: Mapping[int, bytes]) -> None:
        """Each accused client that sent masked input answers each accusation."""
        stats = self.stats
        for (accused, _reporter), request in self.server.rebuttal_requests(blobs).items():
            stats.bytes_down["combine"] += len(request)
            try:
                rebuttal = self.clients[accused].rebut(request)
            except ValueError as error:  # refuses: then it is excluded as unrebutted
                if not isinstance(error, SecAggError):
                    raise
                continue
            stats.bytes_up["combine"] += len(rebuttal)
            self.server.collect(self.server.receive_rebuttal, {accused: rebuttal})

    def _consistency_check(self, survivors: Collection[int]) -> list[int]:
        """Authenticated rounds: survivors sign U3 and check each other's signatures."""
        stats, server = self.stats, self.server
        requests = server.consistency_requests(survivors)
        stats.bytes_down["reveal"] += sum(map(len, requests.values()))
        signatures = {
            client: self.clients[client].sign_survivors(r) for client, r in requests.items()
        }
        stats.bytes_up["reveal"] += sum(map(len, signatures.values()))
        server.collect(server.receive_consistency, signatures)
        proofs = server.consistency_proofs()
        stats.bytes_down["reveal"] += sum(map(len, proofs.values()))
        for client, proof in proofs.items():
            self.clients[client].check_consistency(proof)
        return sorted(proofs)

    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        """Unmask with the shares of ``survivors``; returns the float sum of included updates."""
        if self._aggregate is None:
            raise StageError("reveal before combine")
        if bytes(aggregate) != self._aggregate:
            raise ParameterMismatchError("aggregate differs from the one this round combined")
        stats = self.stats
        with stats.timed("reveal"):
            if self.server.authenticated:
                survivors = self._consistency_check(survivors)
            requests = self.server.unmask_requests(survivors)
            stats.bytes_down["reveal"] += sum(map(len, requests.values()))
            responses = {}
            for client, request in requests.items():
                responses[client] = self.clients[client].unmask(request)
            stats.bytes_up["reveal"] += sum(map(len, responses.values()))
            self.server.collect(self.server.receive_unmask_response, responses)
            return self.server.finish()

    @property
    def included(self) -> tuple[int, ...]:
        """Clients whose updates are in the revealed sum."""
        return self.server.included

    @property
    def accusations(self) -> dict[int, tuple[int, ...]]:
        """Accused client -> the clients that reported its shares as unopenable."""
        return self.server.accusations

    @property
    def misbehaving(self) -> dict[int, str]:
        """Clients caught sending bad input, with the named error."""
        return self.server.misbehaving

    @property
    def excluded(self) -> dict[int, str]:
        """Every selected client not in the sum, with why (dropout or misbehaviour)."""
        included = set(self.included)
        reasons = {**self._dropped, **self.misbehaving}
        out = {}
        for client in self.plan.client_ids:
            if client in included:
                continue
            out[client] = reasons.get(client, "sent no masked input")
        return out


class MaskingScheme(ProtectionScheme):
    """Pairwise-masking secure aggregation: no key holder; the server learns only the sum.

    Trust model: the server is honest-but-curious and colludes with fewer than ``t`` of any
    client's neighbours (guaranteed with probability ``1 - 2^-security_bits`` for up to
    ``max_corrupt_fraction`` corrupt clients); see :mod:`secagg.masking._graph`.
    """

    name = "masking"
    supports_resume = False  # the unmasking state (routed shares) lives in server memory
    binds_round = True
    key_agreement_stages = True
    release_noise_refusal = "the aggregator unmasks the exact sum"
    interrupted_round_reason = (
        "a masking round cannot resume: the unmasking state (the routed Shamir shares) "
        "lived in the interrupted aggregator's memory"
    )

    def __init__(self, params: MaskingParams | None = None) -> None:
        self.params = params or MaskingParams()

    def manifest_config(self) -> dict[str, Any]:
        """``name`` and every masking parameter (what ``check_manifest_config`` needs)."""
        return {"name": self.name, **dataclasses.asdict(self.params)}

    def ledger_round_kwargs(
        self, *, ledger: Any, accounts: Mapping[int, Any], addresses: Mapping[int, str]
    ) -> dict[str, Any]:
        """Rounds over a ledger run authenticated (Bonawitz et al. 2017, malicious server):
        each client signs its key advertisement with its ledger account, and every client
        checks the others' against the registry on chain, so the server cannot substitute
        keys."""
        return {"accounts": dict(accounts), "registry": ledger_registry(ledger, addresses)}

    def _plan(self, n_clients: int) -> RoundPlan:
        return plan_round(self.params, round_id=0, client_ids=range(n_clients), dim=1)

    def sum_tolerance(self, *, n_clients: int) -> float:
        return n_clients / self._plan(n_clients).scale  # one quantization step per client

    def max_dropouts(self, *, n_clients: int) -> int:
        """Exact for a complete graph in an unauthenticated round (``t`` masked inputs and
        ``t`` share holders); a sparse graph survives ``max_dropout_fraction`` with the
        plan's correctness probability, and an authenticated round also needs
        ``consistency_threshold`` signers of the survivor set."""
        plan = self._plan(n_clients)
        if plan.complete:
            return n_clients - plan.threshold
        return _count(self.params.max_dropout_fraction, n_clients)

    @classmethod
    def check_manifest_config(cls, config: Mapping[str, Any]) -> None:
        """The masking scheme's public parameters must all be declared, and valid."""
        from secagg._manifest import ManifestError

        names = [f.name for f in dataclasses.fields(MaskingParams)]
        missing = [name for name in names if name not in config]
        if missing:
            raise ManifestError(f"manifest scheme_config lacks masking parameter(s) {missing}")
        try:
            MaskingParams(**{name: config[name] for name in names})
        except SecAggError as error:
            raise ManifestError(f"manifest scheme_config: {error}") from error

    @classmethod
    def check_feasible(cls, schema: Any, *, clients_per_round: int, dropout: float) -> None:
        """A round of ``clients_per_round`` clients must be plannable at the configured
        dropout (the larger of ``max_dropout_fraction`` and ``dropout``); the error names
        the largest dropout fraction that many clients allow."""
        selected = clients_per_round
        fraction = max(float(schema.max_dropout_fraction), dropout)

        def plan(max_dropout: float) -> str | None:
            try:
                params = MaskingParams.from_schema(
                    dataclasses.replace(schema, max_dropout_fraction=max_dropout)
                )
                plan_round(params, round_id=1, client_ids=list(range(selected)), dim=1)
            except SecAggError as error:
                return str(error)
            return None

        problem = plan(fraction)
        if problem is None:
            return
        allowed = [k for k in range(selected) if plan(k / selected) is None]
        if not allowed:
            hint = f"no dropout fraction works for n={selected} clients per round"
        else:
            most = max(allowed)
            hint = (
                f"the most it allows for n={selected} is {most / selected:g} "
                f"({most} of {selected} clients may drop)"
            )
        raise MaskingParameterError(
            f"cannot plan a round of {selected} clients with dropout fraction "
            f"{fraction:g}: {problem}; {hint}"
        )

    @classmethod
    def recombine(
        cls,
        manifest: RoundManifest,
        blobs: Sequence[tuple[int, bytes]],
        *,
        store: ArtifactStore,
    ) -> bytes:
        from secagg._manifest import ManifestError

        try:
            params = MaskingParams.from_schema(_Schema(manifest.scheme_config))
        except (AttributeError, TypeError, ValueError) as error:
            raise ManifestError(
                f"the manifest's masking parameters are unusable: {error}"
            ) from error
        plan = plan_round(
            params,
            round_id=manifest.round_id,
            client_ids=[c.client_id for c in manifest.clients],
            dim=manifest.dim,
        )
        total = np.zeros(plan.dim, dtype=np.uint32)
        for _, blob in blobs:
            message = MaskedInput.decode(
                blob, round_id=plan.round_id, params_digest=plan.params_digest, dim=plan.dim
            )
            total += message.vector
        total &= np.uint32(plan.modulus_mask)
        header = Header(plan.round_id, plan.params_digest, SERVER_ID)
        return Aggregate(header, tuple(client_id for client_id, _ in blobs), total).encode()

    def start_round(
        self,
        *,
        round_id: int,
        client_ids: Sequence[int],
        dim: int,
        accounts: Mapping[int, LocalAccount] | None = None,
        registry: Mapping[int, str] | None = None,
    ) -> MaskingSession:
        """A round; with ``accounts`` (and ``registry``) the actively secure variant."""
        return MaskingSession(
            self.params,
            round_id=round_id,
            client_ids=client_ids,
            dim=dim,
            accounts=accounts,
            registry=registry,
        )


class _Schema:
    """Attribute access over a manifest's scheme-config mapping (what ``from_schema`` reads)."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self.__dict__.update(values)


def ledger_registry(ledger: Any, addresses: Mapping[int, str]) -> dict[int, str]:
    """The PKI of an authenticated round, read from the ledger's registry.

    ``addresses`` maps client ids to the addresses the round selected; each must hold the
    CLIENT role on ``ledger`` (a :class:`chain.Ledger`), else :class:`KeyAuthenticationError`.
    """
    from chain import Role

    registry = {}
    for client, address in sorted(addresses.items()):
        if Role.CLIENT not in ledger.roles_of(address):
            raise KeyAuthenticationError(
                f"client {client}'s address {address} is not a registered client on the ledger"
            )
        registry[client] = str(address)
    return registry


def build_masking_scheme(schema: Any) -> MaskingScheme:
    """Factory for the ``secagg`` registry: a ``MaskingSchema`` -> a validated scheme."""
    return MaskingScheme(MaskingParams.from_schema(schema))
