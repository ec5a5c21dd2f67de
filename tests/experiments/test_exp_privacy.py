"""The DP layer wired into the round loop: dp=sample (Opacus DP-SGD per client, per-client
accountants and budgets) and dp=client (DP-FedAvg), through real federations."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from dp import (
    PrivacyEvent,
    compose_epsilon,
    epsilon_for,
    recompute_epsilon,
    verify_event_chain,
)
from dp._accounting import Segment
from experiments._config import RunConfig
from experiments._datasets import load_dataset
from experiments._errors import ConfigError
from experiments._privacy import (
    ClientLevelPrivacy,
    NoPrivacy,
    SampleLevelPrivacy,
    build_privacy_layer,
)
from experiments._runner import build_federation, run_experiment

ToRun = Callable[..., RunConfig]

TINY_SETTINGS = {
    "dataset": "synthetic",
    "dataset.n_samples": "200",
    "dataset.n_features": "6",
    "dataset.n_informative": "4",
    "federation.clients": "4",
    "federation.batch_size": "16",
    "federation.local_steps": "2",
    "federation.lr": "0.5",
    "secagg": "plain",
    "chain": "none",
}
TINY = tuple(f"{key}={value}" for key, value in TINY_SETTINGS.items())


def tiny(**changes: str) -> tuple[str, ...]:
    """TINY with some settings replaced (keys with ``__`` for ``.``)."""
    settings = {**TINY_SETTINGS, **{k.replace("__", "."): v for k, v in changes.items()}}
    return tuple(f"{key}={value}" for key, value in settings.items())


NEW_ROUND_KEYS = {"epsilon_per_client", "delta", "excluded"}


def _run(compose_cfg: Callable[..., DictConfig], tmp_path: Path, *overrides: str) -> dict:
    composed = compose_cfg(*overrides)
    cfg = OmegaConf.to_object(composed)
    resolved = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, RunConfig) and isinstance(resolved, dict)
    run_experiment(cfg, resolved_config=resolved, output_dir=tmp_path, progress=False)
    results: dict = json.loads((tmp_path / "results.json").read_text())
    return results


def _event_from_summary(summary: dict, *, delta: float, accountant: str) -> float:
    """Recompute epsilon from final.privacy alone (no events, no package state)."""
    segments = [
        Segment(
            sample_rate=s["sample_rate"],
            noise_multiplier=s["noise_multiplier"],
            steps=s["steps"],
            poisson_sampling=s["poisson_sampling"],
        )
        for s in summary["segments"]
    ]
    return compose_epsilon(segments, delta=delta, accountant=accountant)


# ----------------------------------------------------------------- dp=sample


def test_sample_level_target_epsilon_run_reports_cumulative_epsilons(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = _run(
        compose_cfg,
        tmp_path,
        *tiny(federation__batch_size="4"),
        "federation.rounds=3",
        "federation.partition=quantity",  # unequal client sizes: unequal sample rates
        "dp=sample",
        "dp.target_epsilon=2.0",
        "dp.delta=1e-4",
    )
    rounds, final = results["rounds"], results["final"]
    names = sorted(final["per_client_accuracy"])
    for record in rounds:
        assert set(record) >= NEW_ROUND_KEYS
        assert record["excluded"] == {} and record["n_clients"] == 4
        assert record["delta"] == 1e-4
        per_client = record["epsilon_per_client"]
        assert sorted(per_client) == names
        assert record["epsilon"] == max(per_client.values())
    epsilons = [r["epsilon"] for r in rounds]
    assert all(later > earlier for earlier, later in itertools.pairwise(epsilons))
    assert 0 < final["epsilon"] <= 2.0 and final["delta"] == 1e-4
    assert final["epsilon"] == pytest.approx(epsilons[-1])
    privacy = final["privacy"]
    assert sorted(privacy) == names
    rates = {privacy[n]["segments"][0]["sample_rate"] for n in names}
    assert len(rates) > 1  # different client sizes, different sample rates
    for name in names:
        summary = privacy[name]
        assert summary["total_steps"] == 3 * 2 and summary["rounds"] == 3
        assert summary["epsilon"] <= 2.0
        assert summary["epsilon"] == pytest.approx(rounds[-1]["epsilon_per_client"][name])
        recomputed = _event_from_summary(summary, delta=summary["delta"], accountant="rdp")
        assert recomputed == pytest.approx(summary["epsilon"], rel=1e-12)


def test_sample_level_events_are_kept_per_round_and_chain_per_client(run_cfg: ToRun) -> None:
    cfg = run_cfg(*TINY, "federation.rounds=2", "dp=sample", "dp.noise_multiplier=1.5")
    federation = build_federation(cfg)
    assert isinstance(federation.privacy, SampleLevelPrivacy)
    records, final = federation.run()
    names = [client.name for client in federation.data.clients]
    assert sorted(federation.privacy_events) == [1, 2]
    for name in names:
        chain = [federation.privacy_events[r][name] for r in (1, 2)]
        assert all(isinstance(e, PrivacyEvent) for e in chain)
        verify_event_chain(chain)
        assert [e.round_id for e in chain] == [1, 2]
        assert recompute_epsilon(chain) == pytest.approx(records[-1].epsilon_per_client[name])
        expected = epsilon_for(
            mechanism="dpsgd-sample",
            sample_rate=chain[0].sample_rate,
            noise_multiplier=1.5,
            steps=4,
            delta=1e-5,
            accountant="rdp",
        )
        assert final.privacy is not None
        assert final.privacy[name]["epsilon"] == pytest.approx(expected, rel=1e-9)
        assert chain[0].sample_rate == 16 / federation.data.clients[names.index(name)].n_train


def test_budget_refuses_clients_before_training_and_records_why(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # 160 training records over 4 IID clients: 40 each, sample rate 16/40.
    def eps(steps: int) -> float:
        return epsilon_for(
            mechanism="dpsgd-sample",
            sample_rate=16 / 40,
            noise_multiplier=1.0,
            steps=steps,
            delta=1e-5,
            accountant="rdp",
        )

    budget = (eps(4) + eps(6)) / 2  # two rounds of 2 steps fit, the third does not
    results = _run(
        compose_cfg,
        tmp_path,
        *TINY,
        "federation.rounds=4",
        "dp=sample",
        "dp.noise_multiplier=1.0",
        f"dp.epsilon_budget={budget!r}",
    )
    rounds = results["rounds"]
    assert [r["n_clients"] for r in rounds] == [4, 4, 0, 0]
    for record in rounds[:2]:
        assert record["excluded"] == {}
    for record in rounds[2:]:
        assert sorted(record["excluded"]) == ["0", "1", "2", "3"]
        assert all("privacy budget" in why for why in record["excluded"].values())
        assert record["epsilon"] == pytest.approx(eps(4))  # nothing more was spent
        assert record["seconds"]["train"] == 0.0
    for summary in results["final"]["privacy"].values():
        assert summary["rounds"] == 2 and summary["total_steps"] == 4
        assert summary["epsilon"] <= budget and summary["epsilon_budget"] == budget


def test_sample_level_with_masking_and_a_dropout(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = _run(
        compose_cfg,
        tmp_path,
        *TINY,
        "federation.rounds=2",
        "federation.dropout=0.25",
        "secagg=masking",
        "secagg.graph=complete",
        "secagg.max_dropout_fraction=0.3",
        "dp=sample",
        "dp.noise_multiplier=2.0",
    )
    previous = dict.fromkeys(results["final"]["privacy"], 0.0)
    for record in results["rounds"]:
        assert len(record["dropped"]) == 1 and record["n_clients"] == 3
        dropped_name = f"client_{record['dropped'][0]}"
        # The dropout trained nothing and released nothing: its epsilon did not move.
        for name, epsilon in record["epsilon_per_client"].items():
            if name == dropped_name:
                assert epsilon == previous[name]
            else:
                assert epsilon > previous[name]
        previous = record["epsilon_per_client"]
    total_steps = sum(s["total_steps"] for s in results["final"]["privacy"].values())
    assert total_steps == 2 * 3 * 2  # 2 rounds x 3 survivors x 2 steps


# ----------------------------------------------------------------- dp=client


def test_client_level_uniform_weights_clipping_and_distributed_noise(run_cfg: ToRun) -> None:
    cfg = run_cfg(
        *TINY,
        "federation.rounds=1",
        "secagg=masking",
        "secagg.graph=complete",
        "secagg.max_dropout_fraction=0.3",
        "dp=client",
        "dp.noise_multiplier=1.0",
        "dp.max_grad_norm=0.5",
        "dp.distributed=true",
        "dp.delta=1e-3",
    )
    federation = build_federation(cfg)
    layer = federation.privacy
    assert isinstance(layer, ClientLevelPrivacy)
    assert layer.weights({0: 10, 1: 30, 2: 60}) == {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}
    big = np.full(20_000, 1.0)
    noisy = layer.privatize_update(client_id=0, round_id=1, update=big, n_admitted=4)
    clipped = big * (0.5 / np.linalg.norm(big))
    residual = noisy - clipped
    # Each of n=4 clients adds N(0, sigma^2 S^2 / n): std 1.0 * 0.5 / 2 = 0.25.
    assert np.std(residual) == pytest.approx(0.25, rel=0.03)
    assert abs(np.mean(residual)) < 0.01


def test_client_level_accounts_dropout_shortfall(run_cfg: ToRun) -> None:
    cfg = run_cfg(
        *TINY,
        "federation.rounds=2",
        "federation.dropout=0.25",
        "secagg=masking",
        "secagg.graph=complete",
        "secagg.max_dropout_fraction=0.3",
        "dp=client",
        "dp.noise_multiplier=2.0",
        "dp.distributed=true",
        "dp.delta=1e-3",
    )
    federation = build_federation(cfg)
    records, final = federation.run()
    for round_id in (1, 2):
        (event,) = federation.privacy_events[round_id].values()
        assert event.client_id == "federation" and event.mechanism == "dp-fedavg-client"
        assert event.noise_multiplier == pytest.approx(2.0 * math.sqrt(3 / 4))
        assert event.sample_rate == 1.0
    assert records[0].epsilon_per_client is None and records[0].delta == 1e-3
    expected = epsilon_for(
        mechanism="dp-fedavg-client",
        sample_rate=1.0,
        noise_multiplier=2.0 * math.sqrt(3 / 4),
        steps=2,
        delta=1e-3,
        accountant="rdp",
    )
    assert final.epsilon == pytest.approx(expected, rel=1e-9)
    assert final.privacy is not None and final.privacy["federation"]["weights"] == "uniform"
    assert records[1].epsilon is not None and records[0].epsilon is not None
    assert records[1].epsilon > records[0].epsilon


def test_client_level_worst_case_survivors_and_collusion_through_the_runner(
    run_cfg: ToRun,
) -> None:
    common = (
        *TINY,
        "federation.rounds=1",
        "federation.dropout=0.25",
        "secagg=masking",
        "secagg.graph=complete",
        "secagg.max_dropout_fraction=0.3",
        "dp=client",
        "dp.target_epsilon=2.0",
        "dp.distributed=true",
        "dp.delta=1e-3",
    )
    # Calibrated for the worst case: 1 of 4 survive by default; 3 of 4 with one colluding.
    default = build_federation(run_cfg(*common))
    tighter = build_federation(run_cfg(*common, "dp.min_survivors=4", "dp.max_colluding_clients=1"))
    assert isinstance(default.privacy, ClientLevelPrivacy)
    assert isinstance(tighter.privacy, ClientLevelPrivacy)
    worst_default = default.privacy.accountant.worst_case_noise_multiplier
    worst_tighter = tighter.privacy.accountant.worst_case_noise_multiplier
    assert worst_default == pytest.approx(worst_tighter, rel=1e-9)  # same calibrated target
    sigma = tighter.privacy.accountant.noise_multiplier
    assert worst_tighter == pytest.approx(sigma * math.sqrt((4 - 1) / 4))
    assert default.privacy.accountant.noise_multiplier == pytest.approx(worst_default * 2)
    # One of four drops: 3 survivors < dp.min_survivors=4, so the sum is accounted (the
    # scheme's parties saw it) but not applied to the model.
    before = [p.detach().clone() for p in tighter.model.parameters()]
    _, final = tighter.run()
    (event,) = tighter.privacy_events[1].values()
    assert event.noise_multiplier == pytest.approx(sigma * math.sqrt((3 - 1) / 4))
    assert final.epsilon is not None and final.epsilon > 2.0  # below the floor: over target
    after = list(tighter.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_client_level_central_noise_and_budget_refusal(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    one_round = epsilon_for(
        mechanism="dp-fedavg-client",
        sample_rate=1.0,
        noise_multiplier=3.0,
        steps=1,
        delta=1e-3,
        accountant="rdp",
    )
    results = _run(
        compose_cfg,
        tmp_path,
        *TINY,
        "federation.rounds=3",
        "dp=client",
        "dp.noise_multiplier=3.0",
        "dp.delta=1e-3",
        f"dp.epsilon_budget={one_round * 1.2!r}",
    )
    rounds = results["rounds"]
    assert [r["n_clients"] for r in rounds] == [4, 0, 0]
    assert rounds[1]["excluded"] and all(
        "federation" in why for why in rounds[1]["excluded"].values()
    )
    assert results["final"]["epsilon"] == pytest.approx(one_round, rel=1e-9)
    assert results["final"]["privacy"]["federation"]["distributed"] is False
    assert results["final"]["privacy"]["federation"]["preprocessing"] == "public"


def test_client_level_distributed_noise_is_refused_with_plain(run_cfg: ToRun) -> None:
    cfg = run_cfg(*TINY, "dp=client", "dp.noise_multiplier=1.0", "dp.distributed=true")
    with pytest.raises(ConfigError, match="secure aggregation"):
        build_federation(cfg)


def test_client_level_fixed_size_subsets_need_poisson_off(run_cfg: ToRun) -> None:
    overrides = (*TINY, "federation.client_fraction=0.5", "dp=client", "dp.noise_multiplier=1.0")
    with pytest.raises(ConfigError, match="poisson_sampling=false"):
        build_federation(run_cfg(*overrides))
    federation = build_federation(run_cfg(*overrides, "dp.poisson_sampling=false"))
    assert isinstance(federation.privacy, ClientLevelPrivacy)
    assert federation.privacy.accountant.client_sample_rate == 0.5


# ----------------------------------------------------------------- config


def test_dp_off_keeps_every_privacy_field_null(run_cfg: ToRun) -> None:
    federation = build_federation(run_cfg(*TINY, "dp=off", "federation.rounds=1"))
    assert isinstance(federation.privacy, NoPrivacy)
    records, final = federation.run()
    assert records[0].epsilon is None and records[0].epsilon_per_client is None
    assert records[0].delta is None and records[0].excluded == {}
    assert final.epsilon is None and final.delta is None and final.privacy is None
    assert federation.privacy_events == {}


@pytest.mark.parametrize(
    ("dp_overrides", "expected"),
    [
        (("dp=off",), "per_client"),
        (("dp=sample", "dp.noise_multiplier=1"), "public"),
        (("dp=client", "dp.noise_multiplier=1"), "public"),
    ],
)
def test_dp_runs_load_their_data_with_public_preprocessing_only(
    run_cfg: ToRun, dp_overrides: tuple[str, ...], expected: str
) -> None:
    cfg = run_cfg(*TINY, *dp_overrides)
    assert build_federation(cfg).data.preprocessing == expected
    if expected == "public":  # the same data scaled with per-client statistics is refused
        per_client = load_dataset(
            cfg.dataset, cfg.federation, np.random.default_rng(0), preprocessing="per_client"
        )
        with pytest.raises(ConfigError, match="public pre-processing"):
            build_privacy_layer(
                cfg.dp, federation=cfg.federation, data=per_client, scheme_name="plain"
            )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("dp=sample",), "dp.noise_multiplier"),
        (("dp=sample", "dp.noise_multiplier=-1"), "dp.noise_multiplier"),
        (("dp=sample", "dp.noise_multiplier=1", "dp.delta=0.1"), "delta"),
        (("dp=sample", "dp.noise_multiplier=1", "federation.batch_size=500"), "batch_size"),
    ],
)
def test_bad_dp_settings_fail_at_start(
    run_cfg: ToRun, overrides: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_federation(run_cfg(*TINY, *overrides))


def test_heart_disease_reports_per_hospital_epsilons(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, heart_dir: Path
) -> None:
    results = _run(
        compose_cfg,
        tmp_path,
        "dataset=heart_disease",
        f"dataset.data_dir={heart_dir}",
        "federation=heart_disease",
        "federation.rounds=2",
        "federation.local_steps=5",
        "dp=sample",
        "dp.target_epsilon=1.0",
        "dp.delta=1e-4",
    )
    privacy = results["final"]["privacy"]
    assert len(privacy) == 4
    rates = [p["segments"][0]["sample_rate"] for p in privacy.values()]
    assert len(set(rates)) == 4
    assert all(0 < p["epsilon"] <= 1.0 for p in privacy.values())
    assert all(p["preprocessing"] == "public" for p in privacy.values())
    assert set(results["rounds"][-1]["epsilon_per_client"]) == set(privacy)


def _stored_manifests(store: Path) -> list:
    """Every round manifest in an artifact store (by round)."""
    from secagg import ManifestError, RoundManifest

    manifests = []
    for path in store.iterdir():
        try:
            manifests.append(RoundManifest.from_bytes(path.read_bytes()))
        except ManifestError:
            continue
    return sorted(manifests, key=lambda m: m.round_id)


def test_sample_level_manifests_commit_each_clients_whole_policy(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = _run(
        compose_cfg,
        tmp_path,
        *tiny(chain="inprocess"),
        "federation.rounds=2",
        "dp=sample",
        "dp.target_epsilon=2.0",
        "dp.delta=1e-4",
    )
    assert results["final"]["audit"]["verdict"] == "clean"
    manifests = _stored_manifests(Path(results["ledger"]["store"]))
    assert [m.round_id for m in manifests] == [1, 2]
    privacy = results["final"]["privacy"]
    for manifest in manifests:
        assert manifest.dp_mode == "sample"
        for member in manifest.clients:
            policy = member.policy
            assert policy is not None
            summary = privacy[f"client_{member.client_id}"]
            (segment,) = summary["segments"]
            assert policy.mechanism == summary["mechanism"] == "dpsgd-sample"
            assert policy.sample_rate == segment["sample_rate"]
            assert policy.noise_multiplier == segment["noise_multiplier"]
            assert policy.poisson_sampling is segment["poisson_sampling"] is True
            assert (policy.delta, policy.accountant) == (1e-4, summary["accountant"])
            assert policy.steps == member.expected_steps == 2
            assert (policy.target_epsilon, policy.planned_steps) == (2.0, 2 * 2)


def test_client_level_central_noise_is_refused_with_masking(run_cfg: ToRun) -> None:
    overrides = (*tiny(secagg="masking"), "dp=client", "dp.noise_multiplier=1.0")
    with pytest.raises(ConfigError, match="single releasing party"):
        build_federation(run_cfg(*overrides))
    federation = build_federation(run_cfg(*overrides, "dp.distributed=true"))
    assert isinstance(federation.privacy, ClientLevelPrivacy)
    assert federation.privacy.release_noise_std(4) is None


def test_client_level_central_noise_is_refused_with_a_decryption_committee(
    run_cfg: ToRun,
) -> None:
    overrides = (*tiny(secagg="ckks"), "dp=client", "dp.noise_multiplier=1.0")
    with pytest.raises(ConfigError, match="single releasing party"):
        build_federation(run_cfg(*overrides, "secagg.committee_size=3"))
    federation = build_federation(run_cfg(*overrides, "dp.distributed=true"))
    assert federation.privacy.release_noise_std(4) is None


def test_client_level_central_noise_is_added_inside_the_release(run_cfg: ToRun) -> None:
    cfg = run_cfg(*TINY, "dp=client", "dp.noise_multiplier=2.0", "dp.max_grad_norm=0.5")
    federation = build_federation(cfg)
    layer = federation.privacy
    assert isinstance(layer, ClientLevelPrivacy)
    assert layer.release_noise_std(4) == pytest.approx(2.0 * 0.5 / 4)
    zeros = {c: np.zeros(federation.dim) for c in range(4)}
    result = federation.aggregate(1, zeros, dict.fromkeys(range(4), 0.25))
    assert result.mean_update is not None  # the sum of zero updates, noised in the release
    noise = np.std(result.mean_update)
    assert 0.5 * 2.0 * 0.5 / 4 < noise < 2.0 * 2.0 * 0.5 / 4
    released = layer.after_reveal(
        round_id=1, mean_update=result.mean_update, selected=[0, 1, 2, 3], survivors=[0, 1, 2, 3]
    )
    assert released is result.mean_update  # the accounting adds no second noise


def test_client_level_federation_events_are_committed_by_the_next_manifest(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = _run(
        compose_cfg,
        tmp_path,
        *tiny(chain="inprocess", secagg="ckks"),
        "secagg.committee_size=1",  # central noise needs a single releasing party
        "secagg.committee_threshold=1",
        "federation.rounds=3",
        "dp=client",
        "dp.noise_multiplier=2.0",
        "dp.delta=1e-4",
    )
    assert results["final"]["audit"]["verdict"] == "clean"
    store = Path(results["ledger"]["store"])
    manifests = _stored_manifests(store)
    assert [m.round_id for m in manifests] == [1, 2, 3]
    assert manifests[0].federation_event is None
    for manifest in manifests:
        policy = manifest.federation_policy
        assert policy is not None and policy.mechanism == "dp-fedavg-client"
        assert (policy.noise_multiplier, policy.delta, policy.steps) == (2.0, 1e-4, 1)
    for manifest in manifests[1:]:
        assert manifest.federation_event is not None
        head = PrivacyEvent.from_bytes((store / manifest.federation_event).read_bytes())
        assert head.client_id == "federation" and head.round_id == manifest.round_id - 1
    summary = results["final"]["privacy"]["federation"]
    assert summary["rounds"] == 3 and summary["epsilon"] == results["final"]["epsilon"]
