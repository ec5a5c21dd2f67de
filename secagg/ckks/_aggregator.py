"""Aggregator role: blind, deterministic, streaming combination of client blobs.

Threat model: the aggregator holds the public context only and never a secret key, so
it learns nothing about any update from the ciphertexts (RLWE). It does not even need
SEAL: adding CKKS ciphertexts is adding their RNS coefficients modulo q, which is what
SEAL's ``Evaluator.add`` does; here it runs in numpy on the parsed wire coefficients.
Memory is one model's worth of coefficients, whatever the number of clients.

The combination is deterministic (modular addition in a fixed order), so an auditor who
recombines the same blobs in the same order gets byte-identical aggregate bytes
(:func:`combine_blobs`). The aggregate blob lists, in order, the digest of every client
blob that went in.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from secagg._digest import Digest
from secagg._errors import (
    BlobFormatError,
    DuplicateClientError,
    EmptyAggregateError,
    ParameterMismatchError,
)
from secagg.ckks._blob import KIND_AGGREGATE, blob_digest, encode_blob, parse_blob, parse_header
from secagg.ckks._context import PublicContext
from secagg.ckks._params import wire_prime


class CKKSAggregator:
    """Adds client blobs one at a time; a rejected blob leaves the state unchanged."""

    def __init__(self, public_context: PublicContext | bytes, *, element_count: int) -> None:
        if isinstance(public_context, bytes | bytearray):
            public_context = PublicContext.from_bytes(bytes(public_context))
        if element_count <= 0:
            raise EmptyAggregateError(f"element_count must be > 0, got {element_count}")
        self.context = public_context
        self.context_digest = public_context.digest
        self.element_count = element_count
        self._prime = np.uint64(wire_prime(public_context.params))
        self._sum: np.ndarray | None = None
        self._inputs: list[Digest] = []
        self._client_ids: set[int] = set()

    @property
    def count(self) -> int:
        """Number of client blobs combined so far."""
        return len(self._inputs)

    @property
    def inputs(self) -> tuple[Digest, ...]:
        return tuple(self._inputs)

    def add(self, blob: bytes, *, client_id: int | None = None) -> Digest:
        """Validate ``blob`` fully, then add it; returns its digest.

        Raises (state unchanged): :class:`BlobFormatError`, :class:`ParameterMismatchError`
        (other context or other element count), :class:`DuplicateClientError` (same client
        id or same blob twice).
        """
        if client_id is not None and client_id in self._client_ids:
            raise DuplicateClientError(f"client {client_id} already contributed to this sum")
        parsed = parse_blob(blob, self.context.params, context_digest=self.context_digest)
        if parsed.header.is_aggregate:
            raise BlobFormatError("an aggregate blob cannot be combined as a client blob")
        if parsed.header.element_count != self.element_count:
            raise ParameterMismatchError(
                f"blob encodes {parsed.header.element_count} elements, this round has "
                f"{self.element_count}"
            )
        digest = blob_digest(blob)
        if digest in self._inputs:
            raise DuplicateClientError(f"blob {digest.hex()[:16]}... was already combined")
        if self._sum is None:
            self._sum = parsed.coefficients.copy()
        else:
            total = self._sum
            np.add(total, parsed.coefficients, out=total)  # < 2q < 2^61: no overflow
            # reduce mod q: where total < q, total - q wraps around above it
            np.minimum(total, total - self._prime, out=total)
        self._inputs.append(digest)
        if client_id is not None:
            self._client_ids.add(client_id)
        return digest

    def aggregate(self) -> bytes:
        """The aggregate blob of everything added so far."""
        if self._sum is None:
            raise EmptyAggregateError("no valid client blob was combined")
        return encode_blob(
            kind=KIND_AGGREGATE,
            params=self.context.params,
            context_digest=self.context_digest,
            element_count=self.element_count,
            coefficients=self._sum,
            inputs=self._inputs,
        )


def combine_blobs(public_context: PublicContext | bytes, blobs: Iterable[bytes]) -> bytes:
    """Recombine client blobs, in the given order, into the aggregate blob (pure).

    Same blobs in the same order and the same public context give byte-identical output;
    the auditor compares ``blob_digest`` of the result with the published aggregate
    digest. Any invalid blob raises (an audit must not skip inputs silently).
    """
    aggregator: CKKSAggregator | None = None
    for blob in blobs:
        if aggregator is None:
            header, _ = parse_header(blob)
            aggregator = CKKSAggregator(public_context, element_count=header.element_count)
        aggregator.add(blob)
    if aggregator is None:
        raise EmptyAggregateError("no blobs to combine")
    return aggregator.aggregate()
