"""The ``ckks`` protection scheme: the three roles simulated in one process.

:class:`CKKSScheme` creates one :class:`~secagg.ckks._keyholder.KeyHolder` (keys outlive
rounds); every round the client encryptor and the aggregator are built from the public
context *bytes* only, and only bytes pass between the roles, as they would on the wire.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from secagg._errors import EmptyAggregateError, SecAggError
from secagg._scheme import ProtectionScheme, RoundSession
from secagg.ckks._aggregator import CKKSAggregator
from secagg.ckks._client import CKKSClient
from secagg.ckks._committee import CommitteeSetupError
from secagg.ckks._committee_keys import CommitteeParams
from secagg.ckks._keyholder import KeyHolder
from secagg.ckks._params import CKKSParams, RevealPolicy


class CKKSScheme(ProtectionScheme):
    """CKKS blind aggregation: clients encrypt, the aggregator adds, the key holder reveals."""

    name = "ckks"

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
        self._pending_setup_seconds = time.perf_counter() - start
        self._has_context: set[int] = set()
        self._aggregator_has_context = False

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
            raise CommitteeSetupError("the committee's collective key is not installed yet")
        return _CKKSSession(scheme=self, round_id=round_id, client_ids=client_ids, dim=dim)


class _CKKSSession(RoundSession):
    def __init__(
        self, *, scheme: CKKSScheme, round_id: int, client_ids: Sequence[int], dim: int
    ) -> None:
        super().__init__(round_id=round_id, client_ids=client_ids, dim=dim)
        self._scheme = scheme
        self.rejected: dict[int, str] = {}
        self.combined: tuple[int, ...] = ()

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
        if not blobs:
            raise EmptyAggregateError("no blobs to combine")
        with self.stats.timed("combine"):
            aggregator = CKKSAggregator(self._public_context, element_count=self.dim)
            combined: list[int] = []
            for client_id in sorted(blobs):
                if client_id not in self.client_ids:
                    self.rejected[client_id] = "not selected for this round"
                    continue
                try:
                    aggregator.add(blobs[client_id], client_id=client_id)
                except SecAggError as error:
                    self.rejected[client_id] = f"{type(error).__name__}: {error}"
                    continue
                combined.append(client_id)
            aggregate = aggregator.aggregate()
        self.combined = tuple(combined)
        return aggregate

    @property
    def _public_context(self) -> bytes:
        if self._scheme.public_context is None:
            raise CommitteeSetupError("the committee's collective key is not installed yet")
        return self._scheme.public_context

    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        key_holder = self._scheme.key_holder
        if key_holder is None:
            raise CommitteeSetupError(
                "a committee releases through its members (secagg._roles.DecryptionCommittee)"
            )
        self.stats.bytes_up["reveal"] += len(aggregate)
        with self.stats.timed("reveal"):
            result = key_holder.reveal(aggregate)
        self.stats.bytes_down["reveal"] += result.nbytes * max(len(survivors), 1)
        return result
