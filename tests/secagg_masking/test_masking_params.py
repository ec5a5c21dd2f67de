"""Parameters: validation naming the field, the degree/threshold derivation, the graph."""

from __future__ import annotations

import math

import pytest

from secagg._errors import DuplicateClientError, InsufficientClientsError
from secagg.masking import (
    MaskingParameterError,
    MaskingParams,
    MaskingSchema,
    WeakGraphError,
    WrapAroundError,
    plan_round,
)
from secagg.masking._graph import (
    build_graph,
    connectivity_ok,
    correctness_ok,
    derive_degree,
    hypergeometric_tail,
    security_ok,
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bits", 7),
        ("bits", 33),
        ("clip_range", 0.0),
        ("clip_range", float("inf")),
        ("scale", -1.0),
        ("graph", "ring"),
        ("neighbours", 5),
        ("neighbours", 0),
        ("threshold", 0.5),
        ("threshold", 2.5),
        ("threshold", "half"),
        ("max_corrupt_fraction", 0.5),
        ("max_dropout_fraction", 0.95),
        ("security_bits", 8),
        ("correctness_bits", 0),
    ],
)
def test_invalid_field_is_named(field: str, value: object) -> None:
    with pytest.raises(MaskingParameterError, match=field):
        MaskingParams(**{field: value})  # type: ignore[arg-type]


def test_params_are_frozen_and_keyword_only() -> None:
    params = MaskingParams()
    with pytest.raises(AttributeError):
        params.bits = 16  # type: ignore[misc]
    with pytest.raises(TypeError):
        MaskingParams(32)  # type: ignore[misc]


def test_from_hydra_schema() -> None:
    schema = MaskingSchema(threshold=0.75, graph="complete", max_dropout_fraction=0.3)
    params = MaskingParams.from_schema(schema)
    assert params.threshold == 0.75 and params.graph == "complete"


def test_hypergeometric_tail_matches_direct_count() -> None:
    # 2 marked among 4, draw 2: P[both marked] = 1/6
    assert math.isclose(hypergeometric_tail(population=4, marked=2, draws=2, at_least=2), 1 / 6)
    assert hypergeometric_tail(population=10, marked=3, draws=5, at_least=4) == 0.0
    assert hypergeometric_tail(population=10, marked=3, draws=5, at_least=0) == 1.0


@pytest.mark.parametrize("n", [50, 100, 1000])
def test_derived_degree_meets_every_condition_and_is_minimal(n: int) -> None:
    corrupt, dropped = n // 10, n // 10
    choice = derive_degree(
        n=n, corrupt=corrupt, dropped=dropped, security_bits=40, correctness_bits=20
    )
    assert choice is not None and not choice.complete
    k, t = choice.degree, choice.threshold
    assert k % 2 == 0 and k / 2 < t <= k < n - 1
    assert security_ok(n=n, degree=k, threshold=t, corrupt=corrupt, security_bits=40)
    assert correctness_ok(n=n, degree=k, threshold=t, dropped=dropped, correctness_bits=20)
    assert connectivity_ok(n=n, degree=k, removed=corrupt + dropped, security_bits=40)
    smaller = k - 2
    assert not any(
        security_ok(n=n, degree=smaller, threshold=t2, corrupt=corrupt, security_bits=40)
        and correctness_ok(n=n, degree=smaller, threshold=t2, dropped=dropped, correctness_bits=20)
        and connectivity_ok(n=n, degree=smaller, removed=corrupt + dropped, security_bits=40)
        for t2 in range(smaller // 2 + 1, smaller + 1)
    )


def test_degree_grows_logarithmically() -> None:
    degrees = [
        derive_degree(
            n=n, corrupt=n // 10, dropped=n // 10, security_bits=40, correctness_bits=20
        ).degree  # type: ignore[union-attr]
        for n in (1000, 10_000)
    ]
    assert degrees[0] < degrees[1] < 2 * degrees[0]


def test_graph_is_k_regular_symmetric_and_seeded() -> None:
    ids = list(range(3, 43))
    graph = build_graph(ids, degree=6, complete=False, seed=bytes(32))
    assert all(len(peers) == 6 and client not in peers for client, peers in graph.items())
    assert all(client in graph[peer] for client, peers in graph.items() for peer in peers)
    assert graph == build_graph(ids, degree=6, complete=False, seed=bytes(32))
    assert graph != build_graph(ids, degree=6, complete=False, seed=b"\x01" * 32)
    complete = build_graph(ids, degree=6, complete=True, seed=bytes(32))
    assert all(len(peers) == len(ids) - 1 for peers in complete.values())


def test_plan_uses_sparse_graph_at_scale_and_complete_when_small() -> None:
    plan = plan_round(MaskingParams(), round_id=1, client_ids=range(100), dim=10)
    assert (plan.degree, plan.threshold, plan.complete) == (22, 12, False)
    small = plan_round(MaskingParams(graph="complete"), round_id=1, client_ids=range(7), dim=10)
    assert small.complete and small.degree == 6 and small.threshold == 4


def test_plan_digest_binds_parameters() -> None:
    base = plan_round(MaskingParams(), round_id=1, client_ids=range(20), dim=10)
    assert (
        base.params_digest
        != plan_round(MaskingParams(), round_id=2, client_ids=range(20), dim=10).params_digest
    )
    assert (
        base.params_digest
        != plan_round(
            MaskingParams(clip_range=2.0), round_id=1, client_ids=range(20), dim=10
        ).params_digest
    )


def test_explicit_threshold_fraction_and_count() -> None:
    fraction = plan_round(
        MaskingParams(graph="complete", threshold=0.6, max_dropout_fraction=0.3),
        round_id=1,
        client_ids=range(11),
        dim=4,
    )
    assert fraction.threshold == 6
    count = plan_round(
        MaskingParams(graph="complete", threshold=7), round_id=1, client_ids=range(11), dim=4
    )
    assert count.threshold == 7


def test_unsafe_choices_are_refused() -> None:
    with pytest.raises(WeakGraphError, match="max_corrupt_fraction"):
        plan_round(
            MaskingParams(neighbours=40, threshold=21, max_corrupt_fraction=0.3),
            round_id=1,
            client_ids=range(100),
            dim=4,
        )
    with pytest.raises(WeakGraphError, match="max_dropout_fraction"):
        plan_round(
            MaskingParams(graph="complete", threshold=1.0), round_id=1, client_ids=range(20), dim=4
        )
    with pytest.raises(WeakGraphError, match="neighbours=4"):
        plan_round(MaskingParams(neighbours=4), round_id=1, client_ids=range(100), dim=4)
    with pytest.raises(MaskingParameterError, match="threshold"):
        plan_round(
            MaskingParams(graph="complete", threshold=30), round_id=1, client_ids=range(20), dim=4
        )


def test_plan_rejects_bad_rounds() -> None:
    with pytest.raises(DuplicateClientError):
        plan_round(MaskingParams(), round_id=1, client_ids=[1, 1, 2], dim=4)
    with pytest.raises(InsufficientClientsError):
        plan_round(MaskingParams(), round_id=1, client_ids=[1, 2], dim=4)
    with pytest.raises(MaskingParameterError, match="client ids"):
        plan_round(MaskingParams(), round_id=1, client_ids=[-1, 2, 3], dim=4)
    with pytest.raises(WrapAroundError, match="bits=8"):
        plan_round(MaskingParams(bits=8), round_id=1, client_ids=range(100), dim=4)
    with pytest.raises(WrapAroundError, match="above the limit"):
        plan_round(MaskingParams(bits=16, scale=10_000.0), round_id=1, client_ids=range(10), dim=4)
