"""Content-addressed artifact store for protected blobs, privacy events and round records.

Every artifact is named by the keccak256 digest of its bytes, so a reader who holds only a
digest (from the ledger) can fetch the bytes and check them. Writes are atomic (write to a
temporary file in the same directory, fsync, rename); writing different bytes under an
existing name is refused. The :class:`ArtifactStore` interface admits other stores later
(an object store, IPFS); :class:`LocalDirectoryStore` is the default.

Threat model: the store is untrusted. Nothing read from it is believed without checking its
digest against a commitment on the ledger; :meth:`ArtifactStore.get` does that check. Nor
is a read allowed to hang or exhaust memory: :func:`read_regular_file` opens without
following a symbolic link and without blocking (a FIFO would otherwise block the reader
forever), reads only a regular file, and refuses one larger than the store's cap
(:data:`DEFAULT_MAX_ARTIFACT_BYTES` unless configured) before reading it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
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


class UnsafeArtifactError(SecAggError, ValueError):
    """What the store holds under a name is not a readable regular file within the size cap
    (a FIFO, device, directory or symbolic link, or a file over the cap)."""


class StoreConfigError(SecAggError, ValueError):
    """A store was configured with an invalid parameter."""


#: Largest artifact a store reads, unless configured otherwise (CKKS blobs of large models
#: are the biggest artifacts; JSON documents have their own, much smaller caps).
DEFAULT_MAX_ARTIFACT_BYTES = 512 * 2**20

_HEX_NAME = re.compile(r"[0-9a-f]{64}")
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)


def read_regular_file(path: str | os.PathLike[str], *, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, if it holds at most ``max_bytes``.

    Opens with ``O_NONBLOCK | O_NOFOLLOW`` and checks ``fstat`` before reading, so a FIFO,
    device, directory or symbolic link at ``path`` is refused at once instead of blocking
    or leading out of the store. Raises :class:`FileNotFoundError` when nothing is there
    and :class:`UnsafeArtifactError` for anything else that is not a small regular file.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeArtifactError(f"{name} is a symbolic link") from None
        raise UnsafeArtifactError(f"cannot open {name}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeArtifactError(f"{name} is not a regular file")
        if info.st_size > max_bytes:
            raise UnsafeArtifactError(
                f"{name} holds {info.st_size} bytes, more than the cap of {max_bytes}"
            )
        chunks = []
        remaining = max_bytes + 1  # the file may grow after fstat: read at most one extra
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as error:
        raise UnsafeArtifactError(f"cannot read {name}: {error.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnsafeArtifactError(f"{name} grew past the cap of {max_bytes} bytes while read")
    return data


def _check_cap(max_artifact_bytes: object) -> None:
    if (
        isinstance(max_artifact_bytes, bool)
        or not isinstance(max_artifact_bytes, int)
        or max_artifact_bytes < 1
    ):
        raise StoreConfigError(
            f"max_artifact_bytes must be an integer >= 1, got {max_artifact_bytes!r}"
        )


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
    def get_unchecked(self, digest: bytes, *, max_bytes: int | None = None) -> bytes:
        """Return the bytes stored under ``digest`` without verifying them (at most
        ``max_bytes``, or the store's own cap when that is smaller or ``max_bytes`` is None;
        :class:`UnsafeArtifactError` otherwise)."""

    @abstractmethod
    def __contains__(self, digest: object) -> bool: ...

    @abstractmethod
    def digests(self) -> Iterator[Digest]:
        """Every digest the store holds."""

    def get(self, digest: bytes, *, max_bytes: int | None = None) -> bytes:
        """Return the bytes under ``digest``, checked against it.

        Raises :class:`ArtifactNotFoundError` when absent, :class:`UnsafeArtifactError`
        when what is there is not a regular file within the size cap (``max_bytes`` lowers
        the store's own), and :class:`CommitmentMismatchError` when the stored bytes do not
        hash to ``digest`` (the store was tampered with).
        """
        if max_bytes is None:
            data = self.get_unchecked(digest)
        else:
            data = self.get_unchecked(digest, max_bytes=max_bytes)
            if len(data) > max_bytes:
                raise UnsafeArtifactError(
                    f"artifact {digest.hex()} holds {len(data)} bytes, more than {max_bytes}"
                )
        actual = keccak256(data)
        if actual != digest:
            raise CommitmentMismatchError(
                f"artifact {digest.hex()} holds bytes whose digest is {actual.hex()}"
            )
        return data


class LocalDirectoryStore(ArtifactStore):
    """Artifacts as files ``<root>/<hex digest>`` in one local directory.

    ``max_artifact_bytes`` caps every read (see :func:`read_regular_file`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
    ) -> None:
        _check_cap(max_artifact_bytes)
        self.root = Path(root)
        self.max_artifact_bytes = max_artifact_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalDirectoryStore({str(self.root)!r})"

    def path_of(self, digest: bytes) -> Path:
        """Where the artifact named ``digest`` lives."""
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ValueError(f"a digest is 32 bytes, got {digest!r:.80}")
        return self.root / digest.hex()

    def put_named(self, digest: bytes, data: bytes) -> None:
        path = self.path_of(digest)
        if len(data) > self.max_artifact_bytes:
            raise UnsafeArtifactError(
                f"an artifact of {len(data)} bytes is over the store's cap of "
                f"{self.max_artifact_bytes}"
            )
        if os.path.lexists(path):
            try:
                existing: bytes | None = read_regular_file(path, max_bytes=max(len(data), 1))
            except (UnsafeArtifactError, FileNotFoundError):
                existing = None
            if existing != data:
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

    def get_unchecked(self, digest: bytes, *, max_bytes: int | None = None) -> bytes:
        path = self.path_of(digest)
        cap = self.max_artifact_bytes
        if max_bytes is not None:
            cap = min(cap, max_bytes)
        try:
            return read_regular_file(path, max_bytes=cap)
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {digest.hex()} in {self.root}") from None

    def __contains__(self, digest: object) -> bool:
        return (
            isinstance(digest, bytes)
            and len(digest) == 32
            and os.path.lexists(self.path_of(Digest(digest)))
        )

    def digests(self) -> Iterator[Digest]:
        for path in sorted(self.root.iterdir()):
            if _HEX_NAME.fullmatch(path.name):
                yield Digest(bytes.fromhex(path.name))


class MemoryStore(ArtifactStore):
    """Artifacts in a dict, for a run whose ledger is in memory too (``chain=none``,
    :class:`chain.MemoryLedger`) or a test. Same rules as :class:`LocalDirectoryStore`:
    immutable names, a size cap on writes and reads."""

    def __init__(self, *, max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> None:
        _check_cap(max_artifact_bytes)
        self.max_artifact_bytes = max_artifact_bytes
        self._items: dict[bytes, bytes] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._items)} artifacts)"

    def put_named(self, digest: bytes, data: bytes) -> None:
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ValueError(f"a digest is 32 bytes, got {digest!r:.80}")
        if len(data) > self.max_artifact_bytes:
            raise UnsafeArtifactError(
                f"an artifact of {len(data)} bytes is over the store's cap of "
                f"{self.max_artifact_bytes}"
            )
        existing = self._items.get(bytes(digest))
        if existing is not None and existing != data:
            raise ArtifactConflictError(
                f"{digest.hex()} already holds different bytes; artifacts are immutable"
            )
        self._items[bytes(digest)] = bytes(data)

    def get_unchecked(self, digest: bytes, *, max_bytes: int | None = None) -> bytes:
        found = self._items.get(bytes(digest))
        if found is None:
            raise ArtifactNotFoundError(f"no artifact {bytes(digest).hex()} in memory")
        cap = self.max_artifact_bytes
        if max_bytes is not None:
            cap = min(cap, max_bytes)
        if len(found) > cap:
            raise UnsafeArtifactError(
                f"artifact {bytes(digest).hex()} holds {len(found)} bytes, more than {cap}"
            )
        return found

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, bytes) and bytes(digest) in self._items

    def digests(self) -> Iterator[Digest]:
        for digest in sorted(self._items):
            yield Digest(digest)
