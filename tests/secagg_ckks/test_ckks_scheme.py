"""The ``ckks`` scheme through the RoundSession interface and its Hydra schema."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from secagg._errors import EmptyAggregateError, InsecureParametersError, InvalidUpdateError
from secagg._hydra import SCHEMES, build_scheme
from secagg.ckks import (
    CKKSParams,
    CKKSSchema,
    CKKSScheme,
    RevealPolicy,
    aggregation_params,
    blob_digest,
    combine_blobs,
    compat_params,
    parse_header,
)


@pytest.fixture(scope="module")
def scheme() -> CKKSScheme:
    return CKKSScheme(params=aggregation_params(), policy=RevealPolicy(min_clients=2))


def test_round_through_the_interface(scheme: CKKSScheme) -> None:
    rng = np.random.default_rng(11)
    clients = [3, 1, 2]
    weights = {1: 0.5, 2: 0.3, 3: 0.2}
    deltas = {c: rng.normal(0.0, 0.1, size=2500) for c in clients}
    session = scheme.start_round(round_id=1, client_ids=clients, dim=2500)
    session.setup()
    blobs = {c: session.protect(c, weights[c] * deltas[c]) for c in clients}
    aggregate = session.combine(blobs)
    total = session.reveal(aggregate, survivors=clients)
    expected = sum(weights[c] * deltas[c] for c in clients)
    assert np.max(np.abs(total - expected)) < 1e-6
    stats = session.stats
    assert stats.bytes_up["protect"] == sum(len(b) for b in blobs.values())
    assert stats.bytes_down["setup"] == len(scheme.public_context) * 4  # 3 clients + aggregator
    assert stats.bytes_up["reveal"] == len(aggregate)
    assert all(stats.seconds[phase] > 0 for phase in ("protect", "combine", "reveal"))
    # the auditor's recombination in the session's (sorted client id) order matches
    ordered = [blobs[c] for c in sorted(blobs)]
    assert blob_digest(combine_blobs(scheme.public_context, ordered)) == blob_digest(aggregate)
    # the next round does not resend the context to known parties
    again = scheme.start_round(round_id=2, client_ids=clients, dim=2500)
    again.setup()
    assert again.stats.bytes_down["setup"] == 0


def test_round_carries_on_without_rejected_blobs(scheme: CKKSScheme) -> None:
    rng = np.random.default_rng(12)
    session = scheme.start_round(round_id=3, client_ids=[1, 2, 3, 4], dim=100)
    updates = {c: rng.uniform(-0.2, 0.2, size=100) for c in (1, 2, 3)}
    blobs = {c: session.protect(c, u) for c, u in updates.items()}
    blobs[4] = blobs[1][:-10]  # truncated
    blobs[9] = blobs[2]  # not selected
    aggregate = session.combine(blobs)
    assert sorted(session.rejected) == [4, 9]  # type: ignore[attr-defined]
    assert "BlobFormatError" in session.rejected[4]  # type: ignore[attr-defined]
    assert session.combined == (1, 2, 3)  # type: ignore[attr-defined]
    assert len(parse_header(aggregate)[0].inputs) == 3
    total = session.reveal(aggregate, survivors=[1, 2, 3])
    assert np.max(np.abs(total - sum(updates.values()))) < 1e-6


def test_session_bad_input(scheme: CKKSScheme) -> None:
    session = scheme.start_round(round_id=4, client_ids=[1, 2], dim=10)
    with pytest.raises(InvalidUpdateError):
        session.protect(1, np.ones(11))
    with pytest.raises(InvalidUpdateError):
        session.protect(1, np.full(10, np.nan))
    with pytest.raises(InvalidUpdateError, match="overflow"):
        session.protect(1, np.full(10, aggregation_params().max_abs_sum))  # sum could wrap
    with pytest.raises(EmptyAggregateError):
        session.combine({})
    with pytest.raises(EmptyAggregateError):
        session.combine({1: b"garbage"})
    assert "BlobFormatError" in session.rejected[1]  # type: ignore[attr-defined]


def test_registered_and_built_from_schema() -> None:
    assert SCHEMES["ckks"][0] is CKKSSchema
    schema = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(CKKSSchema), OmegaConf.from_dotlist(["preset=compat"]))
    )
    built = build_scheme(schema)
    assert isinstance(built, CKKSScheme)
    assert built.params == compat_params()
    custom = CKKSSchema(coeff_mod_bit_sizes=[50], scale_bits=38, min_clients=3)
    built = build_scheme(custom)
    assert isinstance(built, CKKSScheme)
    assert built.params == CKKSParams(
        poly_modulus_degree=2048, coeff_mod_bit_sizes=(50,), scale_bits=38
    )
    assert built.policy.min_clients == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"preset": "fastest"}, "preset"),
        ({"coeff_mod_bit_sizes": [60]}, "bound of 54 bits"),
        ({"poly_modulus_degree": 3000}, "poly_modulus_degree"),
        ({"min_clients": 0}, "min_clients"),
        ({"precision_bits": 0}, "precision_bits"),
        ({"flood_std_bits": 0}, "flood_std_bits"),
    ],
)
def test_schema_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InsecureParametersError, match=field):
        build_scheme(CKKSSchema(**overrides))  # type: ignore[arg-type]


def test_hydra_compose_selects_ckks(tmp_path: object) -> None:
    store = ConfigStore.instance()
    store.store(group="secagg", name="ckks", node=CKKSSchema)
    store.store(name="ckks_test_root", node={"defaults": [{"secagg": "ckks"}, "_self_"]})
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(
            config_name="ckks_test_root",
            overrides=["secagg.min_clients=3", "secagg.precision_bits=20"],
        )
    schema = OmegaConf.to_object(cfg.secagg)
    assert isinstance(schema, CKKSSchema)
    assert (schema.min_clients, schema.precision_bits, schema.preset) == (3, 20, "aggregation")


def test_setup_sends_the_context_once_to_each_new_surviving_client() -> None:
    # its own scheme: what was sent depends on every earlier round of the scheme
    scheme = CKKSScheme(params=aggregation_params(), policy=RevealPolicy(min_clients=2))
    session = scheme.start_round(round_id=5, client_ids=[1, 7, 8], dim=10)
    session.setup(dropouts=[8])
    # clients 1 and 7 and the aggregator (8 dropped out: it gets it when it takes part)
    assert session.stats.bytes_down["setup"] == 3 * len(scheme.public_context)
    later = scheme.start_round(round_id=6, client_ids=[7, 8], dim=10)
    later.setup()
    assert later.stats.bytes_down["setup"] == len(scheme.public_context)  # client 8 now
