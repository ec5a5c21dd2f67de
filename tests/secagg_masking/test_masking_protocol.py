"""The protocol end to end: sums, dropouts at every stage, aborts, and secret exposure."""

from __future__ import annotations

import numpy as np
import pytest

from secagg._errors import InsufficientClientsError, ProtocolAbortError
from secagg.masking import BelowThresholdError, MaskingParams, MaskingScheme
from secagg.masking._constants import Stage

from .conftest import run_round


def _ids(n: int, *offsets: int) -> list[int]:
    return [100 + offset for offset in offsets]


def test_sum_without_dropouts_sparse_graph() -> None:
    outcome = run_round(MaskingParams(), n=40, dim=64)
    plan = outcome.session.plan
    assert not plan.complete and plan.degree < 39
    assert outcome.session.included == tuple(range(100, 140))
    assert outcome.session.excluded == {}
    assert outcome.error() <= 40 / plan.scale
    # The masked inputs alone look nothing like the updates.
    assert outcome.session.server.revealed_keys == set()


def test_sum_complete_graph() -> None:
    outcome = run_round(MaskingParams(graph="complete"), n=8)
    assert outcome.session.plan.complete
    assert outcome.error() <= 8 / outcome.session.plan.scale


def test_masked_input_hides_the_update() -> None:
    session = MaskingScheme(MaskingParams()).start_round(round_id=1, client_ids=range(5), dim=8)
    session.setup()
    blob = session.protect(0, np.zeros(8))
    words = np.frombuffer(blob[-32:], dtype="<u4")
    assert np.count_nonzero(words) >= 7  # zeros are masked to (pseudo)random words


@pytest.mark.parametrize("stage", ["advertise", "share", "input", "unmask"])
@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_dropouts_at_each_stage(stage: str, fraction: float) -> None:
    n = 20
    dropped = list(range(100, 100 + int(fraction * n)))
    kwargs = {f"{stage}_drop": dropped}
    params = MaskingParams(max_dropout_fraction=fraction)
    outcome = run_round(params, n=n, **kwargs)
    session = outcome.session
    if stage == "unmask":  # sent masked input: still in the sum
        assert set(dropped) <= set(session.included)
    else:
        assert set(dropped) & set(session.included) == set()
        assert set(dropped) <= set(session.excluded)
    assert len(session.included) == (n if stage == "unmask" else n - len(dropped))
    assert outcome.error() <= n / session.plan.scale
    assert session.server.revealed_seeds & session.server.revealed_keys == set()


def test_dropouts_spread_over_all_stages_30_percent() -> None:
    params = MaskingParams(max_dropout_fraction=0.3)
    outcome = run_round(
        params,
        n=30,
        advertise_drop=[100, 101],
        share_drop=[102, 103],
        input_drop=[104, 105],
        unmask_drop=[106, 107, 108],
    )
    session = outcome.session
    assert set(session.excluded) == {100, 101, 102, 103, 104, 105}
    assert {106, 107, 108} <= set(session.included)
    assert outcome.error() <= 30 / session.plan.scale


def test_never_both_secrets_of_one_client() -> None:
    """Reconstructed seeds are exactly the included clients; keys only the excluded ones."""
    params = MaskingParams(max_dropout_fraction=0.3)
    outcome = run_round(
        params, n=20, share_drop=[100], input_drop=[101, 102], unmask_drop=[103, 104]
    )
    server = outcome.session.server
    assert server.revealed_seeds == set(outcome.session.included)
    assert server.revealed_keys == {101, 102}  # 100 never shared: nobody masked with it
    assert server.revealed_seeds.isdisjoint(server.revealed_keys)
    # Nor did any single response carry both shares for one peer.
    for response in server._state.responses.values():
        seeds = {owner for owner, _ in response.seed_shares}
        keys = {owner for owner, _ in response.key_shares}
        assert seeds.isdisjoint(keys)


def test_no_per_pair_state_outlives_the_round() -> None:
    params = MaskingParams(max_dropout_fraction=0.3)
    outcome = run_round(params, n=12, input_drop=[101], unmask_drop=[102])
    session = outcome.session
    assert outcome.error() <= 12 / session.plan.scale
    answered = [c for c in session.included if c != 102]
    assert answered and all(session.clients[c].stage == Stage.DONE for c in answered)
    for client in answered:  # shares held for neighbours, ephemeral item secrets: gone
        assert session.clients[client]._state.held_shares == {}
        assert session.clients[client]._state.sent_items == {}
    assert session.clients[102]._state.held_shares  # it never answered the unmask stage
    assert session.server._state.shares == {}  # the routed items, n * k of them


def test_abort_when_too_few_advertise() -> None:
    params = MaskingParams(graph="complete")
    session = MaskingScheme(params).start_round(round_id=1, client_ids=range(10), dim=4)
    with pytest.raises(BelowThresholdError, match="below the threshold t=") as caught:
        session.setup(advertise_dropouts=range(6))
    assert isinstance(caught.value, InsufficientClientsError)
    assert isinstance(caught.value, ProtocolAbortError)


def test_abort_when_too_few_masked_inputs() -> None:
    params = MaskingParams(graph="complete", max_dropout_fraction=0.3)
    session = MaskingScheme(params).start_round(round_id=1, client_ids=range(10), dim=4)
    session.setup()
    blobs = {c: session.protect(c, np.zeros(4)) for c in range(4)}
    with pytest.raises(BelowThresholdError, match="sent valid masked input"):
        session.combine(blobs)


def test_abort_when_too_few_unmask_survivors() -> None:
    params = MaskingParams(graph="complete", max_dropout_fraction=0.3)
    session = MaskingScheme(params).start_round(round_id=1, client_ids=range(10), dim=4)
    session.setup()
    aggregate = session.combine({c: session.protect(c, np.zeros(4)) for c in range(10)})
    with pytest.raises(BelowThresholdError, match="online share holders"):
        session.reveal(aggregate, survivors=range(3))
    assert session.server.revealed_seeds == set() and session.server.revealed_keys == set()


def test_combine_is_deterministic_and_stats_recorded() -> None:
    session = MaskingScheme(MaskingParams()).start_round(round_id=1, client_ids=range(6), dim=32)
    session.setup()
    blobs = {c: session.protect(c, np.full(32, 0.01)) for c in range(6)}
    first = session.combine(blobs)
    assert session.combine(dict(reversed(list(blobs.items())))) == first
    result = session.reveal(first, survivors=range(6))
    assert np.allclose(result, 0.06, atol=1e-6)
    stats = session.stats
    for phase in ("setup", "protect", "combine", "reveal"):
        assert stats.seconds[phase] > 0
    assert stats.bytes_up["protect"] == sum(map(len, blobs.values()))
    assert stats.bytes_up["setup"] > 0 and stats.bytes_down["reveal"] > 0


def test_sum_matches_weighted_mean_to_1e_5() -> None:
    outcome = run_round(MaskingParams(), n=50, dim=200)
    assert outcome.error() <= 1e-5
