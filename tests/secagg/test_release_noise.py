"""Central DP noise inside the release: the releasing party (the key holder) noises the sum
before anything is stored, attested or returned, and masking, which has no single
releasing party, refuses central noise."""

from __future__ import annotations

import numpy as np
import pytest

from secagg import ProtocolAbortError
from secagg._errors import InvalidUpdateError

from .conftest import DIM

NOISE_STD = 0.5


def _stored_vectors(consortium) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Every artifact in the store that has the size of a released sum, decoded."""
    root = consortium.store.root
    return [
        np.frombuffer(path.read_bytes(), dtype="<f8")
        for path in root.iterdir()
        if path.is_file() and path.stat().st_size == DIM * 8
    ]


@pytest.mark.parametrize("scheme", ["plain", "ckks"])
def test_the_release_is_noised_before_it_is_stored_attested_or_returned(
    make_federation, scheme: str
) -> None:
    fed = make_federation(scheme)
    outcome, updates = fed.round(1, release_noise_std=NOISE_STD)
    exact = np.sum(list(updates.values()), axis=0)
    assert outcome.total is not None and sorted(outcome.included) == sorted(updates)
    noise = outcome.total - exact
    assert 0.5 * NOISE_STD < float(np.std(noise)) < 2.0 * NOISE_STD
    stored = _stored_vectors(fed.consortium)
    assert any(np.array_equal(vector, outcome.total) for vector in stored)
    if scheme == "ckks":
        # The exact sum never reaches the store (CKKS decrypts it to within ~1e-6). (Under
        # plain the published aggregate is the sum itself: plain protects nothing.)
        assert not any(np.allclose(vector, exact, atol=1e-3) for vector in stored)
        info = fed.consortium.ledger.round_info(1)
        attested = fed.consortium.store.get(info.reveal_digest)
        assert np.array_equal(np.frombuffer(attested, dtype="<f8"), outcome.total)


def test_without_release_noise_the_release_is_the_exact_sum(make_federation) -> None:
    fed = make_federation("plain")
    outcome, updates = fed.round(1)
    assert outcome.total is not None
    assert np.allclose(outcome.total, np.sum(list(updates.values()), axis=0), atol=1e-12)


def test_masking_refuses_central_noise_before_opening_the_round(make_federation) -> None:
    fed = make_federation("masking")
    with pytest.raises(ProtocolAbortError, match="single releasing party"):
        fed.round(1, release_noise_std=NOISE_STD)
    assert fed.consortium.ledger.commitments(1) == []


@pytest.mark.parametrize("std", [0.0, -1.0, float("inf"), float("nan")])
def test_an_invalid_release_noise_is_a_named_error(make_federation, std: float) -> None:
    fed = make_federation("plain")
    with pytest.raises(InvalidUpdateError, match="release noise std"):
        fed.round(1, release_noise_std=std)
    assert fed.consortium.ledger.commitments(1) == []
