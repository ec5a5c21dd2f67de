"""Recombination for auditors: rebuild a round's aggregate from the committed blobs alone.

Each scheme's combination is deterministic, so anyone holding the round manifest, the
artifact store and the list of participants can recompute the aggregate bytes and compare
their digest with the one published on the ledger. No secret is needed: CKKS needs only the
public context (in the store, named in the manifest), masking only the public parameters.
The manifest's scheme name resolves the scheme class (:func:`secagg._hydra.scheme_class`),
which does the scheme's part (:meth:`~secagg._scheme.ProtectionScheme.recombine`).
"""

from __future__ import annotations

from collections.abc import Sequence

from secagg._digest import Digest
from secagg._errors import BlobFormatError, EmptyAggregateError
from secagg._hydra import scheme_class
from secagg._manifest import RoundManifest
from secagg._store import ArtifactStore


def recombine(
    manifest: RoundManifest, blobs: Sequence[tuple[int, bytes]], store: ArtifactStore
) -> bytes:
    """The aggregate blob of ``blobs`` (``(client id, blob)`` in ascending client order).

    Raises a :class:`~secagg._errors.SecAggError` (a ``ValueError``) when a blob is invalid
    or the manifest names no registered scheme.
    """
    if not blobs:
        raise EmptyAggregateError("no blobs to recombine")
    ids = [client_id for client_id, _ in blobs]
    if ids != sorted(set(ids)):
        raise BlobFormatError(f"blobs must be in ascending, distinct client order, got {ids}")
    return scheme_class(manifest.scheme).recombine(manifest, blobs, store=store)


def aggregate_inputs(manifest: RoundManifest, aggregate: bytes) -> tuple[Digest, ...] | None:
    """The input blob digests an aggregate lists, for schemes whose aggregates list them."""
    return scheme_class(manifest.scheme).listed_inputs(manifest, aggregate)
