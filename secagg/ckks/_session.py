"""The ``ckks`` protection scheme: the three roles simulated in one process.

:class:`CKKSScheme` creates one :class:`~secagg.ckks._keyholder.KeyHolder` (keys outlive
rounds); every round the client encryptor and the aggregator are built from the public
context *bytes* only, and only bytes pass between the roles, as they would on the wire.

With a decryption committee (K > 1) there is no key holder: the round protocol
(:mod:`secagg._committee_round`) sets the committee up on the ledger and installs its
collective key with :meth:`CKKSScheme.install_public_context`. Without a ledger
(``chain=none``) the scheme simulates the K members in this process instead, with a random
CRP seed standing for the one the ledger fixes; each member checks the aggregate against
the blobs the round combined before its partial decryption, and all K partials are
combined (cross-checked when K > T).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from secagg._errors import EmptyAggregateError, ParameterMismatchError, SecAggError
from secagg._scheme import ProtectionScheme, RoundSession
from secagg.ckks._aggregator import CKKSAggregator, combine_blobs
from secagg.ckks._blob import parse_header
from secagg.ckks._client import CKKSClient
from secagg.ckks._committee import CommitteeMember, CommitteeSetupError, combine_partials
from secagg.ckks._committee_keys import CRP_SEED_SIZE, CommitteeParams
from secagg.ckks._keyholder import KeyHolder
from secagg.ckks._params import CKKSParams, RevealPolicy

if TYPE_CHECKING:
    from secagg._digest import Digest
    from secagg._manifest import RoundManifest
    from secagg._store import ArtifactStore


class CKKSScheme(ProtectionScheme):
    """CKKS blind aggregation: clients encrypt, the aggregator adds, the key holder reveals."""

    name = "ckks"
    releases_via_key_holder = True
    has_public_material = True
    interrupted_round_reason = (
        "its aggregate can be decrypted only with the key holder's CKKS secret key, "
        "which lived in the interrupted process's memory and is never written"
    )

    def __init__(
        self,
        *,
        params: CKKSParams,
        policy: RevealPolicy,
        committee: CommitteeParams | None = None,
    ) -> None:
        start = time.perf_counter()
        self.params = params
        self.policy = policy
        self.committee = committee or CommitteeParams(size=1, threshold=1)
        self.key_holder: KeyHolder | None = None
        self.public_context: bytes | None = None
        self._client: CKKSClient | None = None
        if self.committee.size == 1:
            self.key_holder = KeyHolder(params=params, policy=policy)
            self.install_public_context(self.key_holder.public_context_bytes())
        self.local_members: list[CommitteeMember] = []
        self._pending_setup_seconds = time.perf_counter() - start
        self._has_context: set[int] = set()
        self._aggregator_has_context = False

    def _form_local_committee(self) -> None:
        """Ledger-less runs: simulate the K members here (see the module docstring)."""
        start = time.perf_counter()
        seed = os.urandom(CRP_SEED_SIZE)
        members = [
            CommitteeMember(
                member=j,
                params=self.params,
                committee=self.committee,
                policy=self.policy,
                crp_seed=seed,
            )
            for j in self.committee.members
        ]
        for dealer in members:
            for recipient, message in dealer.deal_secret_shares().items():
                members[recipient - 1].receive_secret_share(sender=dealer.member, message=message)
        shares = [member.public_key_share for member in members]
        contexts = {member.join(shares).to_bytes() for member in members}
        self.local_members = members
        self.install_public_context(contexts.pop())
        self._pending_setup_seconds += time.perf_counter() - start

    def install_public_context(self, public_context: bytes) -> None:
        """Use ``public_context`` (a committee's collective key, checked by the caller against
        the committed shares) for clients and the aggregator."""
        self.public_context = public_context
        self._client = CKKSClient(public_context)

    @property
    def client(self) -> CKKSClient:
        if self._client is None:
            raise CommitteeSetupError("the committee's collective key is not installed yet")
        return self._client

    def start_round(self, *, round_id: int, client_ids: Sequence[int], dim: int) -> RoundSession:
        if self.public_context is None:
            self._form_local_committee()
        return _CKKSSession(scheme=self, round_id=round_id, client_ids=client_ids, dim=dim)

    def public_material(self) -> bytes | None:
        return self.public_context

    def decrypts_by_committee(self) -> bool:
        return self.committee.size > 1

    def sum_tolerance(self, *, n_clients: int) -> float:
        # rounding to the release grid (half a step), flooding noise (16 sigma); the
        # encoding error is far below a grid step at the presets' scale
        return self.policy.grid + 16 * self.policy.flood_std

    def max_dropouts(self, *, n_clients: int) -> int:
        return n_clients - self.policy.min_clients  # the key holder releases no smaller sum

    @classmethod
    def recombine(
        cls,
        manifest: RoundManifest,
        blobs: Sequence[tuple[int, bytes]],
        *,
        store: ArtifactStore,
    ) -> bytes:
        for client_id, blob in blobs:
            blob_header, _ = parse_header(blob)
            if blob_header.element_count != manifest.dim:
                raise ParameterMismatchError(
                    f"client {client_id}'s blob holds {blob_header.element_count} values, the "
                    f"manifest says dim={manifest.dim}"
                )
        public_context = cls.fetch_public_material(manifest, store)
        return combine_blobs(public_context, [blob for _, blob in blobs])

    @classmethod
    def public_session(
        cls, manifest: RoundManifest, *, schema: Any, public_material: bytes | None
    ) -> RoundSession | None:
        from secagg.ckks._config import params_from_schema

        if public_material is None:
            raise ParameterMismatchError("a CKKS round needs the key holder's public context")
        return PublicCKKSSession(
            public_context=public_material,
            max_abs_sum=params_from_schema(schema).max_abs_sum,
            round_id=manifest.round_id,
            client_ids=[c.client_id for c in manifest.clients],
            dim=manifest.dim,
        )

    @classmethod
    def listed_inputs(cls, manifest: RoundManifest, aggregate: bytes) -> tuple[Digest, ...] | None:
        header, _ = parse_header(aggregate)
        return tuple(header.inputs)


def combine_selected(
    public_context: bytes,
    *,
    dim: int,
    client_ids: Collection[int],
    blobs: Mapping[int, bytes],
    rejected: dict[int, str],
) -> tuple[bytes, tuple[int, ...]]:
    """The aggregator's blind sum of the selected clients' blobs, in client-id order:
    ``(aggregate, combined client ids)``; a blob of a client not selected or that fails
    its checks is left out and named in ``rejected``, alone."""
    if not blobs:
        raise EmptyAggregateError("no blobs to combine")
    aggregator = CKKSAggregator(public_context, element_count=dim)
    combined: list[int] = []
    for client_id in sorted(blobs):
        if client_id not in client_ids:
            rejected[client_id] = "not selected for this round"
            continue
        try:
            aggregator.add(blobs[client_id], client_id=client_id)
        except SecAggError as error:
            rejected[client_id] = f"{type(error).__name__}: {error}"
            continue
        combined.append(client_id)
    return aggregator.aggregate(), tuple(combined)


class _CKKSSession(RoundSession):
    def __init__(
        self, *, scheme: CKKSScheme, round_id: int, client_ids: Sequence[int], dim: int
    ) -> None:
        super().__init__(round_id=round_id, client_ids=client_ids, dim=dim)
        self._scheme = scheme
        self.rejected: dict[int, str] = {}
        self.combined: tuple[int, ...] = ()
        self._combined_blobs: list[bytes] = []

    def setup(self, *, dropouts: Collection[int] = ()) -> None:
        """Key holder -> clients and aggregator: the public context, once per party."""
        scheme = self._scheme
        self.stats.seconds["setup"] += scheme._pending_setup_seconds
        scheme._pending_setup_seconds = 0.0
        new_clients = [
            cid for cid in self.client_ids if cid not in scheme._has_context and cid not in dropouts
        ]
        receivers = len(new_clients) + (0 if scheme._aggregator_has_context else 1)
        scheme._aggregator_has_context = True
        scheme._has_context.update(new_clients)
        self.stats.bytes_down["setup"] += len(scheme.public_context or b"") * receivers

    def protect(self, client_id: int, update: np.ndarray) -> bytes:
        values = self.check_update(update)
        bound = self._scheme.params.max_abs_sum / len(self.client_ids)
        with self.stats.timed("protect"):
            blob = self._scheme.client.protect(values, max_abs=bound)
        self.stats.bytes_up["protect"] += len(blob)
        return blob

    def combine(self, blobs: Mapping[int, bytes]) -> bytes:
        with self.stats.timed("combine"):
            aggregate, self.combined = combine_selected(
                self._public_context,
                dim=self.dim,
                client_ids=self.client_ids,
                blobs=blobs,
                rejected=self.rejected,
            )
        self._combined_blobs = [blobs[client_id] for client_id in self.combined]
        return aggregate

    @property
    def _public_context(self) -> bytes:
        if self._scheme.public_context is None:
            raise CommitteeSetupError("the committee's collective key is not installed yet")
        return self._scheme.public_context

    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        key_holder = self._scheme.key_holder
        if key_holder is None:
            return self._committee_reveal(aggregate, survivors=survivors)
        self.stats.bytes_up["reveal"] += len(aggregate)
        with self.stats.timed("reveal"):
            result = key_holder.reveal(aggregate)
        self.stats.bytes_down["reveal"] += result.nbytes * max(len(survivors), 1)
        return result

    def _committee_reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        """Ledger-less committee: every simulated member checks and partially decrypts."""
        scheme = self._scheme
        if not scheme.local_members:
            raise CommitteeSetupError(
                "this committee lives on the ledger: it releases through the round protocol "
                "(secagg._committee_round.DecryptionCommittee)"
            )
        with self.stats.timed("reveal"):
            partials = [
                member.partial_decrypt(aggregate, committed_blobs=self._combined_blobs)
                for member in scheme.local_members
            ]
            release = combine_partials(
                aggregate,
                partials,
                public_context=self._public_context,
                committee=scheme.committee,
                policy=scheme.policy,
            )
        self.stats.bytes_up["reveal"] += len(aggregate) * len(partials)
        self.stats.bytes_down["reveal"] += sum(len(p) for p in partials)
        self.stats.bytes_down["reveal"] += release.values.nbytes * max(len(survivors), 1)
        return release.values


class PublicCKKSSession(RoundSession):
    """A CKKS round session with the public context only: a client protects, the
    aggregator combines; no party holding it can decrypt (:meth:`reveal` refuses)."""

    def __init__(
        self,
        *,
        public_context: bytes,
        max_abs_sum: float,
        round_id: int,
        client_ids: Sequence[int],
        dim: int,
    ) -> None:
        super().__init__(round_id=round_id, client_ids=client_ids, dim=dim)
        self.public_context = public_context
        self.max_abs_sum = max_abs_sum
        self.rejected: dict[int, str] = {}
        self.combined: tuple[int, ...] = ()
        self._client = CKKSClient(public_context)

    def protect(self, client_id: int, update: np.ndarray) -> bytes:
        values = self.check_update(update)
        with self.stats.timed("protect"):
            blob = self._client.protect(values, max_abs=self.max_abs_sum / len(self.client_ids))
        self.stats.bytes_up["protect"] += len(blob)
        return blob

    def combine(self, blobs: Mapping[int, bytes]) -> bytes:
        with self.stats.timed("combine"):
            aggregate, self.combined = combine_selected(
                self.public_context,
                dim=self.dim,
                client_ids=self.client_ids,
                blobs=blobs,
                rejected=self.rejected,
            )
        return aggregate

    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        raise NoSecretKeyError("a public CKKS session cannot decrypt (only the key holder can)")


class NoSecretKeyError(SecAggError):
    """A party without the secret key (a public session) was asked to decrypt."""
