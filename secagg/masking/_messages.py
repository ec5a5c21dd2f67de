"""Typed wire messages of the four stages and their canonical binary encoding.

Every message starts with one header: ``MAGIC | version u8 | kind u8 | round u64 |
params_digest[32] | sender u64`` (little-endian). Decoding is strict: a truncated or
padded message, an unknown kind or a field out of range is a :class:`MessageFormatError`;
a valid message of another stage is a :class:`StageError`; another round or other
parameters is a :class:`~secagg._errors.ParameterMismatchError`.

Signatures are optional on the wire (authenticated rounds carry them, honest-but-curious
rounds do not); where present they have a fixed length announced by a one-byte flag, so
the layout stays strict.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from secagg._errors import ParameterMismatchError
from secagg.masking._constants import (
    COMMITMENT_BYTES,
    DTYPE_UINT32,
    FORMAT_VERSION,
    LEDGER_SIGNATURE_BYTES,
    MAGIC,
    NONCE_BYTES,
    PUBLIC_KEY_BYTES,
    SECRET_BYTES,
    SERVER_ID,
    SHARE_BYTES,
    SIGNATURE_BYTES,
    TAG_BYTES,
    MessageKind,
)
from secagg.masking._errors import MaskedInputError, MessageFormatError, StageError

_HEADER = struct.Struct("<4sBBQ32sQ")
SEALED_SHARES_BYTES = 2 * SHARE_BYTES + TAG_BYTES
"""Ciphertext||tag of one (self-mask share, masking-key share) pair."""


class _Reader:
    """Bounds-checked cursor over a message body."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if size < 0 or end > len(self._data):
            raise MessageFormatError(f"message truncated: needed {size} more bytes")
        chunk = self._data[self._offset : end]
        self._offset = end
        return bytes(chunk)

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def ids(self) -> tuple[int, ...]:
        count = self.u32()
        if count > (len(self._data) - self._offset) // 8:
            raise MessageFormatError(f"id list of {count} entries does not fit the message")
        values = tuple(self.u64() for _ in range(count))
        if len(set(values)) != len(values):
            raise MessageFormatError("id list contains duplicates")
        return values

    def remaining(self) -> int:
        return len(self._data) - self._offset

    def u8(self) -> int:
        return self.take(1)[0]

    def optional(self, size: int) -> int:
        """A one-byte length that must be 0 or ``size`` (an optional fixed-size field)."""
        length = self.u8()
        if length not in (0, size):
            raise MessageFormatError(f"optional field of {length} bytes, expected 0 or {size}")
        return length

    def finish(self) -> None:
        if self._offset != len(self._data):
            raise MessageFormatError(f"{len(self._data) - self._offset} trailing bytes")


def _ids(values: tuple[int, ...]) -> bytes:
    return struct.pack(f"<I{len(values)}Q", len(values), *values)


@dataclass(frozen=True)
class Header:
    """Fields common to every message."""

    round_id: int
    params_digest: bytes
    sender: int


def _encode_header(kind: MessageKind, header: Header) -> bytes:
    return _HEADER.pack(
        MAGIC, FORMAT_VERSION, int(kind), header.round_id, header.params_digest, header.sender
    )


def peek_kind(data: bytes) -> MessageKind:
    """Check magic and version and return the message kind (raises MessageFormatError)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageFormatError(f"a message must be bytes, got {type(data).__name__}")
    if len(data) < _HEADER.size:
        raise MessageFormatError(f"message of {len(data)} bytes is shorter than its header")
    magic, version, kind, _, _, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MessageFormatError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise MessageFormatError(f"format version {version}, expected {FORMAT_VERSION}")
    try:
        return MessageKind(kind)
    except ValueError:
        raise MessageFormatError(f"unknown message kind {kind}") from None


def _open(
    data: bytes, kind: MessageKind, *, round_id: int, params_digest: bytes
) -> tuple[Header, _Reader]:
    actual = peek_kind(data)
    if actual != kind:
        raise StageError(f"expected a {kind.name} message, got {actual.name}")
    _, _, _, message_round, digest, sender = _HEADER.unpack_from(data)
    if message_round != round_id:
        raise ParameterMismatchError(f"message is for round {message_round}, not {round_id}")
    if digest != params_digest:
        raise ParameterMismatchError("message was made under other round parameters")
    return Header(message_round, digest, sender), _Reader(bytes(data), _HEADER.size)


_CERTIFICATE_BYTES = PUBLIC_KEY_BYTES + LEDGER_SIGNATURE_BYTES
"""Round signing key and the ledger account's signature over the advertisement."""


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client -> server: two X25519 public keys and a commitment to the self-mask seed.

    In authenticated rounds it also carries the client's Ed25519 round signing key and its
    ledger account's EIP-191 signature over all of it (see :mod:`._signatures`).
    """

    kind: ClassVar[MessageKind] = MessageKind.ADVERTISE_KEYS
    header: Header
    encryption_key: bytes
    masking_key: bytes
    self_mask_commitment: bytes
    signing_key: bytes = b""
    signature: bytes = b""

    def encode(self) -> bytes:
        return (
            _encode_header(self.kind, self.header)
            + self.encryption_key
            + self.masking_key
            + self.self_mask_commitment
            + self.signing_key
            + self.signature
        )

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> AdvertiseKeys:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        keys = (
            reader.take(PUBLIC_KEY_BYTES),
            reader.take(PUBLIC_KEY_BYTES),
            reader.take(COMMITMENT_BYTES),
        )
        if reader.remaining() not in (0, _CERTIFICATE_BYTES):
            raise MessageFormatError(
                f"advertisement has {reader.remaining()} bytes after its keys, "
                f"expected 0 or {_CERTIFICATE_BYTES}"
            )
        certificate: tuple[bytes, ...] = ()
        if reader.remaining():
            certificate = (reader.take(PUBLIC_KEY_BYTES), reader.take(LEDGER_SIGNATURE_BYTES))
        return cls(header, *keys, *certificate)


@dataclass(frozen=True)
class PeerKeys:
    """One neighbour's advertised public keys (and, if signed, what its signature covers)."""

    client_id: int
    encryption_key: bytes
    masking_key: bytes
    self_mask_commitment: bytes = b""
    signing_key: bytes = b""
    signature: bytes = b""

    @classmethod
    def of(cls, advert: AdvertiseKeys) -> PeerKeys:
        """The broadcast entry of one advertisement (signed fields kept when present)."""
        signed = bool(advert.signature)
        return cls(
            advert.header.sender,
            advert.encryption_key,
            advert.masking_key,
            advert.self_mask_commitment if signed else b"",
            advert.signing_key,
            advert.signature,
        )


@dataclass(frozen=True)
class KeysBroadcast:
    """Stage 1, server -> one client: the public keys of its neighbours that advertised."""

    kind: ClassVar[MessageKind] = MessageKind.KEYS_BROADCAST
    header: Header
    recipient: int
    peers: tuple[PeerKeys, ...]

    def encode(self) -> bytes:
        signed = any(peer.signature for peer in self.peers)
        body = struct.pack("<QBI", self.recipient, int(signed), len(self.peers))
        for peer in self.peers:
            body += struct.pack("<Q", peer.client_id) + peer.encryption_key + peer.masking_key
            if signed:
                body += peer.self_mask_commitment + peer.signing_key + peer.signature
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> KeysBroadcast:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        _require_server(header)
        recipient = reader.u64()
        signed = reader.u8()
        if signed not in (0, 1):
            raise MessageFormatError(f"keys broadcast signed flag is {signed}, expected 0 or 1")
        count = reader.u32()
        entry = 8 + 2 * PUBLIC_KEY_BYTES + signed * (COMMITMENT_BYTES + _CERTIFICATE_BYTES)
        if count * entry != reader.remaining():
            raise MessageFormatError(f"keys broadcast of {count} peers has the wrong length")
        peers = []
        for _ in range(count):
            client, keys = (
                reader.u64(),
                (reader.take(PUBLIC_KEY_BYTES), reader.take(PUBLIC_KEY_BYTES)),
            )
            certificate: tuple[bytes, ...] = ()
            if signed:
                certificate = (
                    reader.take(COMMITMENT_BYTES),
                    reader.take(PUBLIC_KEY_BYTES),
                    reader.take(LEDGER_SIGNATURE_BYTES),
                )
            peers.append(PeerKeys(client, *keys, *certificate))
        _require_unique(peer.client_id for peer in peers)
        return cls(header, recipient, tuple(peers))


@dataclass(frozen=True)
class EncryptedShares:
    """Sealed shares under an ephemeral X25519 key (see :mod:`._aead`).

    ``peer`` is the receiver (upload) or the sender (delivery).
    """

    peer: int
    ephemeral_key: bytes
    nonce: bytes
    sealed: bytes

    def encode(self) -> bytes:
        return struct.pack("<Q", self.peer) + self.ephemeral_key + self.nonce + self.sealed


_SHARE_ITEM = struct.Struct(f"<Q{PUBLIC_KEY_BYTES}s{NONCE_BYTES}s{SEALED_SHARES_BYTES}s")


def _read_shares(reader: _Reader) -> tuple[EncryptedShares, ...]:
    count = reader.u32()
    if count * _SHARE_ITEM.size != reader.remaining():
        raise MessageFormatError(f"share list of {count} entries has the wrong length")
    body = reader.take(reader.remaining())
    shares = tuple(EncryptedShares(*fields) for fields in _SHARE_ITEM.iter_unpack(body))
    _require_unique(item.peer for item in shares)
    return shares


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, client -> server: its secrets' shares, sealed for each neighbour."""

    kind: ClassVar[MessageKind] = MessageKind.SHARE_KEYS
    header: Header
    shares: tuple[EncryptedShares, ...]

    def encode(self) -> bytes:
        body = struct.pack("<I", len(self.shares)) + b"".join(s.encode() for s in self.shares)
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> ShareKeys:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        return cls(header, _read_shares(reader))


@dataclass(frozen=True)
class SharesDelivery:
    """Stage 2, server -> one client: the sealed shares its neighbours addressed to it."""

    kind: ClassVar[MessageKind] = MessageKind.SHARES_DELIVERY
    header: Header
    recipient: int
    shares: tuple[EncryptedShares, ...]

    def encode(self) -> bytes:
        body = struct.pack("<QI", self.recipient, len(self.shares))
        body += b"".join(s.encode() for s in self.shares)
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> SharesDelivery:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        _require_server(header)
        recipient = reader.u64()
        return cls(header, recipient, _read_shares(reader))


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, client -> server: the masked vector, and the neighbours whose shares it rejected.

    ``accusations`` holds, per rejected neighbour in the same order, the reporter's signature
    (round signing key) over the digest of the item it could not open; empty in
    unauthenticated rounds.
    """

    kind: ClassVar[MessageKind] = MessageKind.MASKED_INPUT
    header: Header
    rejected: tuple[int, ...]
    vector: np.ndarray
    accusations: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        vector = np.ascontiguousarray(self.vector, dtype="<u4")
        signed = SIGNATURE_BYTES if self.accusations else 0
        if signed and len(self.accusations) != len(self.rejected):
            raise MessageFormatError("one accusation signature per rejected neighbour")
        body = struct.pack("<IB", vector.size, DTYPE_UINT32) + _ids(self.rejected)
        body += struct.pack("<B", signed) + b"".join(self.accusations)
        return _encode_header(self.kind, self.header) + body + vector.tobytes()

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes, dim: int) -> MaskedInput:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        length = reader.u32()
        dtype_code = reader.take(1)[0]
        if dtype_code != DTYPE_UINT32:
            raise MaskedInputError(
                f"masked vector of client {header.sender} has element type code {dtype_code}, "
                f"expected {DTYPE_UINT32} (uint32)"
            )
        if length != dim:
            raise MaskedInputError(
                f"masked vector of client {header.sender} has length {length}, expected {dim}"
            )
        rejected = reader.ids()
        signed = reader.optional(SIGNATURE_BYTES)
        accusations = tuple(reader.take(signed) for _ in rejected) if signed else ()
        payload = reader.take(reader.remaining())
        if len(payload) != 4 * dim:
            raise MaskedInputError(
                f"masked vector of client {header.sender} carries {len(payload)} bytes, "
                f"expected {4 * dim}"
            )
        return cls(header, rejected, np.frombuffer(payload, dtype="<u4"), accusations)


@dataclass(frozen=True)
class RebuttalRequest:
    """Stage 2, server -> accused: ``reporter`` says the item you sealed for it does not open."""

    kind: ClassVar[MessageKind] = MessageKind.REBUTTAL_REQUEST
    header: Header
    recipient: int
    reporter: int
    accusation: bytes

    def encode(self) -> bytes:
        body = struct.pack("<QQB", self.recipient, self.reporter, len(self.accusation))
        return _encode_header(self.kind, self.header) + body + self.accusation

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> RebuttalRequest:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        _require_server(header)
        recipient, reporter = reader.u64(), reader.u64()
        accusation = reader.take(reader.optional(SIGNATURE_BYTES))
        reader.finish()
        return cls(header, recipient, reporter, accusation)


@dataclass(frozen=True)
class Rebuttal:
    """Stage 2, accused -> server: the ephemeral secret of the item it sealed for ``reporter``."""

    kind: ClassVar[MessageKind] = MessageKind.REBUTTAL
    header: Header
    reporter: int
    ephemeral_secret: bytes

    def encode(self) -> bytes:
        body = struct.pack("<Q", self.reporter) + self.ephemeral_secret
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> Rebuttal:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        message = cls(header, reader.u64(), reader.take(SECRET_BYTES))
        reader.finish()
        return message


@dataclass(frozen=True)
class ConsistencyRequest:
    """Stage 3 (authenticated rounds), server -> survivor: the set U3 of included clients."""

    kind: ClassVar[MessageKind] = MessageKind.CONSISTENCY_REQUEST
    header: Header
    recipient: int
    survivors: tuple[int, ...]

    def encode(self) -> bytes:
        body = struct.pack("<Q", self.recipient) + _ids(self.survivors)
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> ConsistencyRequest:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        _require_server(header)
        message = cls(header, reader.u64(), reader.ids())
        reader.finish()
        return message


@dataclass(frozen=True)
class ConsistencySignature:
    """Stage 3, survivor -> server: its signature over the survivor set it was told."""

    kind: ClassVar[MessageKind] = MessageKind.CONSISTENCY_SIGNATURE
    header: Header
    signature: bytes

    def encode(self) -> bytes:
        return _encode_header(self.kind, self.header) + self.signature

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> ConsistencySignature:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        message = cls(header, reader.take(SIGNATURE_BYTES))
        reader.finish()
        return message


@dataclass(frozen=True)
class ConsistencyProof:
    """Stage 3, server -> survivor: the signatures it collected, as (signer, signature).

    ``certificates`` are the signed advertisements of signers the recipient has no keys of
    (not its neighbours), so that it can check their round signing keys against the registry.
    """

    kind: ClassVar[MessageKind] = MessageKind.CONSISTENCY_PROOF
    header: Header
    recipient: int
    signatures: tuple[tuple[int, bytes], ...]
    certificates: tuple[PeerKeys, ...] = ()

    def encode(self) -> bytes:
        body = struct.pack("<QI", self.recipient, len(self.signatures))
        body += b"".join(struct.pack("<Q", signer) + sig for signer, sig in self.signatures)
        body += struct.pack("<I", len(self.certificates))
        for peer in self.certificates:
            body += struct.pack("<Q", peer.client_id) + peer.encryption_key + peer.masking_key
            body += peer.self_mask_commitment + peer.signing_key + peer.signature
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> ConsistencyProof:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        _require_server(header)
        recipient, count = reader.u64(), reader.u32()
        if count * (8 + SIGNATURE_BYTES) > reader.remaining():
            raise MessageFormatError(f"consistency proof of {count} signatures does not fit")
        signatures = tuple((reader.u64(), reader.take(SIGNATURE_BYTES)) for _ in range(count))
        _require_unique(signer for signer, _ in signatures)
        count = reader.u32()
        entry = 8 + 3 * PUBLIC_KEY_BYTES + COMMITMENT_BYTES + LEDGER_SIGNATURE_BYTES
        if count * entry != reader.remaining():
            raise MessageFormatError(f"{count} certificates do not fill the consistency proof")
        certificates = tuple(
            PeerKeys(
                reader.u64(),
                reader.take(PUBLIC_KEY_BYTES),
                reader.take(PUBLIC_KEY_BYTES),
                reader.take(COMMITMENT_BYTES),
                reader.take(PUBLIC_KEY_BYTES),
                reader.take(LEDGER_SIGNATURE_BYTES),
            )
            for _ in range(count)
        )
        _require_unique(peer.client_id for peer in certificates)
        return cls(header, recipient, signatures, certificates)


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3, server -> one survivor: whose self-mask seeds and whose masking keys to reveal."""

    kind: ClassVar[MessageKind] = MessageKind.UNMASK_REQUEST
    header: Header
    recipient: int
    seed_owners: tuple[int, ...]
    key_owners: tuple[int, ...]

    def encode(self) -> bytes:
        body = struct.pack("<Q", self.recipient) + _ids(self.seed_owners) + _ids(self.key_owners)
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> UnmaskRequest:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        _require_server(header)
        message = cls(header, reader.u64(), reader.ids(), reader.ids())
        reader.finish()
        return message


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, survivor -> server: the requested shares as (owner id, share bytes)."""

    kind: ClassVar[MessageKind] = MessageKind.UNMASK_RESPONSE
    header: Header
    seed_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        parts = [_encode_header(self.kind, self.header)]
        for group in (self.seed_shares, self.key_shares):
            parts.append(struct.pack("<I", len(group)))
            parts.extend(struct.pack("<Q", owner) + share for owner, share in group)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes) -> UnmaskResponse:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        groups = []
        for _ in range(2):
            count = reader.u32()
            if count * (8 + SHARE_BYTES) > reader.remaining():
                raise MessageFormatError(f"share list of {count} entries does not fit")
            group = tuple((reader.u64(), reader.take(SHARE_BYTES)) for _ in range(count))
            _require_unique(owner for owner, _ in group)
            groups.append(group)
        reader.finish()
        return cls(header, groups[0], groups[1])


@dataclass(frozen=True)
class Aggregate:
    """The server's combination: included client ids and the modular sum of their vectors."""

    kind: ClassVar[MessageKind] = MessageKind.AGGREGATE
    header: Header
    included: tuple[int, ...]
    vector: np.ndarray

    def encode(self) -> bytes:
        vector = np.ascontiguousarray(self.vector, dtype="<u4")
        body = _ids(self.included) + struct.pack("<I", vector.size) + vector.tobytes()
        return _encode_header(self.kind, self.header) + body

    @classmethod
    def decode(cls, data: bytes, *, round_id: int, params_digest: bytes, dim: int) -> Aggregate:
        header, reader = _open(data, cls.kind, round_id=round_id, params_digest=params_digest)
        _require_server(header)
        included = reader.ids()
        if reader.u32() != dim or reader.remaining() != 4 * dim:
            raise MessageFormatError(f"aggregate vector does not have length {dim}")
        return cls(header, included, np.frombuffer(reader.take(4 * dim), dtype="<u4"))


def _require_server(header: Header) -> None:
    if header.sender != SERVER_ID:
        raise MessageFormatError(f"server message with sender {header.sender}")


def _require_unique(values: Iterable[int]) -> None:
    seen = list(values)
    if len(set(seen)) != len(seen):
        raise MessageFormatError("message lists the same client twice")
