"""Shamir t-of-k secret sharing of 256-bit secrets over GF(2^521 - 1).

Evaluation points are ``x = client_id + 1`` (never 0). Coefficients come from the OS
CSPRNG. Any ``t`` shares determine the secret; ``t - 1`` shares are independent of it.
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence

from secagg.masking._constants import FIELD_PRIME, SECRET_BYTES, SHARE_BYTES
from secagg.masking._errors import ShareReconstructionError


def split(secret: bytes, *, threshold: int, points: Iterable[int]) -> dict[int, int]:
    """Share ``secret`` so that any ``threshold`` of the returned ``{x: y}`` recover it."""
    (shares,) = split_many([secret], threshold=threshold, points=points)
    return shares


def split_many(
    secret_values: Sequence[bytes], *, threshold: int, points: Iterable[int]
) -> list[dict[int, int]]:
    """Share each secret independently (fresh coefficients) at the same ``points``.

    The powers ``x^j`` are computed once for all secrets, and each share is one sum of
    products reduced once modulo ``p``.
    """
    xs = list(points)
    for secret in secret_values:
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < FIELD_PRIME for x in xs):
        raise ValueError("share points must be distinct and in [1, p)")
    powers = {x: _powers(x, threshold) for x in xs}
    out = []
    for secret in secret_values:
        coefficients = [int.from_bytes(secret, "big")]
        coefficients += [secrets.randbelow(FIELD_PRIME) for _ in range(threshold - 1)]
        out.append({x: sum(map(operator.mul, coefficients, powers[x])) % FIELD_PRIME for x in xs})
    return out


def _powers(x: int, count: int) -> list[int]:
    """``[1, x, ..., x^(count-1)]`` modulo ``p``."""
    powers = [1]
    for _ in range(count - 1):
        powers.append(powers[-1] * x % FIELD_PRIME)
    return powers


def batch_inverse(values: Sequence[int]) -> list[int]:
    """Inverses modulo ``p`` of nonzero ``values`` with one exponentiation (Montgomery).

    A value that is 0 modulo ``p`` raises ``ValueError`` (as ``pow(0, -1, p)`` does).
    """
    prefix = [1]
    for value in values:
        prefix.append(prefix[-1] * value % FIELD_PRIME)
    inverse = pow(prefix[-1], -1, FIELD_PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % FIELD_PRIME
        inverse = inverse * values[i] % FIELD_PRIME
    return out


def interpolate_at_zero(shares: Mapping[int, int]) -> int:
    """Lagrange interpolation at 0 of the polynomial through ``shares`` (all of them)."""
    xs = list(shares)
    numerators, denominators = [], []
    for i, x_i in enumerate(xs):
        numerator, denominator = 1, 1
        for j, x_j in enumerate(xs):
            if i != j:
                numerator = numerator * x_j % FIELD_PRIME
                denominator = denominator * (x_j - x_i) % FIELD_PRIME
        numerators.append(numerator)
        denominators.append(denominator)
    inverses = batch_inverse(denominators)
    result = 0
    for x_i, numerator, inverse in zip(xs, numerators, inverses, strict=True):
        result += shares[x_i] * numerator % FIELD_PRIME * inverse
    return result % FIELD_PRIME


def combine(shares: Mapping[int, int], *, threshold: int) -> bytes:
    """Recover the secret from the first ``threshold`` shares (sorted by x).

    Raises :class:`ShareReconstructionError` with fewer than ``threshold`` shares, or when
    the result is not a 256-bit value (a sign of a bad share).
    """
    if len(shares) < threshold:
        raise ShareReconstructionError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    chosen = {x: shares[x] for x in sorted(shares)[:threshold]}
    value = interpolate_at_zero(chosen)
    if value >= 2 ** (8 * SECRET_BYTES):
        raise ShareReconstructionError("shares are inconsistent (result is not a 256-bit secret)")
    return value.to_bytes(SECRET_BYTES, "big")


def encode_share(y: int) -> bytes:
    """Fixed-width big-endian bytes of one share value."""
    return y.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes) -> int:
    """Inverse of :func:`encode_share`; rejects values outside the field."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "big")
    if y >= FIELD_PRIME:
        raise ValueError("share value outside GF(p)")
    return y


def interpolate_at(shares: Mapping[int, int], x: int) -> int:
    """Evaluate at ``x`` the polynomial through ``shares`` (to check further shares)."""
    xs = list(shares)
    result = 0
    for i, x_i in enumerate(xs):
        numerator, denominator = 1, 1
        for j, x_j in enumerate(xs):
            if i != j:
                numerator = numerator * (x - x_j) % FIELD_PRIME
                denominator = denominator * (x_i - x_j) % FIELD_PRIME
        result += shares[x_i] * numerator * pow(denominator, -1, FIELD_PRIME)
    return result % FIELD_PRIME


def evaluator(shares: Mapping[int, int]) -> Callable[[int], int]:
    """Evaluate the polynomial through ``shares`` at further points, O(t) per point.

    Barycentric Lagrange form: weights ``w_i = 1 / prod_{j != i} (x_i - x_j)`` once, then
    ``P(x) = l(x) * sum_i w_i y_i / (x - x_i)`` with ``l(x) = prod_i (x - x_i)``, the ``t``
    inverses of one point batched into one (Montgomery's trick). Equal to
    :func:`interpolate_at` for every ``x`` outside the window.
    """
    evaluate_many = batch_evaluator(shares)
    return lambda x: evaluate_many([x])[0]


def batch_evaluator(shares: Mapping[int, int]) -> Callable[[Sequence[int]], list[int]]:
    """Like :func:`evaluator`, for several points at once: one exponentiation in all."""
    xs = list(shares)
    denominators = []
    for i, x_i in enumerate(xs):
        denominator = 1
        for j, x_j in enumerate(xs):
            if i != j:
                denominator = denominator * (x_i - x_j) % FIELD_PRIME
        denominators.append(denominator)
    weighted = [
        shares[x_i] * inverse % FIELD_PRIME
        for x_i, inverse in zip(xs, batch_inverse(denominators), strict=True)
    ]

    def evaluate_many(points: Sequence[int]) -> list[int]:
        outside = [x for x in points if x not in shares]
        differences = [(x - x_i) % FIELD_PRIME for x in outside for x_i in xs]
        inverses = batch_inverse(differences)  # 1 / (x - x_i), row by row
        values = dict(shares)
        width = len(xs)
        for row, x in enumerate(outside):
            row_inverses = inverses[row * width : (row + 1) * width]
            total = sum(map(operator.mul, weighted, row_inverses)) % FIELD_PRIME
            product = 1  # l(x)
            for difference in differences[row * width : (row + 1) * width]:
                product = product * difference % FIELD_PRIME
            values[x] = total * product % FIELD_PRIME
        return [values[x] for x in points]

    return evaluate_many
