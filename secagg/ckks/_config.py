"""Hydra schema of ``secagg=ckks`` and its conversion into a :class:`CKKSScheme`.

Overrides: ``secagg.preset`` (aggregation | compat), optional explicit
``secagg.poly_modulus_degree`` / ``secagg.coeff_mod_bit_sizes`` / ``secagg.scale_bits``
(each replaces the preset's value), ``secagg.min_clients``, ``secagg.precision_bits`` and
``secagg.flood_std_bits`` (the key holder floods with std 2^-flood_std_bits and rounds to
2^-precision_bits before release), ``secagg.committee_size`` (K) and
``secagg.committee_threshold`` (T): a decryption committee, any T of K members release a
sum (default 1 and 1: a single key holder; see :mod:`secagg.ckks._committee`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from secagg._errors import InsecureParametersError
from secagg.ckks._committee_keys import CommitteeConfigError, CommitteeParams
from secagg.ckks._params import CKKSParams, RevealPolicy, preset_params
from secagg.ckks._session import CKKSScheme


@dataclass
class CKKSSchema:
    """``secagg=ckks``: CKKS blind aggregation (TenSEAL/SEAL)."""

    name: str = "ckks"
    preset: str = "aggregation"
    poly_modulus_degree: int | None = None
    coeff_mod_bit_sizes: list[int] | None = None
    scale_bits: int | None = None
    min_clients: int = 2
    precision_bits: int = 24
    flood_std_bits: int = 24
    committee_size: int = 1
    committee_threshold: int = 1


def params_from_schema(schema: Any) -> CKKSParams:
    """The preset's parameters with any explicit field replacing the preset's value."""
    params = preset_params(str(schema.preset))
    overrides: dict[str, Any] = {}
    if schema.poly_modulus_degree is not None:
        overrides["poly_modulus_degree"] = int(schema.poly_modulus_degree)
    if schema.coeff_mod_bit_sizes is not None:
        overrides["coeff_mod_bit_sizes"] = tuple(int(bits) for bits in schema.coeff_mod_bit_sizes)
    if schema.scale_bits is not None:
        overrides["scale_bits"] = int(schema.scale_bits)
    return dataclasses.replace(params, **overrides) if overrides else params


def committee_from_schema(schema: Any) -> CommitteeParams:
    """The committee (K, T) of a schema, validated; :class:`CommitteeConfigError` if not.

    K > 1 needs a single-prime parameter set (the aggregation preset), where key shares,
    ciphertexts and partial decryptions live in one NTT domain.
    """
    committee = CommitteeParams(
        size=_as_int(schema.committee_size, "committee_size"),
        threshold=_as_int(schema.committee_threshold, "committee_threshold"),
    )
    if committee.size > 1 and len(params_from_schema(schema).coeff_mod_bit_sizes) != 1:
        raise CommitteeConfigError(
            "committee_size > 1 needs a single-prime parameter set (preset=aggregation)"
        )
    return committee


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommitteeConfigError(f"{field} must be an int, got {value!r}")
    return value


def policy_from_schema(schema: Any) -> RevealPolicy:
    """The release policy a :class:`CKKSSchema` instance configures."""
    return RevealPolicy(
        min_clients=int(schema.min_clients),
        precision_bits=int(schema.precision_bits),
        flood_std_bits=int(schema.flood_std_bits),
    )


def build_ckks_scheme(schema: Any) -> CKKSScheme:
    """Validate a :class:`CKKSSchema` instance and build the scheme (keys are generated)."""
    if schema.name != "ckks":
        raise InsecureParametersError(f"name must be 'ckks', got {schema.name!r}")
    committee = committee_from_schema(schema)
    policy = policy_from_schema(schema)
    return CKKSScheme(params=params_from_schema(schema), policy=policy, committee=committee)
