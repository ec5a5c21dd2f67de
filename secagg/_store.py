"""Content-addressed artifact store for protected blobs, privacy events and round records.

Every artifact is named by the keccak256 digest of its bytes, so a reader who holds only a
digest (from the ledger) can fetch the bytes and check them. Writes are atomic (write to a
temporary file in the same directory, fsync, rename); writing different bytes under an
existing name is refused. The :class:`ArtifactStore` interface admits other stores later
(an object store, IPFS); :class:`LocalDirectoryStore` is the default.

Threat model: the store is untrusted. Nothing read from it is believed without checking its
digest against a commitment on the ledger; :meth:`ArtifactStore.get` does that check.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from secagg._digest import Digest, keccak256
from secagg._errors import CommitmentMismatchError, SecAggError


class ArtifactNotFoundError(SecAggError, KeyError):
    """No artifact is stored under the requested digest."""


class ArtifactConflictError(SecAggError, ValueError):
    """Different bytes were offered under a name that already holds an artifact."""


class ArtifactStore(ABC):
    """A store of immutable byte strings addressed by their keccak256 digest."""

    def put(self, data: bytes) -> Digest:
        """Store ``data`` and return its digest (idempotent for identical bytes)."""
        digest = keccak256(data)
        self.put_named(digest, data)
        return digest

    @abstractmethod
    def put_named(self, digest: bytes, data: bytes) -> None:
        """Store ``data`` under ``digest``; refuse different bytes under an existing name."""

    @abstractmethod
    def get_unchecked(self, digest: bytes) -> bytes:
        """Return the bytes stored under ``digest`` without verifying them."""

    @abstractmethod
    def __contains__(self, digest: object) -> bool: ...

    @abstractmethod
    def digests(self) -> Iterator[Digest]:
        """Every digest the store holds."""

    def get(self, digest: bytes) -> bytes:
        """Return the bytes under ``digest``, checked against it.

        Raises :class:`ArtifactNotFoundError` when absent and
        :class:`CommitmentMismatchError` when the stored bytes do not hash to ``digest``
        (the store was tampered with).
        """
        data = self.get_unchecked(digest)
        actual = keccak256(data)
        if actual != digest:
            raise CommitmentMismatchError(
                f"artifact {digest.hex()} holds bytes whose digest is {actual.hex()}"
            )
        return data


class LocalDirectoryStore(ArtifactStore):
    """Artifacts as files ``<root>/<hex digest>`` in one local directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalDirectoryStore({str(self.root)!r})"

    def path_of(self, digest: bytes) -> Path:
        """Where the artifact named ``digest`` lives."""
        if len(digest) != 32:
            raise ValueError(f"a digest has 32 bytes, got {len(digest)}")
        return self.root / digest.hex()

    def put_named(self, digest: bytes, data: bytes) -> None:
        path = self.path_of(digest)
        if path.exists():
            if path.read_bytes() != data:
                raise ArtifactConflictError(
                    f"{path.name} already holds different bytes; artifacts are immutable"
                )
            return
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def get_unchecked(self, digest: bytes) -> bytes:
        path = self.path_of(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {digest.hex()} in {self.root}") from None

    def __contains__(self, digest: object) -> bool:
        return (
            isinstance(digest, bytes)
            and len(digest) == 32
            and self.path_of(Digest(digest)).exists()
        )

    def digests(self) -> Iterator[Digest]:
        for path in sorted(self.root.iterdir()):
            if len(path.name) == 64 and not path.name.startswith("."):
                yield Digest(bytes.fromhex(path.name))
