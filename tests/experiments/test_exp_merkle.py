"""``chain.commit_mode=merkle`` through a real federation: one root and one publication per
round on the ledger, a clean audit, and a bad mode or window refused naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from experiments._config import RunConfig
from experiments._errors import ConfigError
from experiments._runner import run_experiment


def _run(compose_cfg: Callable[..., DictConfig], tmp_path: Path, *overrides: str) -> dict:
    composed = compose_cfg(*overrides)
    cfg = OmegaConf.to_object(composed)
    resolved = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, RunConfig) and isinstance(resolved, dict)
    run_experiment(cfg, resolved_config=resolved, output_dir=tmp_path, progress=False)
    return json.loads((tmp_path / "results.json").read_text())


def test_merkle_run_posts_roots_and_passes_its_audit(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    written = _run(
        compose_cfg,
        tmp_path,
        "federation.rounds=2",
        "chain.commit_mode=merkle",
        "chain.challenge_window=2",
    )
    assert written["final"]["audit"]["verdict"] == "clean"
    for record in written["rounds"]:
        phases = record["chain_phases"]
        assert phases["open"]["gas"] == 0  # the round opens with its root (commit phase)
        assert phases["commit"]["gas"] > 0  # the aggregator's opening with the root
        assert phases["reveal"]["gas"] == 0  # no client transaction: reveals are off chain
        assert phases["release"]["gas"] > 0


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("chain.commit_mode=sharded", "commit_mode"),
        ("chain.challenge_window=0", "challenge_window"),
    ],
)
def test_bad_merkle_options_fail_naming_the_field(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, override: str, field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        _run(compose_cfg, tmp_path, "federation.rounds=1", override)
