"""Public CKKS parameters, their 128-bit security check, and the two presets.

Nothing here touches TenSEAL: the parameters are plain data, validated once at
construction, with a canonical byte encoding so that their digest can be bound into every
blob and compared by anyone (aggregator, key holder, auditor) without a SEAL context.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

from secagg._digest import Digest, keccak256
from secagg._errors import InsecureParametersError

#: Maximum total coefficient-modulus bits per ring degree for 128-bit classical security
#: with a ternary secret (HomomorphicEncryption.org standard, Albrecht et al. 2018).
HE_STANDARD_128_MAX_MODULUS_BITS: dict[int, int] = {
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

#: SEAL accepts primes of 2..60 bits in a CKKS modulus chain.
_MIN_PRIME_BITS = 20
_MAX_PRIME_BITS = 60
#: Bits kept between the encoded sum and q/2: sqrt(2) for two reals per complex slot, and
#: one bit of margin for the encryption noise and the modulus-switch rounding.
_HEADROOM_BITS = 2


@dataclass(frozen=True)
class CKKSParams:
    """CKKS ring and modulus parameters (public).

    ``coeff_mod_bit_sizes[0]`` is the prime that ciphertexts keep on the wire: clients
    switch every ciphertext down to that last level before serializing, since the
    aggregator only ever adds. Further primes only serve key generation/encryption (the
    last one is SEAL's special prime when there are several).

    Security assumption: the RLWE instance of degree ``poly_modulus_degree`` with the
    *total* modulus ``sum(coeff_mod_bit_sizes)`` bits gives 128-bit classical security per
    the HE standard table :data:`HE_STANDARD_128_MAX_MODULUS_BITS`; anything above the
    bound is refused with :class:`~secagg._errors.InsecureParametersError`.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        degree = self.poly_modulus_degree
        if degree not in HE_STANDARD_128_MAX_MODULUS_BITS:
            raise InsecureParametersError(
                f"poly_modulus_degree must be one of {sorted(HE_STANDARD_128_MAX_MODULUS_BITS)}, "
                f"got {degree}"
            )
        sizes = tuple(self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", sizes)
        if not sizes or not all(isinstance(bits, int) for bits in sizes):
            raise InsecureParametersError(
                f"coeff_mod_bit_sizes must be a non-empty tuple of ints, got {sizes!r}"
            )
        for bits in sizes:
            if not _MIN_PRIME_BITS <= bits <= _MAX_PRIME_BITS:
                raise InsecureParametersError(
                    f"coeff_mod_bit_sizes entries must be in [{_MIN_PRIME_BITS}, "
                    f"{_MAX_PRIME_BITS}] bits, got {bits}"
                )
        bound = HE_STANDARD_128_MAX_MODULUS_BITS[degree]
        if sum(sizes) > bound:
            raise InsecureParametersError(
                f"coeff_mod_bit_sizes total {sum(sizes)} bits exceeds the HE standard "
                f"128-bit security bound of {bound} bits for poly_modulus_degree={degree}"
            )
        if not isinstance(self.scale_bits, int) or not (
            10 <= self.scale_bits <= sizes[0] - _HEADROOM_BITS - 1
        ):
            raise InsecureParametersError(
                f"scale_bits must be in [10, {sizes[0] - _HEADROOM_BITS - 1}] "
                f"(coeff_mod_bit_sizes[0] - {_HEADROOM_BITS + 1}), got {self.scale_bits}"
            )

    @property
    def slots_per_ciphertext(self) -> int:
        """Real values per ciphertext: N/2 complex slots, two reals packed in each."""
        return self.poly_modulus_degree

    @property
    def wire_prime_bits(self) -> int:
        """Bit length of the single prime ciphertexts carry on the wire."""
        return self.coeff_mod_bit_sizes[0]

    @property
    def max_abs_sum(self) -> float:
        """Largest |sum| per coordinate that decrypts correctly (no wrap-around mod q)."""
        return float(2 ** (self.wire_prime_bits - self.scale_bits - _HEADROOM_BITS))

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    def canonical_bytes(self) -> bytes:
        """Canonical encoding: b'ckks-params/v1', N, len, bit sizes, scale bits (big-endian)."""
        sizes = self.coeff_mod_bit_sizes
        return (
            b"ckks-params/v1"
            + struct.pack(">IB", self.poly_modulus_degree, len(sizes))
            + bytes(sizes)
            + struct.pack(">H", self.scale_bits)
        )

    def digest(self) -> Digest:
        return keccak256(self.canonical_bytes())


def aggregation_params() -> CKKSParams:
    """The preset tuned for additions only.

    N = 2048 with one 54-bit prime (the HE standard's 128-bit bound for N = 2048) and
    scale 2^42. No special prime is needed because no key switching ever happens. The
    fresh public-key encryption noise at N = 2048 is about 2^12.5 in scale units per slot
    (measured); a 100-client sum grows it by ~10x (independent noises): a measured standard
    deviation of 1.2e-8 (2^-26.3) after dividing by the scale, so the max CKKS error over
    10^6 coordinates is below 1e-7, leaving room under 1e-6 for rounding and flooding.
    The headroom of 54 - 42 - 2 = 10 bits allows |sum| <= 1024 per coordinate.
    """
    return CKKSParams(poly_modulus_degree=2048, coeff_mod_bit_sizes=(54,), scale_bits=42)


def compat_params() -> CKKSParams:
    """The common setting N = 8192, [60, 40, 40], scale 2^40 (for comparison)."""
    return CKKSParams(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 40), scale_bits=40)


PRESETS = {"aggregation": aggregation_params, "compat": compat_params}


def preset_params(name: str) -> CKKSParams:
    """Return the preset called ``name`` (``aggregation`` or ``compat``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise InsecureParametersError(
            f"preset must be one of {sorted(PRESETS)}, got {name!r}"
        ) from None


@dataclass(frozen=True)
class RevealPolicy:
    """What the key holder releases: minimum clients, rounding grid and flooding noise.

    The key holder adds Gaussian noise of standard deviation ``2**-flood_std_bits`` (drawn
    from the OS CSPRNG) to each decrypted coordinate, then rounds to the grid
    ``2**-precision_bits``. See :mod:`secagg.ckks._keyholder` for the residual risk.
    """

    min_clients: int = 2
    precision_bits: int = 24
    flood_std_bits: int = 24

    def __post_init__(self) -> None:
        if not isinstance(self.min_clients, int) or self.min_clients < 1:
            raise InsecureParametersError(f"min_clients must be >= 1, got {self.min_clients}")
        if not isinstance(self.precision_bits, int) or not 1 <= self.precision_bits <= 40:
            raise InsecureParametersError(
                f"precision_bits must be in [1, 40], got {self.precision_bits}"
            )
        if not isinstance(self.flood_std_bits, int) or not 1 <= self.flood_std_bits <= 52:
            raise InsecureParametersError(
                f"flood_std_bits must be in [1, 52], got {self.flood_std_bits}"
            )

    @property
    def flood_std(self) -> float:
        return math.ldexp(1.0, -self.flood_std_bits)

    @property
    def grid(self) -> float:
        return math.ldexp(1.0, -self.precision_bits)


_MILLER_RABIN_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def _is_prime(candidate: int) -> bool:
    """Deterministic Miller-Rabin for candidates below 2^64."""
    if candidate < 2:
        return False
    for base in _MILLER_RABIN_BASES:
        if candidate % base == 0:
            return candidate == base
    odd, twos = candidate - 1, 0
    while odd % 2 == 0:
        odd, twos = odd // 2, twos + 1
    for base in _MILLER_RABIN_BASES:
        witness = pow(base, odd, candidate)
        if witness in (1, candidate - 1):
            continue
        for _ in range(twos - 1):
            witness = pow(witness, 2, candidate)
            if witness == candidate - 1:
                break
        else:
            return False
    return True


@functools.lru_cache(maxsize=16)
def wire_prime(params: CKKSParams) -> int:
    """The prime ciphertexts carry on the wire, computed without SEAL.

    SEAL's ``CoeffModulus.Create`` gives each bit size the largest primes below
    ``2**bits`` that are 1 mod 2N, in decreasing order; ``coeff_mod_bit_sizes[0]`` is the
    first prime of its size, hence the largest one. (A test checks this against SEAL.)
    """
    step = 2 * params.poly_modulus_degree
    candidate = 2**params.wire_prime_bits - step + 1
    while candidate > 2 ** (params.wire_prime_bits - 1):
        if _is_prime(candidate):
            return candidate
        candidate -= step
    raise InsecureParametersError(  # pragma: no cover - SEAL would refuse first
        f"no {params.wire_prime_bits}-bit prime is 1 mod {step}"
    )
