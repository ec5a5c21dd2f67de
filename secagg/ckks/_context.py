"""The public CKKS context that clients and the aggregator receive from the key holder.

It holds the public parameters and the SEAL public key, nothing else: no secret key, and
no relinearization or Galois keys, since the protocol only adds ciphertexts (compare
TenSEAL issue 191, where the secret key travelled with the context by default). Its
keccak256 digest, the *context digest*, identifies parameters and key together and is
written into every blob, so a blob made under another key or other parameters is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from secagg._digest import Digest, keccak256
from secagg._errors import BlobFormatError
from secagg.ckks._params import CKKSParams

CONTEXT_MAGIC = b"SAGC"
CONTEXT_VERSION = 1
_HEAD = struct.Struct(">4sHIHBI")  # magic, version, N, scale bits, prime count, key length


@dataclass(frozen=True)
class PublicContext:
    """Public parameters plus the SEAL public key (serialized by SEAL), as sent on the wire."""

    params: CKKSParams
    public_key: bytes

    def to_bytes(self) -> bytes:
        sizes = self.params.coeff_mod_bit_sizes
        head = _HEAD.pack(
            CONTEXT_MAGIC,
            CONTEXT_VERSION,
            self.params.poly_modulus_degree,
            self.params.scale_bits,
            len(sizes),
            len(self.public_key),
        )
        return head + bytes(sizes) + self.public_key

    @property
    def digest(self) -> Digest:
        """keccak256 of :meth:`to_bytes`: binds parameters and public key."""
        return keccak256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicContext:
        """Parse a public context; :class:`BlobFormatError` if malformed."""
        if len(data) < _HEAD.size:
            raise BlobFormatError(f"public context truncated: {len(data)} bytes")
        magic, version, degree, scale_bits, count, key_length = _HEAD.unpack_from(data)
        if magic != CONTEXT_MAGIC:
            raise BlobFormatError(f"public context magic {magic!r} != {CONTEXT_MAGIC!r}")
        if version != CONTEXT_VERSION:
            raise BlobFormatError(f"public context version {version} != {CONTEXT_VERSION}")
        if len(data) != _HEAD.size + count + key_length:
            raise BlobFormatError(
                f"public context has {len(data)} bytes, header says "
                f"{_HEAD.size + count + key_length}"
            )
        sizes = tuple(data[_HEAD.size : _HEAD.size + count])
        params = CKKSParams(
            poly_modulus_degree=degree, coeff_mod_bit_sizes=sizes, scale_bits=scale_bits
        )
        return cls(params=params, public_key=bytes(data[_HEAD.size + count :]))
