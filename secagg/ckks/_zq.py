"""Arithmetic in Z_q for one prime q < 2^55, vectorized and portable, and the samplers.

numpy has no 128-bit product, so :func:`mulmod` estimates the quotient floor(x*y/q) in
float64 (off by at most ~10, since each operand and the product carry a relative error of
2^-53 and the quotient is < 2^55), computes x*y - quotient*q exactly modulo 2^64 with
wrapping uint64 arithmetic (a small signed multiple of q away from the result), removes
that multiple with a second float64 quotient of the now small residue, and fixes the last
+-q with comparisons (no integer division, which is slow in numpy). Nothing depends on
x86 long doubles. A test checks it against Python integers.

Randomness: every secret (key shares, Shamir coefficients, smudging noise) comes from the
operating system's CSPRNG through pycryptodome's ``get_random_bytes``; the public common
random polynomial comes from SHAKE256 of a public seed, so anyone can re-derive it.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from Crypto.Hash import SHAKE256
from Crypto.Random import get_random_bytes

#: Standard deviation of key-share errors: a centered binomial of 2 x 21 bits has variance
#: 10.5, i.e. std 3.24, the HE standard's (and SEAL's) 3.2.
_CBD_BITS = 21
#: Smudging samples are clipped at this many standard deviations (Box-Muller over 53-bit
#: uniforms never exceeds 8.6), so |noise| has a hard bound the consistency check can use.
SMUDGING_TAIL_STDS = 9.0


def mulmod(x: np.ndarray, y: np.ndarray | int, q: int) -> np.ndarray:
    """(x * y) mod q elementwise for uint64 ``x``, ``y`` in [0, q) (``y`` may be a scalar)."""
    x = np.asarray(x, dtype=np.uint64)
    y_array = np.asarray(y, dtype=np.uint64)
    modulus = float(q)
    estimate = (x.astype(np.float64) * (y_array.astype(np.float64) / modulus)).astype(np.uint64)
    with np.errstate(over="ignore"):
        residue = (x * y_array - estimate * np.uint64(q)).view(np.int64)  # |residue| < 16 q
    residue -= np.floor(residue / modulus).astype(np.int64) * np.int64(q)  # in [-q, 2q)
    residue += np.where(residue < 0, np.int64(q), np.int64(0))
    residue -= np.where(residue >= q, np.int64(q), np.int64(0))
    return residue.view(np.uint64)


def addmod(x: np.ndarray, y: np.ndarray, q: int) -> np.ndarray:
    total = x + y  # < 2q < 2^56: no overflow
    return np.minimum(total, total - np.uint64(q))  # where total < q, total - q wraps above


def submod(x: np.ndarray, y: np.ndarray, q: int) -> np.ndarray:
    return addmod(x, np.uint64(q) - y, q)


def from_signed(values: np.ndarray, q: int) -> np.ndarray:
    """Signed integers (int64, |value| < q) to their residues in [0, q)."""
    return np.mod(values.astype(np.int64), np.int64(q)).astype(np.uint64)


def centered(values: np.ndarray, q: int) -> np.ndarray:
    """Residues in [0, q) to their representatives in (-q/2, q/2], as int64."""
    signed = values.astype(np.int64)
    return np.where(signed > q // 2, signed - np.int64(q), signed)


def sum_mod(rows: list[np.ndarray], q: int) -> np.ndarray:
    total = rows[0].copy()
    for row in rows[1:]:
        total = addmod(total, row, q)
    return total


def _uniform_mod(random_bytes: bytes, q: int) -> np.ndarray:
    words = np.frombuffer(random_bytes, dtype="<u8") & np.uint64((1 << q.bit_length()) - 1)
    return words[words < np.uint64(q)]


def uniform_from_seed(seed: bytes, count: int, q: int) -> np.ndarray:
    """``count`` uniform residues mod q expanded from ``seed`` by SHAKE256 (rejection)."""
    shake = SHAKE256.new(seed)
    out = np.empty(0, dtype=np.uint64)
    while out.shape[0] < count:
        out = np.concatenate([out, _uniform_mod(shake.read(8 * (count + 16)), q)])
    return out[:count]


def uniform_secret(count: int, q: int) -> np.ndarray:
    """``count`` uniform residues mod q from the OS CSPRNG (rejection sampling)."""
    out = np.empty(0, dtype=np.uint64)
    while out.shape[0] < count:
        out = np.concatenate([out, _uniform_mod(get_random_bytes(8 * (count + 16)), q)])
    return out[:count]


def ternary(count: int) -> np.ndarray:
    """``count`` uniform values in {-1, 0, 1} (int64) from the OS CSPRNG."""
    out = np.empty(0, dtype=np.int64)
    while out.shape[0] < count:
        raw = np.frombuffer(get_random_bytes(count + 16), dtype=np.uint8)
        raw = raw[raw < 255]  # 255 = 3 * 85: unbiased modulo 3
        out = np.concatenate([out, (raw % 3).astype(np.int64) - 1])
    return out[:count]


def centered_binomial(count: int) -> np.ndarray:
    """``count`` samples of sum(21 bits) - sum(21 bits) (std 3.24), int64, OS CSPRNG."""
    raw = np.frombuffer(get_random_bytes(count * 6), dtype=np.uint8)
    bits = np.unpackbits(raw).reshape(count, 48).astype(np.int64)
    return bits[:, :_CBD_BITS].sum(axis=1) - bits[:, _CBD_BITS : 2 * _CBD_BITS].sum(axis=1)


def _uniform_open(count: int) -> np.ndarray:
    """``count`` uniforms in (0, 1] with 53 random bits each, from the OS CSPRNG."""
    words = np.frombuffer(get_random_bytes(8 * count), dtype="<u8") >> np.uint64(11)
    return (words.astype(np.float64) + 1.0) * 2.0**-53


def smudging_noise(shape: tuple[int, ...], *, std: float) -> np.ndarray:
    """Rounded Gaussian integers of std ``std``, clipped at ``SMUDGING_TAIL_STDS`` stds."""
    count = int(np.prod(shape))
    half = (count + 1) // 2  # Box-Muller: both the cosine and the sine output are used
    radius = std * np.sqrt(-2.0 * np.log(_uniform_open(half)))
    angle = 2.0 * np.pi * _uniform_open(half)
    samples = np.rint(np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count])
    bound = np.floor(SMUDGING_TAIL_STDS * std)
    return np.clip(samples, -bound, bound).astype(np.int64).reshape(shape)


def shamir_shares(
    secret: np.ndarray, *, threshold: int, points: tuple[int, ...], q: int
) -> dict[int, np.ndarray]:
    """Shamir-share each coefficient of ``secret`` (residues mod q) at the given points.

    A fresh polynomial of degree ``threshold - 1`` per coefficient, constant term the
    secret, other coefficients uniform mod q (CSPRNG). Points are small positive ints,
    so Horner's rule stays within uint64 (acc * x < 2^55 * 2^5).
    """
    coefficients = [uniform_secret(secret.shape[0], q) for _ in range(threshold - 1)]
    shares: dict[int, np.ndarray] = {}
    for point in points:
        acc = np.zeros_like(secret)
        for coefficient in reversed(coefficients):
            acc = (acc * np.uint64(point) + coefficient) % np.uint64(q)
        shares[point] = (acc * np.uint64(point) + secret) % np.uint64(q)
    return shares


def lagrange(points: tuple[int, ...], at: int) -> dict[int, Fraction]:
    """Exact Lagrange basis values L_j(at) for interpolation through ``points``."""
    weights: dict[int, Fraction] = {}
    for point in points:
        weight = Fraction(1)
        for other in points:
            if other != point:
                weight *= Fraction(at - other, point - other)
        weights[point] = weight
    return weights


def fraction_mod(value: Fraction, q: int) -> int:
    return value.numerator % q * pow(value.denominator % q, -1, q) % q


class NegacyclicNTT:
    """The forward NTT of Z_q[X]/(X^N + 1) in numpy, in SEAL's output order.

    Secrets (key shares, smudging noise) must never pass through SEAL's file-based
    load/save, so their transforms run here. ``points[k]`` is the root of X^N + 1 at
    which SEAL's NTT evaluates output slot k (obtained once from SEAL by transforming
    the public polynomial X); the transform is a twist by powers of psi = points[0]
    followed by a radix-2 cyclic NTT of root psi^2, then a reordering into SEAL's slots.
    A test checks it against SEAL on random polynomials.
    """

    def __init__(self, *, q: int, points: np.ndarray) -> None:
        degree = points.shape[0]
        if degree & (degree - 1) or degree < 2:
            raise ValueError("N must be a power of two")
        self.q = q
        self.degree = degree
        psi = int(points[0])
        powers = [1] * (2 * degree)
        for index in range(1, 2 * degree):
            powers[index] = powers[index - 1] * psi % q
        if powers[degree] != q - 1:
            raise ValueError("points[0] is not a primitive 2N-th root of unity mod q")
        exponent_of = {value: index for index, value in enumerate(powers)}
        # SEAL slot k holds x(psi^(2 j + 1)) for the natural-order index j = order[k]
        self._order = np.array([(exponent_of[int(p)] - 1) // 2 for p in points], dtype=np.int64)
        self._twist = np.array(powers[:degree], dtype=np.uint64)
        omega = [powers[2 * index % (2 * degree)] for index in range(degree)]  # psi^(2i)
        bits = degree.bit_length() - 1
        self._bit_reverse = np.array(
            [int(f"{index:0{bits}b}"[::-1], 2) for index in range(degree)], dtype=np.int64
        )
        self._stage_roots = []
        size = 2
        while size <= degree:
            step = degree // size
            self._stage_roots.append(
                np.array([omega[j * step] for j in range(size // 2)], dtype=np.uint64)
            )
            size *= 2

    def forward(self, polys: np.ndarray) -> np.ndarray:
        """NTT of each row of ``polys`` (coefficients in [0, q)), in SEAL's slot order."""
        q = self.q
        batch = polys.shape[0]
        values = mulmod(polys, self._twist[None, :], q)[:, self._bit_reverse]
        size = 2
        for roots in self._stage_roots:
            half = size // 2
            blocks = values.reshape(batch, self.degree // size, size)
            even = blocks[:, :, :half]
            odd = mulmod(blocks[:, :, half:], roots[None, None, :], q)
            values = np.concatenate([addmod(even, odd, q), submod(even, odd, q)], axis=2)
            size *= 2
        return np.ascontiguousarray(values.reshape(batch, self.degree)[:, self._order])
