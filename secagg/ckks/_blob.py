"""Wire format of CKKS client and aggregate blobs: self-describing, canonical, pure numpy.

Layout (big-endian integers)::

    magic      4   b"SAGB"
    version    2   1
    scheme     4   b"ckks"
    kind       1   1 = client blob, 2 = aggregate blob
    context   32   keccak256 of the public context (parameters and public key)
    elements   8   number of real values encoded
    chunks     4   number of ciphertexts = ceil(elements / N)
    [aggregate only] inputs 4, then inputs x 32-byte keccak256 digests of the client blobs
    payload        chunks x 2 polynomials x N coefficients mod q (RNS, NTT form, the
                   last level's single prime), coefficient i in bits [i*b, (i+1)*b) of a
                   little-endian bit string, b = bit_length(q); N is a multiple of 8, so
                   the payload is exactly chunks * 2 * N * b / 8 bytes, with no padding

Every coefficient must be < q, so a blob has exactly one valid encoding and its digest,
keccak256 of its bytes, is canonical.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secagg._digest import Digest, keccak256
from secagg._errors import BlobFormatError, ParameterMismatchError
from secagg.ckks._params import CKKSParams, wire_prime

BLOB_MAGIC = b"SAGB"
BLOB_VERSION = 1
SCHEME_TAG = b"ckks"
KIND_CLIENT = 1
KIND_AGGREGATE = 2
_HEAD = struct.Struct(">4sH4sB32sQI")
_COUNT = struct.Struct(">I")
_DIGEST_SIZE = 32


@dataclass(frozen=True)
class BlobHeader:
    """The self-describing part of a blob (everything before the payload)."""

    kind: int
    context_digest: Digest
    element_count: int
    chunk_count: int
    inputs: tuple[Digest, ...] = ()

    @property
    def is_aggregate(self) -> bool:
        return self.kind == KIND_AGGREGATE


@dataclass(frozen=True)
class ParsedBlob:
    """A parsed blob: header and ciphertext coefficients, shape ``(chunks, 2, N)``."""

    header: BlobHeader
    coefficients: np.ndarray


def blob_digest(blob: bytes) -> Digest:
    """keccak256 of a blob's (canonical) bytes: what clients commit to on the ledger."""
    return keccak256(blob)


def parse_header(blob: bytes) -> tuple[BlobHeader, int]:
    """Parse the header only; returns it and the payload offset. No parameters needed."""
    if len(blob) < _HEAD.size:
        raise BlobFormatError(f"blob truncated: {len(blob)} bytes < header of {_HEAD.size}")
    magic, version, scheme, kind, context, elements, chunks = _HEAD.unpack_from(blob)
    if magic != BLOB_MAGIC:
        raise BlobFormatError(f"blob magic {magic!r} != {BLOB_MAGIC!r}")
    if version != BLOB_VERSION:
        raise BlobFormatError(f"blob format version {version} != {BLOB_VERSION}")
    if scheme != SCHEME_TAG:
        raise BlobFormatError(f"blob scheme {scheme!r} != {SCHEME_TAG!r}")
    if kind not in (KIND_CLIENT, KIND_AGGREGATE):
        raise BlobFormatError(f"blob kind {kind} is neither client (1) nor aggregate (2)")
    if elements == 0 or chunks == 0:
        raise BlobFormatError(f"blob is empty: {elements} elements in {chunks} chunks")
    offset = _HEAD.size
    inputs: tuple[Digest, ...] = ()
    if kind == KIND_AGGREGATE:
        if len(blob) < offset + _COUNT.size:
            raise BlobFormatError("aggregate blob truncated before its input count")
        (count,) = _COUNT.unpack_from(blob, offset)
        offset += _COUNT.size
        end = offset + count * _DIGEST_SIZE
        if count == 0 or len(blob) < end:
            raise BlobFormatError(f"aggregate blob lists {count} inputs but is truncated/empty")
        inputs = tuple(
            Digest(bytes(blob[start : start + _DIGEST_SIZE]))
            for start in range(offset, end, _DIGEST_SIZE)
        )
        offset = end
    header = BlobHeader(
        kind=kind,
        context_digest=Digest(bytes(context)),
        element_count=elements,
        chunk_count=chunks,
        inputs=inputs,
    )
    return header, offset


def payload_size(params: CKKSParams, chunk_count: int) -> int:
    """Bytes of the packed payload of ``chunk_count`` ciphertexts."""
    count = chunk_count * 2 * params.poly_modulus_degree
    return math.ceil(count * wire_prime(params).bit_length() / 8)


def parse_blob(blob: bytes, params: CKKSParams, *, context_digest: Digest) -> ParsedBlob:
    """Parse and fully validate a blob made under ``params`` and ``context_digest``.

    Raises :class:`BlobFormatError` for structural problems and
    :class:`ParameterMismatchError` for a blob made under another context (other
    parameters or another key).
    """
    header, offset = parse_header(blob)
    if header.context_digest != context_digest:
        raise ParameterMismatchError(
            "blob was made under another public context (other parameters or another key): "
            f"{header.context_digest.hex()[:16]}... != {context_digest.hex()[:16]}..."
        )
    degree = params.poly_modulus_degree
    if header.chunk_count != math.ceil(header.element_count / degree):
        raise BlobFormatError(
            f"blob has {header.chunk_count} chunks for {header.element_count} elements, "
            f"expected {math.ceil(header.element_count / degree)} (N = {degree})"
        )
    expected = offset + payload_size(params, header.chunk_count)
    if len(blob) != expected:
        raise BlobFormatError(f"blob has {len(blob)} bytes, its header implies {expected}")
    prime = wire_prime(params)
    count = header.chunk_count * 2 * degree
    values = unpack_coefficients(memoryview(blob)[offset:], count, prime.bit_length())
    if np.any(values >= np.uint64(prime)):
        raise BlobFormatError("blob has a coefficient >= q (not a reduced ciphertext)")
    return ParsedBlob(header=header, coefficients=values.reshape(header.chunk_count, 2, degree))


def encode_blob(
    *,
    kind: int,
    params: CKKSParams,
    context_digest: Digest,
    element_count: int,
    coefficients: np.ndarray,
    inputs: Sequence[Digest] = (),
) -> bytes:
    """Serialize reduced coefficients ``(chunks, 2, N)`` into a blob."""
    chunks = int(coefficients.shape[0])
    head = _HEAD.pack(
        BLOB_MAGIC, BLOB_VERSION, SCHEME_TAG, kind, context_digest, element_count, chunks
    )
    if kind == KIND_AGGREGATE:
        head += _COUNT.pack(len(inputs)) + b"".join(inputs)
    bits = wire_prime(params).bit_length()
    return head + pack_coefficients(coefficients.reshape(-1), bits)


def _window(buffer: np.ndarray, offset: int, stride: int, count: int, dtype: str) -> np.ndarray:
    """A strided view of ``count`` items of ``dtype`` starting at byte ``offset``."""
    return np.ndarray(
        shape=(count,), dtype=dtype, buffer=buffer.data, offset=offset, strides=(stride,)
    )


def pack_coefficients(values: np.ndarray, bits: int) -> bytes:
    """Pack uint64 ``values`` (each < 2**bits, count a multiple of 8) in ``bits`` bits each.

    Value ``i`` occupies bits ``[i * bits, (i + 1) * bits)`` of the little-endian bit
    string; eight values fill exactly ``bits`` bytes, so there is no padding.
    """
    flat = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1, 8)
    groups = flat.shape[0]
    out = np.zeros(groups * bits + 16, dtype=np.uint8)
    for lane in range(8):
        offset, shift = divmod(lane * bits, 8)
        column = flat[:, lane]
        window = _window(out, offset, bits, groups, "<u8")
        window |= column << np.uint64(shift)
        if shift + bits > 64:  # the top bits spill into the ninth byte
            spill = _window(out, offset + 8, bits, groups, "u1")
            spill |= (column >> np.uint64(64 - shift)).astype(np.uint8)
    return out[: groups * bits].tobytes()


def unpack_coefficients(payload: memoryview | bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_coefficients` for ``count`` values (a multiple of 8)."""
    if count % 8:
        raise BlobFormatError(f"coefficient count {count} is not a multiple of 8")
    groups = count // 8
    size = groups * bits
    buffer = np.zeros(size + 16, dtype=np.uint8)
    buffer[:size] = np.frombuffer(payload, dtype=np.uint8, count=size)
    out = np.empty((groups, 8), dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    for lane in range(8):
        offset, shift = divmod(lane * bits, 8)
        column = _window(buffer, offset, bits, groups, "<u8") >> np.uint64(shift)
        if shift + bits > 64:
            spill = _window(buffer, offset + 8, bits, groups, "u1").astype(np.uint64)
            column |= spill << np.uint64(64 - shift)
        out[:, lane] = column & mask
    return out.reshape(count)
