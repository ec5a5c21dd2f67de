"""CKKS blind aggregation over TenSEAL's SEAL bindings.

Roles (see ``docs/architecture.md``): :class:`KeyHolder` creates the keys and reveals only
aggregates of at least ``min_clients`` client blobs, flooded and rounded;
:class:`CKKSClient` encrypts with the public context only; :class:`CKKSAggregator` adds
ciphertexts blindly with the public context only. :func:`combine_blobs` and
:func:`blob_digest` let an auditor recombine committed blobs and compare digests.
Committee decryption (no single key holder): :class:`CommitteeMember` (collective key
generation, Shamir shares, partial decryption after :func:`check_aggregate`),
:func:`verify_public_context` and :func:`combine_partials` (public, no secret).
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
from secagg.ckks._committee import (
    CommitteeMember,
    CommitteeRelease,
    CommitteeSetupError,
    InsufficientPartialsError,
    PartialDecryption,
    PartialMismatchError,
    check_aggregate,
    combine_partials,
)
from secagg.ckks._committee_keys import (
    CRP_SEED_SIZE,
    MAX_COMMITTEE_SIZE,
    CommitteeConfigError,
    CommitteeParams,
    PublicKeyShare,
    SmudgingBudget,
    collective_public_context,
    common_random_polynomial,
    smudging_budget,
    verify_public_context,
)
from secagg.ckks._config import (
    CKKSSchema,
    build_ckks_scheme,
    committee_from_schema,
    params_from_schema,
)
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
from secagg.ckks._session import CKKSScheme, NoSecretKeyError, PublicCKKSSession

__all__ = [
    "BLOB_MAGIC",
    "BLOB_VERSION",
    "CRP_SEED_SIZE",
    "HE_STANDARD_128_MAX_MODULUS_BITS",
    "MAX_COMMITTEE_SIZE",
    "PRESETS",
    "BlobHeader",
    "CKKSAggregator",
    "CKKSClient",
    "CKKSParams",
    "CKKSSchema",
    "CKKSScheme",
    "CommitteeConfigError",
    "CommitteeMember",
    "CommitteeParams",
    "CommitteeRelease",
    "CommitteeSetupError",
    "InsufficientPartialsError",
    "KeyHolder",
    "NoSecretKeyError",
    "NotAnAggregateError",
    "ParsedBlob",
    "PartialDecryption",
    "PartialMismatchError",
    "PublicCKKSSession",
    "PublicContext",
    "PublicKeyShare",
    "RevealPolicy",
    "SmudgingBudget",
    "aggregation_params",
    "blob_digest",
    "build_ckks_scheme",
    "check_aggregate",
    "collective_public_context",
    "combine_blobs",
    "combine_partials",
    "committee_from_schema",
    "common_random_polynomial",
    "compat_params",
    "params_from_schema",
    "parse_blob",
    "parse_header",
    "preset_params",
    "smudging_budget",
    "verify_public_context",
    "wire_prime",
]
