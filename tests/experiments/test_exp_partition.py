"""Partitioners: every sample lands on exactly one client, alpha controls the skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments._errors import PartitionError
from experiments._partition import (
    dirichlet_partition,
    iid_partition,
    label_skew,
    partition,
    quantity_partition,
)


def _labels(n: int, n_classes: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_classes, size=n)


def _assert_exact_cover(parts: list[np.ndarray], n: int, n_clients: int, min_size: int) -> None:
    assert len(parts) == n_clients
    assert sum(len(p) for p in parts) == n
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    assert min(len(p) for p in parts) >= min_size


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(20, 400),
    n_clients=st.integers(1, 8),
    scheme=st.sampled_from(["iid", "dirichlet", "quantity"]),
    alpha=st.floats(0.3, 50.0),
    seed=st.integers(0, 2**16),
)
def test_sizes_add_up_and_cover_every_sample_once(
    n: int, n_clients: int, scheme: str, alpha: float, seed: int
) -> None:
    labels = _labels(n, seed=seed)
    rng = np.random.default_rng(seed)
    parts = partition(scheme, labels, n_clients, rng, alpha=alpha, min_size=2)
    _assert_exact_cover(parts, n, n_clients, 2)


def test_iid_shares_are_near_equal() -> None:
    parts = iid_partition(_labels(103), 5, np.random.default_rng(1))
    assert sorted(len(p) for p in parts) == [20, 20, 21, 21, 21]


def test_small_alpha_gives_more_label_skew_than_large_alpha() -> None:
    labels = _labels(2000, n_classes=4)
    skews = {}
    for alpha in (0.1, 1.0, 100.0):
        skews[alpha] = np.mean(
            [
                label_skew(
                    labels, dirichlet_partition(labels, 6, np.random.default_rng(s), alpha=alpha)
                )
                for s in range(5)
            ]
        )
    assert skews[0.1] > skews[1.0] > skews[100.0]
    assert skews[100.0] < 0.1 < 0.4 < skews[0.1]


def test_small_alpha_gives_more_quantity_skew_than_large_alpha() -> None:
    labels = _labels(3000)

    def spread(alpha: float) -> float:
        sizes = []
        for seed in range(5):
            parts = quantity_partition(labels, 6, np.random.default_rng(seed), alpha=alpha)
            sizes.append(np.std([len(p) for p in parts]))
        return float(np.mean(sizes))

    assert spread(0.2) > 3 * spread(100.0)


def test_partition_is_reproducible_from_the_generator_seed() -> None:
    labels = _labels(300)
    first = dirichlet_partition(labels, 4, np.random.default_rng(7), alpha=0.5)
    second = dirichlet_partition(labels, 4, np.random.default_rng(7), alpha=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_too_few_samples_is_a_named_error() -> None:
    with pytest.raises(PartitionError, match=r"federation\.clients"):
        iid_partition(_labels(5), 4, np.random.default_rng(0), min_size=2)


def test_impossible_min_size_under_extreme_skew_names_alpha() -> None:
    labels = np.zeros(40, dtype=int)
    with pytest.raises(PartitionError, match=r"federation\.alpha"):
        dirichlet_partition(labels, 8, np.random.default_rng(0), alpha=0.001, min_size=4)


def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(PartitionError, match=r"federation\.partition"):
        partition("shards", _labels(50), 2, np.random.default_rng(0), alpha=1.0)
