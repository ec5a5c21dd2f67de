"""The round loop: FedAvg through the scheme interface, dropouts, sampling, reproducibility,
and the results.json written by an end-to-end run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.utils import parameters_to_vector

from experiments._config import RunConfig
from experiments._runner import build_federation, run_experiment, summary_table

ToRun = Callable[..., RunConfig]

TINY = (
    "dataset=synthetic",
    "dataset.n_samples=200",
    "dataset.n_features=6",
    "dataset.n_informative=4",
    "federation.clients=4",
    "federation.rounds=2",
    "dp=off",
    "secagg=plain",
    "chain=none",
)
ROUND_KEYS = {
    "round",
    "accuracy",
    "auc",
    "loss",
    "n_clients",
    "dropped",
    "bytes_up",
    "bytes_down",
    "seconds",
    "epsilon",
    "gas_used",
    "epsilon_per_client",
    "delta",
    "excluded",
    "reputation",
    "flagged",
    "chain_phases",
    "committee",
}
FINAL_KEYS = {
    "accuracy",
    "auc",
    "per_client_accuracy",
    "mean_client_accuracy",
    "epsilon",
    "delta",
    "wall_seconds",
    "bytes_up_total",
    "gas_total",
    "privacy",
    "audit",
    "privacy_audit",
    "majority_accuracy",
}


def test_aggregate_is_the_weighted_mean_of_the_survivors(run_cfg: ToRun) -> None:
    federation = build_federation(run_cfg(*TINY))
    rng = np.random.default_rng(0)
    deltas = {c: rng.normal(size=federation.dim) for c in (0, 2, 3)}  # client 1 dropped
    weights = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}
    result = federation.aggregate(1, deltas, weights)
    expected = (0.1 * deltas[0] + 0.3 * deltas[2] + 0.4 * deltas[3]) / 0.8
    assert result.mean_update is not None
    np.testing.assert_allclose(result.mean_update, expected, rtol=1e-12, atol=1e-12)
    assert result.included == [0, 2, 3]
    assert result.stats.bytes_up["protect"] == 3 * 8 * federation.dim


def test_apply_update_moves_the_global_weights_by_the_vector(run_cfg: ToRun) -> None:
    federation = build_federation(run_cfg(*TINY))
    before = parameters_to_vector(federation.model.parameters()).detach().clone()
    update = np.linspace(-1, 1, federation.dim)
    federation.apply_update(update)
    after = parameters_to_vector(federation.model.parameters()).detach()
    torch.testing.assert_close(after - before, torch.as_tensor(update, dtype=torch.float32))


def test_train_client_returns_a_float64_update_and_its_sample_count(run_cfg: ToRun) -> None:
    federation = build_federation(run_cfg(*TINY))
    before = parameters_to_vector(federation.model.parameters()).detach().clone()
    delta, n_samples, info = federation.train_client(2, round_id=1)
    assert delta.dtype == np.float64 and delta.shape == (federation.dim,)
    assert np.linalg.norm(delta) > 0
    assert n_samples == len(federation.data.clients[2].train)
    assert info["steps"] >= 1
    # The global model is untouched by local training.
    assert torch.equal(before, parameters_to_vector(federation.model.parameters()))


def test_client_sampling_and_dropout_are_seeded_shares(run_cfg: ToRun) -> None:
    cfg = run_cfg(
        *TINY, "federation.clients=10", "federation.client_fraction=0.5", "federation.dropout=0.4"
    )
    federation = build_federation(cfg)
    selected = federation.select_clients(3)
    assert len(selected) == 5 and selected == federation.select_clients(3)
    dropped = federation.select_dropouts(3, selected)
    assert len(dropped) == 2 and set(dropped) <= set(selected)
    record = federation.run_round(3)
    assert record.n_clients == 3 and record.dropped == dropped
    assert record.bytes_up == 3 * 8 * federation.dim


def test_end_to_end_two_rounds_on_breast_cancer_writes_results_json(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    composed = compose_cfg("federation.rounds=2", "dp=off", "secagg=plain", "chain=none")
    cfg = OmegaConf.to_object(composed)
    resolved = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, RunConfig) and isinstance(resolved, dict)
    run_experiment(cfg, resolved_config=resolved, output_dir=tmp_path, progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"config", "rounds", "final", "ledger", "meta"}
    assert results["ledger"] is None  # chain=none: a memory ledger, gone with the run
    assert results["config"]["dataset"]["name"] == "breast_cancer"
    assert results["config"]["federation"]["rounds"] == 2
    rounds = results["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    dim = 30 * 2 + 2
    for record in rounds:
        assert set(record) == ROUND_KEYS
        assert set(record["seconds"]) == {"train", "protect", "combine", "reveal", "chain"}
        # chain=none runs the same hardened round on a memory ledger: no gas, but the
        # ledger phases' seconds, reputation, exclusions and flags as with any ledger
        assert record["seconds"]["train"] > 0 and record["seconds"]["chain"] > 0
        assert record["epsilon"] is None and record["gas_used"] is None
        assert record["chain_phases"] is None
        assert sorted(record["reputation"]) == [f"client_{i}" for i in range(5)]
        assert record["flagged"] == {} and record["excluded"] == {}
        assert record["n_clients"] == 5 and record["dropped"] == []
        assert record["bytes_up"] == 5 * 8 * dim
        assert 0.0 <= record["accuracy"] <= 1.0 and 0.0 <= record["auc"] <= 1.0
    final = results["final"]
    assert set(final) == FINAL_KEYS
    assert final["epsilon"] is None and final["delta"] is None and final["gas_total"] is None
    assert final["audit"]["verdict"] == "clean" and final["privacy_audit"] is None
    assert final["accuracy"] == rounds[-1]["accuracy"]
    assert final["accuracy"] > 0.85  # logistic regression learns this task in two rounds
    per_client = final["per_client_accuracy"]
    assert sorted(per_client) == [f"client_{i}" for i in range(5)]
    assert final["mean_client_accuracy"] == pytest.approx(np.mean(list(per_client.values())))
    assert final["bytes_up_total"] == sum(r["bytes_up"] for r in rounds)


def test_same_seed_same_rounds_different_seed_different_rounds(run_cfg: ToRun) -> None:
    overrides = (
        *TINY,
        "model=mlp",
        "model.hidden=[8]",
        "federation.client_fraction=0.75",
        "federation.dropout=0.34",
        "federation.optimizer=adam",
        "federation.lr=0.01",
    )

    def run(seed: int) -> list[tuple[float, float]]:
        cfg = run_cfg(*overrides, f"federation.seed={seed}")
        results = run_experiment(cfg, resolved_config={}, progress=False)
        return [(r.accuracy, r.loss) for r in results.rounds]

    first = run(5)
    assert first == run(5)
    assert first != run(6)


def test_progress_bar_for_interactive_runs_and_log_lines_otherwise(
    run_cfg: ToRun, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = run_cfg(*TINY)
    run_experiment(cfg, resolved_config={}, progress=True)
    assert "rounds: 100%" in capsys.readouterr().err
    with caplog.at_level("INFO", logger="experiments"):
        run_experiment(cfg, resolved_config={}, progress=False)
    assert "round 2/2: accuracy=" in caplog.text


def test_default_run_is_the_hardened_one_and_passes_its_audit(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    composed = compose_cfg("federation.rounds=3")
    cfg = OmegaConf.to_object(composed)
    resolved = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, RunConfig) and isinstance(resolved, dict)
    results = run_experiment(cfg, resolved_config=resolved, output_dir=tmp_path, progress=False)
    written = json.loads((tmp_path / "results.json").read_text())
    ledger = written["ledger"]
    assert ledger["backend"] == "inprocess" and ledger["address"].startswith("0x")
    assert ledger["store"] == str((tmp_path / "artifacts").resolve())
    assert any((tmp_path / "artifacts").iterdir())
    assert written["final"]["audit"]["verdict"] == "clean"
    epsilons = [r["epsilon"] for r in written["rounds"]]
    assert epsilons == sorted(epsilons) and 0 < epsilons[-1] <= 1.0
    for record in written["rounds"]:
        assert record["gas_used"] > 0 and record["seconds"]["chain"] > 0
        phases = record["chain_phases"]
        assert sum(p["gas"] for p in phases.values()) == record["gas_used"]
        assert phases["commit"]["gas"] > 0 and phases["reveal"]["gas"] > 0
        assert phases["release"]["gas"] > 0 and phases["publish"]["seconds"] > 0
        assert set(record["reputation"]) == {f"client_{i}" for i in range(5)}
        assert record["flagged"] == {}
    assert written["final"]["gas_total"] == sum(r["gas_used"] for r in written["rounds"])
    table = summary_table(results)
    assert "audit verdict" in table and "clean" in table
