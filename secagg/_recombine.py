"""Recombination for auditors: rebuild a round's aggregate from the committed blobs alone.

Each scheme's combination is deterministic, so anyone holding the round manifest, the
artifact store and the list of participants can recompute the aggregate bytes and compare
their digest with the one published on the ledger. No secret is needed: CKKS needs only the
public context (in the store, named in the manifest), masking only the public parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from secagg._digest import Digest
from secagg._errors import BlobFormatError, EmptyAggregateError, ParameterMismatchError
from secagg._manifest import ManifestError, RoundManifest
from secagg._scheme import PlainScheme
from secagg._store import ArtifactStore


def _public_context(manifest: RoundManifest, store: ArtifactStore) -> bytes:
    if manifest.public_material is None:
        raise ParameterMismatchError("the manifest names no public context")
    return store.get(Digest(bytes.fromhex(manifest.public_material)))


def recombine(
    manifest: RoundManifest, blobs: Sequence[tuple[int, bytes]], store: ArtifactStore
) -> bytes:
    """The aggregate blob of ``blobs`` (``(client id, blob)`` in ascending client order).

    Raises a :class:`~secagg._errors.SecAggError` (a ``ValueError``) when a blob is invalid.
    """
    if not blobs:
        raise EmptyAggregateError("no blobs to recombine")
    ids = [client_id for client_id, _ in blobs]
    if ids != sorted(set(ids)):
        raise BlobFormatError(f"blobs must be in ascending, distinct client order, got {ids}")
    if manifest.scheme == "plain":
        session = PlainScheme().start_round(
            round_id=manifest.round_id,
            client_ids=[c.client_id for c in manifest.clients],
            dim=manifest.dim,
        )
        return session.combine(dict(blobs))
    if manifest.scheme == "ckks":
        from secagg.ckks import combine_blobs, parse_header

        for client_id, blob in blobs:
            blob_header, _ = parse_header(blob)
            if blob_header.element_count != manifest.dim:
                raise ParameterMismatchError(
                    f"client {client_id}'s blob holds {blob_header.element_count} values, the "
                    f"manifest says dim={manifest.dim}"
                )
        return combine_blobs(_public_context(manifest, store), [blob for _, blob in blobs])
    if manifest.scheme == "masking":
        from secagg.masking import MaskedInput, MaskingParams, plan_round
        from secagg.masking._constants import SERVER_ID
        from secagg.masking._messages import Aggregate, Header

        try:
            params = MaskingParams.from_schema(_Schema(manifest.scheme_config))
        except (AttributeError, TypeError, ValueError) as error:
            raise ManifestError(
                f"the manifest's masking parameters are unusable: {error}"
            ) from error
        plan = plan_round(
            params,
            round_id=manifest.round_id,
            client_ids=[c.client_id for c in manifest.clients],
            dim=manifest.dim,
        )
        total = np.zeros(plan.dim, dtype=np.uint32)
        for _, blob in blobs:
            message = MaskedInput.decode(
                blob, round_id=plan.round_id, params_digest=plan.params_digest, dim=plan.dim
            )
            total += message.vector
        total &= np.uint32(plan.modulus_mask)
        header = Header(plan.round_id, plan.params_digest, SERVER_ID)
        return Aggregate(header, tuple(ids), total).encode()
    raise ParameterMismatchError(f"unknown scheme {manifest.scheme!r} in the manifest")


def aggregate_inputs(manifest: RoundManifest, aggregate: bytes) -> tuple[Digest, ...] | None:
    """The input blob digests an aggregate lists, for schemes whose aggregates list them."""
    if manifest.scheme != "ckks":
        return None
    from secagg.ckks import parse_header

    header, _ = parse_header(aggregate)
    return tuple(header.inputs)


class _Schema:
    """Attribute access over a manifest's scheme-config mapping (what ``from_schema`` reads)."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self.__dict__.update(values)
