"""CKKSParams / RevealPolicy validation, presets and the pure-Python wire prime."""

from __future__ import annotations

import numpy as np
import pytest

from secagg._errors import InsecureParametersError
from secagg.ckks import (
    HE_STANDARD_128_MAX_MODULUS_BITS,
    CKKSParams,
    RevealPolicy,
    aggregation_params,
    compat_params,
    preset_params,
    wire_prime,
)
from secagg.ckks._seal import _Ring


@pytest.mark.parametrize(("degree", "bound"), sorted(HE_STANDARD_128_MAX_MODULUS_BITS.items()))
def test_bound_is_enforced_at_every_degree(degree: int, bound: int) -> None:
    primes = -(-bound // 60)
    base, extra = divmod(bound, primes)
    sizes = [base + 1] * extra + [base] * (primes - extra)  # exactly the bound, all <= 60
    assert sum(sizes) == bound
    CKKSParams(poly_modulus_degree=degree, coeff_mod_bit_sizes=tuple(sizes), scale_bits=20)
    too_big = (*sizes[:-1], sizes[-1] + 1)
    with pytest.raises(InsecureParametersError, match=f"bound of {bound} bits"):
        CKKSParams(poly_modulus_degree=degree, coeff_mod_bit_sizes=too_big, scale_bits=20)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poly_modulus_degree": 1024}, "poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": ()}, "coeff_mod_bit_sizes"),
        ({"coeff_mod_bit_sizes": (61,)}, "coeff_mod_bit_sizes"),
        ({"scale_bits": 52}, "scale_bits"),
        ({"scale_bits": 5}, "scale_bits"),
    ],
)
def test_bad_fields_are_named(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {
        "poly_modulus_degree": 2048,
        "coeff_mod_bit_sizes": (54,),
        "scale_bits": 42,
    }
    base.update(kwargs)
    with pytest.raises(InsecureParametersError, match=field):
        CKKSParams(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_clients": 0}, "min_clients"),
        ({"precision_bits": 0}, "precision_bits"),
        ({"flood_std_bits": 60}, "flood_std_bits"),
    ],
)
def test_reveal_policy_fields_are_named(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(InsecureParametersError, match=field):
        RevealPolicy(**kwargs)


def test_presets() -> None:
    assert aggregation_params() == preset_params("aggregation")
    assert compat_params().coeff_mod_bit_sizes == (60, 40, 40)
    assert compat_params().scale_bits == 40
    agg = aggregation_params()
    assert sum(agg.coeff_mod_bit_sizes) <= HE_STANDARD_128_MAX_MODULUS_BITS[2048]
    assert agg.max_abs_sum >= 100.0  # a 100-client sum of |x| <= 1 cannot wrap around
    with pytest.raises(InsecureParametersError, match="preset"):
        preset_params("fast")


@pytest.mark.parametrize(
    "params",
    [
        aggregation_params(),
        compat_params(),
        CKKSParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(40, 30), scale_bits=30),
    ],
)
def test_wire_prime_matches_seal(params: CKKSParams) -> None:
    assert wire_prime(params) == _Ring(params).wire_prime
    assert wire_prime(params) % (2 * params.poly_modulus_degree) == 1


def test_digest_separates_parameters() -> None:
    assert aggregation_params().digest() != compat_params().digest()
    assert aggregation_params().digest() == aggregation_params().digest()


def test_ciphertext_coefficients_round_trip_through_seal() -> None:
    from secagg.ckks._seal import PublicSealKeys, SecretSealKeys

    params = aggregation_params()
    secret = SecretSealKeys(params)
    public = PublicSealKeys(params, secret.public_key_bytes)
    values = np.linspace(-1.0, 1.0, params.poly_modulus_degree)
    coefficients = public.encrypt(values)
    assert coefficients.shape == (1, 2, params.poly_modulus_degree)
    assert np.all(coefficients < np.uint64(wire_prime(params)))
    ring = _Ring(params)
    rebuilt = ring.coefficients(ring.ciphertext_from_coefficients(coefficients[0]))
    np.testing.assert_array_equal(rebuilt, coefficients[0])
    np.testing.assert_allclose(secret.decrypt(coefficients), values, atol=1e-8)
