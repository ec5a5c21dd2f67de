"""``secagg=masking`` in the registry: schema overrides build a validated scheme."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from secagg._hydra import SCHEMES, build_scheme
from secagg.masking import MaskingParameterError, MaskingScheme


def _build(*overrides: str) -> MaskingScheme:
    schema_type, _ = SCHEMES["masking"]
    config = OmegaConf.merge(
        OmegaConf.structured(schema_type), OmegaConf.from_dotlist(list(overrides))
    )
    scheme = build_scheme(OmegaConf.to_object(config))
    assert isinstance(scheme, MaskingScheme)
    return scheme


def test_overrides_reach_the_params() -> None:
    scheme = _build("threshold=0.75", "graph=complete", "max_dropout_fraction=0.3", "bits=24")
    assert scheme.params.threshold == 0.75
    assert scheme.params.graph == "complete"
    assert scheme.params.bits == 24
    assert _build("threshold=7").params.threshold == 7
    assert _build("neighbours=null").params.neighbours is None


def test_bad_override_names_the_field() -> None:
    with pytest.raises(MaskingParameterError, match="bits"):
        _build("bits=64")
    with pytest.raises(MaskingParameterError, match="graph"):
        _build("graph=ring")


def test_registered_scheme_runs_a_round() -> None:
    session = _build().start_round(round_id=3, client_ids=[4, 8, 15, 16, 23, 42], dim=5)
    session.setup()
    blobs = {c: session.protect(c, np.full(5, c / 1000)) for c in session.client_ids}
    total = session.reveal(session.combine(blobs), survivors=session.client_ids)
    assert np.allclose(total, 0.108, atol=1e-6)
