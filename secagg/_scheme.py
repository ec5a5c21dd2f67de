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

Everything that differs between schemes beyond those four calls is declared by the scheme
class itself (:class:`ProtectionScheme`: capabilities as class attributes, manifest-only
operations as class methods), so code that sees only a round manifest (the auditor, a key
holder, a hospital) resolves the class from the manifest's scheme name with
:func:`secagg._hydra.scheme_class` and asks it; nothing outside a scheme's own package
branches on a scheme's name. ``docs/extending.md`` ("Add a protection scheme") lists what a
new scheme implements and the contract suite (``tests/secagg/test_scheme_contract.py``) it
must pass.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from secagg._errors import (
    BlobFormatError,
    DuplicateClientError,
    EmptyAggregateError,
    InvalidUpdateError,
    ParameterMismatchError,
)

if TYPE_CHECKING:
    from secagg._digest import Digest
    from secagg._manifest import RoundManifest
    from secagg._store import ArtifactStore

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
    """A factory of round sessions; holds whatever outlives a round (keys, contexts).

    The class attributes below declare what the rest of the framework may rely on; the class
    methods work from a round manifest alone (no secret, no instance), for the auditor and
    the key holder. The contract suite checks every declaration against behaviour.
    """

    name: ClassVar[str]

    #: Two honest clients never produce the same blob (fresh randomness per blob), so a
    #: later commitment of an already committed blob digest is a copy. False for ``plain``,
    #: where equal updates give equal blobs.
    randomized_blobs: ClassVar[bool] = True
    #: The sum is released by a key holder (or a decryption committee) that holds a secret
    #: the aggregator lacks; it checks the aggregate, reserves the release on the ledger and
    #: attests it (or its refusal), and the auditor checks that attestation.
    releases_via_key_holder: ClassVar[bool] = False
    #: Rounds carry public material (CKKS: the public context) that the manifest names by
    #: digest; clients and the aggregator need it to protect and to combine.
    has_public_material: ClassVar[bool] = False
    #: A restarted aggregator can finish an open round from the ledger and the store alone.
    supports_resume: ClassVar[bool] = True
    #: Blobs bind their round: a blob made for another round is refused by ``combine`` and
    #: by :meth:`recombine`. Without it, only the ledger commitment binds the round.
    binds_round: ClassVar[bool] = False
    #: Clients agree on round keys in stages before they protect (masking: advertise and
    #: share keys); a deployment runs those stages (``secagg.v1.mask.*``) before ``train``.
    key_agreement_stages: ClassVar[bool] = False
    #: Why central DP noise cannot be added inside this scheme's release (completes "with
    #: <name> ..."); None where one releasing party sees the exact sum and can add it.
    release_noise_refusal: ClassVar[str | None] = None
    #: Why a round that an interrupted process opened cannot be finished by a resumed run,
    #: where the reason is this scheme's (None: nothing scheme-specific is lost).
    interrupted_round_reason: ClassVar[str | None] = None

    @abstractmethod
    def start_round(self, *, round_id: int, client_ids: Sequence[int], dim: int) -> RoundSession:
        """Begin a round among ``client_ids`` over updates of length ``dim``."""

    def manifest_config(self) -> dict[str, Any]:
        """The public parameters a round manifest declares for this scheme when no config
        group gave them (a federation built in code): at least ``name``."""
        return {"name": self.name}

    def public_material(self) -> bytes | None:
        """The public material the round manifest names (None: the scheme has none)."""
        return None

    def decrypts_by_committee(self) -> bool:
        """Whether a decryption committee (several members, any T of K) releases the sum."""
        return False

    def ledger_round_kwargs(
        self, *, ledger: Any, accounts: Mapping[int, Any], addresses: Mapping[int, str]
    ) -> dict[str, Any]:
        """Extra keyword arguments of :meth:`start_round` in a round run over ``ledger``,
        where client ``c`` signs with ``accounts[c]`` from ``addresses[c]`` (masking
        authenticates its key stages with them). Nothing by default (``{}``)."""
        return {}

    def sum_tolerance(self, *, n_clients: int) -> float:
        """The largest absolute error, per value, of a revealed sum of ``n_clients``
        updates (each within the scheme's range, ``|value| <= 1 / n_clients``)."""
        return 0.0

    def max_dropouts(self, *, n_clients: int) -> int:
        """How many of ``n_clients`` selected clients may drop after set-up (no blob) with
        the round still revealing the others' sum; one more and nothing is revealed."""
        return n_clients - 1

    @classmethod
    def check_manifest_config(cls, config: Mapping[str, Any]) -> None:
        """Validate the public parameters a manifest declares for this scheme; raise
        :class:`~secagg._manifest.ManifestError` naming the field. Nothing by default."""
        return None

    @classmethod
    def check_feasible(cls, schema: Any, *, clients_per_round: int, dropout: float) -> None:
        """Before any training: raise a :class:`~secagg._errors.SecAggError` whose message
        completes "secagg=<name> ..." if rounds of ``clients_per_round`` clients with a
        ``dropout`` fraction cannot run under ``schema``. Nothing by default."""
        return None

    @classmethod
    @abstractmethod
    def recombine(
        cls,
        manifest: RoundManifest,
        blobs: Sequence[tuple[int, bytes]],
        *,
        store: ArtifactStore,
    ) -> bytes:
        """The aggregate bytes of ``blobs`` (``(client id, blob)``, ascending, distinct,
        non-empty: the caller checked), from the manifest's public parameters and the
        store's public material alone, byte for byte what the aggregator's ``combine``
        gives. Raises a :class:`~secagg._errors.SecAggError` (a ``ValueError``) for any
        blob that is not a valid blob of this round."""

    @classmethod
    def public_session(
        cls, manifest: RoundManifest, *, schema: Any, public_material: bytes | None
    ) -> RoundSession | None:
        """A session of ``manifest``'s round built from its public parameters (``schema``,
        the scheme's config) and ``public_material`` alone, for parties on separate
        machines: a client protects, the aggregator combines. None where the scheme's
        rounds need more than public material (masking: each party's key-stage state)."""
        return None

    @classmethod
    def listed_inputs(cls, manifest: RoundManifest, aggregate: bytes) -> tuple[Digest, ...] | None:
        """The input blob digests an aggregate lists (None: this scheme's aggregates list
        none)."""
        return None

    @classmethod
    def fetch_public_material(cls, manifest: RoundManifest, store: ArtifactStore) -> bytes:
        """The public material ``manifest`` names, from ``store`` (digest-checked)."""
        from secagg._digest import Digest

        if manifest.public_material is None:
            raise ParameterMismatchError("the manifest names no public context")
        return store.get(Digest(bytes.fromhex(manifest.public_material)))


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
    randomized_blobs = False

    def start_round(self, *, round_id: int, client_ids: Sequence[int], dim: int) -> RoundSession:
        return _PlainSession(round_id=round_id, client_ids=client_ids, dim=dim)

    @classmethod
    def recombine(
        cls,
        manifest: RoundManifest,
        blobs: Sequence[tuple[int, bytes]],
        *,
        store: ArtifactStore,
    ) -> bytes:
        session = cls().start_round(
            round_id=manifest.round_id,
            client_ids=[c.client_id for c in manifest.clients],
            dim=manifest.dim,
        )
        return session.combine(dict(blobs))

    def sum_tolerance(self, *, n_clients: int) -> float:
        return 1e-12  # float64 additions in another order

    @classmethod
    def public_session(
        cls, manifest: RoundManifest, *, schema: Any, public_material: bytes | None
    ) -> RoundSession | None:
        return cls().start_round(
            round_id=manifest.round_id,
            client_ids=[c.client_id for c in manifest.clients],
            dim=manifest.dim,
        )
