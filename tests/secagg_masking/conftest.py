"""Shared helpers of the masking tests: run one simulated round with chosen dropouts."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pytest

from secagg.masking import MaskingParams, MaskingScheme, MaskingSession


@dataclass
class RoundOutcome:
    session: MaskingSession
    updates: dict[int, np.ndarray]
    result: np.ndarray

    def expected(self) -> np.ndarray:
        return np.sum([self.updates[c] for c in self.session.included], axis=0)

    def error(self) -> float:
        return float(np.max(np.abs(self.result - self.expected())))


def run_round(
    params: MaskingParams,
    *,
    n: int,
    dim: int = 16,
    advertise_drop: Collection[int] = (),
    share_drop: Collection[int] = (),
    input_drop: Collection[int] = (),
    unmask_drop: Collection[int] = (),
    seed: int = 0,
) -> RoundOutcome:
    rng = np.random.default_rng(seed)  # test data only; never used for masks
    ids = list(range(100, 100 + n))
    updates = {c: rng.uniform(-1, 1, dim) / n for c in ids}
    session = MaskingScheme(params).start_round(round_id=7, client_ids=ids, dim=dim)
    session.setup(dropouts=share_drop, advertise_dropouts=advertise_drop)
    gone = set(advertise_drop) | set(share_drop) | set(input_drop)
    blobs = {c: session.protect(c, updates[c]) for c in ids if c not in gone}
    aggregate = session.combine(blobs)
    survivors = [c for c in ids if c not in gone | set(unmask_drop)]
    result = session.reveal(aggregate, survivors=survivors)
    return RoundOutcome(session, updates, result)


@pytest.fixture
def tolerance() -> float:
    return 1e-6
