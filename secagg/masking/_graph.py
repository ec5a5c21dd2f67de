"""Neighbour graphs (SecAgg+, Bell et al. 2020) and the choice of ``k`` and ``t``.

**Graph.** Clients are placed on a cycle in a pseudorandom order and each is joined to the
``k/2`` nearest positions on either side: a Harary graph ``H(k, n)`` under a random
permutation, which is k-regular and k-connected. The order comes from AES-CTR keyed with a
public round seed (a keccak digest of the round parameters), so every client recomputes the
same graph and the server cannot choose it. ``graph="complete"`` joins every pair
(Bonawitz et al. 2017).

**Choice of k and t** (:func:`derive_degree`). The threat model counts clients: at most
``C = floor(max_corrupt_fraction * n)`` collude with the server and at most
``D = floor(max_dropout_fraction * n)`` drop out. The permutation is drawn independently of
who is corrupt or drops, so the number of corrupt (dropped) neighbours of one client is
hypergeometric: ``k`` draws from the ``n - 1`` others, ``C`` (``D``) of them marked. We take
the smallest even ``k`` and then the smallest ``t > k/2`` with, union-bounded over the ``n``
clients,

* security: ``n * P[#corrupt neighbours >= t] <= 2^-security_bits`` (the server plus its
  colluders never hold ``t`` shares of an honest client's secret);
* correctness: ``n * P[#dropped neighbours > k - t] <= 2^-correctness_bits`` (every
  client keeps ``t`` live neighbours to answer for it);
* connectivity: ``n^2 * C(C + D, k) / C(n, k) <= 2^-security_bits``. Removing a vertex set
  disconnects ``H(k, n)`` only if it covers two disjoint runs of ``k/2`` consecutive
  positions; this bounds the chance that the honest survivors split into groups whose
  partial sums the server could learn.

``t > k/2`` also means two disjoint sets of responders can never both reach ``t`` within
one neighbourhood. If no ``k <= n - 2`` qualifies, the complete graph is used with
``t = max(floor((n-1)/2) + 1, C + 1)``, which must leave ``n - 1 - D >= t``.
For n = 100 and the defaults (0.1, 0.1, 40 bits, 20 bits) this gives k = 22, t = 12; for
n = 10_000, k = 54, t = 30: k grows like O(log n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from secagg.masking._prg import expand_mask


def hypergeometric_tail(*, population: int, marked: int, draws: int, at_least: int) -> float:
    """P[X >= at_least] for X ~ Hypergeometric(population, marked, draws)."""
    if at_least <= 0:
        return 1.0
    top = min(marked, draws)
    if at_least > top:
        return 0.0
    total = math.comb(population, draws)
    hits = sum(
        math.comb(marked, i) * math.comb(population - marked, draws - i)
        for i in range(at_least, top + 1)
    )
    return hits / total


@dataclass(frozen=True)
class GraphChoice:
    """Degree ``k`` (neighbours per client) and threshold ``t`` of one round."""

    degree: int
    threshold: int
    complete: bool


def security_ok(*, n: int, degree: int, threshold: int, corrupt: int, security_bits: int) -> bool:
    """The security condition of the module docstring."""
    risk = hypergeometric_tail(population=n - 1, marked=corrupt, draws=degree, at_least=threshold)
    return n * risk <= 2.0**-security_bits


def correctness_ok(
    *, n: int, degree: int, threshold: int, dropped: int, correctness_bits: int
) -> bool:
    """The correctness condition of the module docstring."""
    risk = hypergeometric_tail(
        population=n - 1, marked=dropped, draws=degree, at_least=degree - threshold + 1
    )
    return n * risk <= 2.0**-correctness_bits


def connectivity_ok(*, n: int, degree: int, removed: int, security_bits: int) -> bool:
    """The connectivity condition of the module docstring."""
    removed = min(removed, n)
    return n * n * math.comb(removed, degree) / math.comb(n, degree) <= 2.0**-security_bits


def smallest_threshold(*, n: int, degree: int, corrupt: int, security_bits: int) -> int | None:
    """Smallest ``t > degree/2`` meeting the security condition (``None`` if none)."""
    for threshold in range(degree // 2 + 1, degree + 1):
        if security_ok(
            n=n, degree=degree, threshold=threshold, corrupt=corrupt, security_bits=security_bits
        ):
            return threshold
    return None


def derive_degree(
    *, n: int, corrupt: int, dropped: int, security_bits: int, correctness_bits: int
) -> GraphChoice | None:
    """Smallest even sparse degree meeting all three conditions, or ``None``."""
    for degree in range(2, n - 1, 2):
        threshold = smallest_threshold(
            n=n, degree=degree, corrupt=corrupt, security_bits=security_bits
        )
        if threshold is None:
            continue
        if not correctness_ok(
            n=n,
            degree=degree,
            threshold=threshold,
            dropped=dropped,
            correctness_bits=correctness_bits,
        ):
            continue
        if not connectivity_ok(
            n=n, degree=degree, removed=corrupt + dropped, security_bits=security_bits
        ):
            continue
        return GraphChoice(degree=degree, threshold=threshold, complete=False)
    return None


def _permutation(seed: bytes, size: int) -> list[int]:
    """Fisher-Yates shuffle of range(size) driven by AES-CTR under ``seed``.

    Each swap index is a 64-bit keystream word reduced mod (i + 1); the bias is below
    size / 2^64, negligible for any federation.
    """
    words = expand_mask(seed, dim=2 * size).astype("<u8")
    draws = (words[0::2] | (words[1::2] << 32)).tolist()
    order = list(range(size))
    for i in range(size - 1, 0, -1):
        j = draws[i] % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def build_graph(
    client_ids: Sequence[int], *, degree: int, complete: bool, seed: bytes
) -> dict[int, frozenset[int]]:
    """Neighbours of each client: a permuted Harary graph of even ``degree``, or complete."""
    ids = sorted(client_ids)
    n = len(ids)
    if complete or degree >= n - 1:
        everyone = frozenset(ids)
        return {client: everyone - {client} for client in ids}
    if degree % 2 or degree < 2:
        raise ValueError(f"sparse degree must be even and >= 2, got {degree}")
    order = [ids[i] for i in _permutation(seed, n)]
    half = degree // 2
    neighbours: dict[int, set[int]] = {client: set() for client in ids}
    for position, client in enumerate(order):
        for step in range(1, half + 1):
            other = order[(position + step) % n]
            neighbours[client].add(other)
            neighbours[other].add(client)
    return {client: frozenset(peers) for client, peers in neighbours.items()}
