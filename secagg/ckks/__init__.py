"""CKKS blind aggregation over TenSEAL's SEAL bindings.

Roles (see ``shared/DESIGN.md``): :class:`KeyHolder` creates the keys and reveals only
aggregates of at least ``min_clients`` client blobs, flooded and rounded;
:class:`CKKSClient` encrypts with the public context only; :class:`CKKSAggregator` adds
ciphertexts blindly with the public context only. :func:`combine_blobs` and
:func:`blob_digest` let an auditor recombine committed blobs and compare digests.
Only :mod:`secagg.ckks._seal` imports TenSEAL.
"""

from secagg.ckks._aggregator import CKKSAggregator, combine_blobs
from secagg.ckks._blob import (
    BLOB_MAGIC,
    BLOB_VERSION,
    BlobHeader,
    ParsedBlob,
    blob_digest,
    parse_blob,
    parse_header,
)
from secagg.ckks._client import CKKSClient
from secagg.ckks._config import CKKSSchema, build_ckks_scheme, params_from_schema
from secagg.ckks._context import PublicContext
from secagg.ckks._keyholder import KeyHolder, NotAnAggregateError
from secagg.ckks._params import (
    HE_STANDARD_128_MAX_MODULUS_BITS,
    PRESETS,
    CKKSParams,
    RevealPolicy,
    aggregation_params,
    compat_params,
    preset_params,
    wire_prime,
)
from secagg.ckks._session import CKKSScheme

__all__ = [
    "BLOB_MAGIC",
    "BLOB_VERSION",
    "HE_STANDARD_128_MAX_MODULUS_BITS",
    "PRESETS",
    "BlobHeader",
    "CKKSAggregator",
    "CKKSClient",
    "CKKSParams",
    "CKKSSchema",
    "CKKSScheme",
    "KeyHolder",
    "NotAnAggregateError",
    "ParsedBlob",
    "PublicContext",
    "RevealPolicy",
    "aggregation_params",
    "blob_digest",
    "build_ckks_scheme",
    "combine_blobs",
    "compat_params",
    "params_from_schema",
    "parse_blob",
    "parse_header",
    "preset_params",
    "wire_prime",
]
