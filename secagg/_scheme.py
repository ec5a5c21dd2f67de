"""The interface every protection scheme implements, and the ``plain`` scheme.

A scheme lets the aggregator learn a (weighted) sum of client updates and, depending on
the scheme, nothing else. The runner drives one :class:`RoundSession` per round:

1. ``setup(dropouts=...)``: key set-up stages, if any (masking: advertise and share keys).
2. ``protect(client_id, update)`` for each surviving client: the client-side step; the
   update is already weighted by the caller (FedAvg weight), a 1-D float vector.
3. ``combine(blobs)``: the aggregator's blind, deterministic combination.
4. ``reveal(aggregate, survivors=...)``: the only place a sum becomes plaintext
   (CKKS: the key holder decrypts; masking: survivors send shares, the server unmasks).

Every call records its bytes and seconds in :attr:`RoundSession.stats`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from secagg._errors import (
    BlobFormatError,
    DuplicateClientError,
    EmptyAggregateError,
    InvalidUpdateError,
)

PHASES = ("setup", "protect", "combine", "reveal")


@dataclass
class PhaseStats:
    """Bytes sent and seconds spent per protocol phase in one round (summed over parties)."""

    bytes_up: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    bytes_down: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


class RoundSession(ABC):
    """One round of one scheme: set-up, protect, combine, reveal."""

    def __init__(self, *, round_id: int, client_ids: Sequence[int], dim: int) -> None:
        if dim <= 0:
            raise InvalidUpdateError(f"dim must be > 0, got {dim}")
        if len(set(client_ids)) != len(client_ids):
            raise DuplicateClientError(f"client_ids contains duplicates: {list(client_ids)}")
        self.round_id = round_id
        self.client_ids = tuple(client_ids)
        self.dim = dim
        self.stats = PhaseStats()
        # Set by combine(): the client ids whose blobs are actually in the aggregate, in
        # the order they were combined (ascending). Rejected blobs are not among them.
        self.combined: tuple[int, ...] = ()

    def setup(self, *, dropouts: Collection[int] = ()) -> None:  # noqa: B027 - optional stage
        """Run key set-up stages; ``dropouts`` are clients lost during them."""

    @abstractmethod
    def protect(self, client_id: int, update: np.ndarray) -> bytes:
        """Client side: turn a weighted update into a protected blob."""

    @abstractmethod
    def combine(self, blobs: Mapping[int, bytes]) -> bytes:
        """Aggregator side: combine protected blobs, without learning any of them.

        Sets :attr:`combined` to the ids whose blobs went in (invalid ones are left out)."""

    @abstractmethod
    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        """Turn the aggregate into the plaintext sum of the combined updates."""

    def check_update(self, update: np.ndarray) -> np.ndarray:
        """Validate an update vector (1-D, right length, finite) and return it as float64."""
        array = np.asarray(update)
        if array.ndim != 1 or array.shape[0] != self.dim:
            raise InvalidUpdateError(
                f"update must be a 1-D vector of length {self.dim}, got shape {array.shape}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise InvalidUpdateError(f"update must be floating point, got {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise InvalidUpdateError("update contains NaN or Inf")
        return array.astype(np.float64, copy=False)


class ProtectionScheme(ABC):
    """A factory of round sessions; holds whatever outlives a round (keys, contexts)."""

    name: ClassVar[str]

    @abstractmethod
    def start_round(self, *, round_id: int, client_ids: Sequence[int], dim: int) -> RoundSession:
        """Begin a round among ``client_ids`` over updates of length ``dim``."""


class _PlainSession(RoundSession):
    def __init__(self, *, round_id: int, client_ids: Sequence[int], dim: int) -> None:
        super().__init__(round_id=round_id, client_ids=client_ids, dim=dim)
        self.rejected: dict[int, str] = {}

    def protect(self, client_id: int, update: np.ndarray) -> bytes:
        with self.stats.timed("protect"):
            blob = self.check_update(update).astype("<f8").tobytes()
        self.stats.bytes_up["protect"] += len(blob)
        return blob

    def combine(self, blobs: Mapping[int, bytes]) -> bytes:
        if not blobs:
            raise EmptyAggregateError("no blobs to combine")
        with self.stats.timed("combine"):
            total = np.zeros(self.dim, dtype=np.float64)
            combined = []
            for client_id in sorted(blobs):
                blob = blobs[client_id]
                if len(blob) != 8 * self.dim:  # rejected alone; the others still count
                    self.rejected[client_id] = (
                        f"BlobFormatError: plain blob has {len(blob)} bytes, "
                        f"expected {8 * self.dim}"
                    )
                    continue
                values = np.frombuffer(blob, dtype="<f8")
                if not np.all(np.isfinite(values)):
                    self.rejected[client_id] = "InvalidUpdateError: blob holds NaN or Inf"
                    continue
                total += values
                combined.append(client_id)
        if not combined:
            raise BlobFormatError(f"no valid plain blob among clients {sorted(blobs)}")
        self.combined = tuple(combined)
        return total.tobytes()

    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        with self.stats.timed("reveal"):
            result = np.frombuffer(aggregate, dtype="<f8").copy()
        self.stats.bytes_down["reveal"] += len(aggregate) * max(len(survivors), 1)
        return result


class PlainScheme(ProtectionScheme):
    """No protection: the aggregator sees every update. The non-private baseline."""

    name = "plain"

    def start_round(self, *, round_id: int, client_ids: Sequence[int], dim: int) -> RoundSession:
        return _PlainSession(round_id=round_id, client_ids=client_ids, dim=dim)
