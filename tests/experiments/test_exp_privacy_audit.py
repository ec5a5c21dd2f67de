"""``dp.audit=one_run`` through a real federation: canaries in every client's DP-SGD, the
empirical lower bound in ``results.json``'s ``final.privacy_audit`` and the summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

import experiments._privacy as privacy_module
from experiments._config import RunConfig
from experiments._errors import ConfigError
from experiments._runner import build_federation, run_experiment, summary_table
from experiments.report import collect, plot_privacy_audit
from secagg.cli import main as secagg_main

TINY = (
    "dataset=synthetic",
    "dataset.n_samples=200",
    "dataset.n_features=6",
    "dataset.n_informative=4",
    "federation.clients=3",
    "federation.batch_size=16",
    "federation.local_steps=3",
    "federation.rounds=2",
    "federation.lr=0.5",
    "secagg=plain",
    "chain=none",
    "dp=sample",
    "dp.target_epsilon=2.0",
    "dp.delta=1e-4",
)
AUDIT_FIELDS = {
    "method",
    "canaries",
    "guesses",
    "correct",
    "confidence",
    "delta",
    "epsilon_lower",
    "epsilon_claimed",
}


def _run(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, *overrides: str
) -> tuple[dict, str]:
    composed = compose_cfg(*overrides)
    cfg = OmegaConf.to_object(composed)
    resolved = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, RunConfig) and isinstance(resolved, dict)
    results = run_experiment(cfg, resolved_config=resolved, output_dir=tmp_path, progress=False)
    return json.loads((tmp_path / "results.json").read_text()), summary_table(results)


def test_one_run_audit_reports_a_bound_per_client(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, table = _run(
        compose_cfg,
        tmp_path,
        *TINY,
        "dp.audit=one_run",
        "dp.audit_canaries=200",
        "dp.audit_confidence=0.9",
    )
    final = results["final"]
    audits = final["privacy_audit"]
    assert sorted(audits) == sorted(final["privacy"])
    for name, entry in audits.items():
        assert set(entry) == AUDIT_FIELDS
        assert entry["method"] == "one_run"
        assert entry["canaries"] == 200 and entry["confidence"] == 0.9
        assert entry["delta"] == 1e-4
        assert 0 <= entry["correct"] <= entry["guesses"] <= 200
        assert entry["epsilon_claimed"] == pytest.approx(final["privacy"][name]["epsilon"])
        assert 0.0 <= entry["epsilon_lower"] <= entry["epsilon_claimed"]  # an honest run
        assert f"{name} audit" in table
    # The secret in/out bits stay with the client: nothing but the counts is written.
    assert "included" not in json.dumps(results)

    # The sweep report carries the bound and plots it beside the claim.
    (row,) = collect(tmp_path)
    assert row["epsilon_lower"] == max(e["epsilon_lower"] for e in audits.values())
    assert plot_privacy_audit([row], tmp_path / "audit.png")
    assert (tmp_path / "audit.png").read_bytes()[:4] == b"\x89PNG"

    # `secagg audit --results` prints it (this run has no ledger: exit 2, bound still shown).
    capsys.readouterr()
    assert secagg_main(["audit", "--results", str(tmp_path / "results.json")]) == 2
    printed = capsys.readouterr().out
    assert "empirical privacy audit" in printed
    for name, entry in audits.items():
        assert f"{name}: epsilon >= {entry['epsilon_lower']:.3f} at 90% confidence" in printed


def test_no_audit_by_default(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    results, table = _run(compose_cfg, tmp_path, *TINY, "federation.rounds=1")
    assert results["final"]["privacy_audit"] is None
    assert results["config"]["dp"]["audit"] == "none"
    assert "epsilon >=" not in table
    (row,) = collect(tmp_path)
    assert row["epsilon_lower"] is None
    assert not plot_privacy_audit([row], tmp_path / "audit.png")


CLIENT_LEVEL = (
    *(o for o in TINY if not o.startswith("dp")),
    "dataset.n_features=20",
    "model=mlp",  # 3490 parameters: room for 200 Dirac canary clients
    "dp=client",
    "dp.noise_multiplier=5.0",
    "dp.delta=1e-5",  # the bound pays 2 * canaries * delta: keep it far below 1/canaries
    "dp.audit=one_run",
    "dp.audit_canaries=200",
)


def test_client_level_canary_clients_honest_run(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results, _ = _run(compose_cfg, tmp_path, *CLIENT_LEVEL)
    final = results["final"]
    (entry,) = final["privacy_audit"].values()
    assert list(final["privacy_audit"]) == ["federation"]
    assert set(entry) == AUDIT_FIELDS and entry["canaries"] == 200
    assert entry["epsilon_claimed"] == pytest.approx(final["epsilon"])
    assert 0.0 <= entry["epsilon_lower"] <= entry["epsilon_claimed"]


def test_client_level_noise_near_zero_is_caught(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_noise, noise_std = privacy_module.add_noise, privacy_module.noise_std

    def quiet(update: np.ndarray, **kwargs: Any) -> np.ndarray:
        return add_noise(update, **{**kwargs, "noise_multiplier": 1e-3})

    def quiet_std(**kwargs: Any) -> float:  # central noise, added inside the release
        return float(noise_std(**{**kwargs, "noise_multiplier": 1e-3}))

    monkeypatch.setattr(privacy_module, "add_noise", quiet)
    monkeypatch.setattr(privacy_module, "noise_std", quiet_std)
    results, _ = _run(compose_cfg, tmp_path, *CLIENT_LEVEL)
    entry = results["final"]["privacy_audit"]["federation"]
    assert entry["epsilon_claimed"] == pytest.approx(results["final"]["epsilon"])
    assert entry["epsilon_lower"] > entry["epsilon_claimed"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("dp.audit=twice",), "dp.audit must be one of"),
        (("dp.audit=one_run", "dp.audit_canaries=0"), "dp.audit_canaries"),
        (("dp.audit=one_run", "dp.audit_confidence=1.5"), "dp.audit_confidence"),
    ],
)
def test_bad_audit_settings_fail_at_start(
    compose_cfg: Callable[..., DictConfig], overrides: tuple[str, ...], message: str
) -> None:
    base = tuple(o for o in TINY if not o.startswith("dp"))
    dp_mode = ("dp=sample", "dp.target_epsilon=2.0") if overrides[0] != "dp=client" else ()
    converted = OmegaConf.to_object(compose_cfg(*base, *dp_mode, "dp.delta=1e-4", *overrides))
    assert isinstance(converted, RunConfig)
    with pytest.raises(ConfigError, match=message):
        build_federation(converted)
