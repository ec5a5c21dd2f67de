"""Run artifacts: the final model saved in the run dir and rebuilt from it alone, and run
metadata (timestamp, versions, git commit, device) in results.json."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from experiments import ModelFileError, load_model
from experiments._runner import build_federation, run_experiment
from experiments._training import evaluate
from experiments.run import resolved_container, to_run_config

Compose = Callable[..., DictConfig]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dp", [["dp=off"], ["dp=sample", "dp.target_epsilon=5"]])
def test_the_saved_model_reproduces_the_final_accuracy(
    compose_cfg: Compose, tmp_path: Path, dp: list[str]
) -> None:
    overrides = [
        *dp,
        *("secagg=plain", "chain=none", "dataset=synthetic", "dataset.n_samples=300"),
        *("model=mlp", "model.hidden=[8]", "federation.rounds=2"),
    ]
    cfg = compose_cfg(*overrides)
    results = run_experiment(
        to_run_config(cfg), resolved_config=resolved_container(cfg), output_dir=tmp_path
    )
    model = load_model(tmp_path / "model.pt")
    data = build_federation(to_run_config(cfg)).data  # same seed: the same test set
    rebuilt = evaluate(model, data.pooled_test, device=torch.device("cpu"))
    assert rebuilt.accuracy == results.final.accuracy
    assert rebuilt.loss == pytest.approx(results.rounds[-1].loss, rel=1e-6)
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["model_file"] == "model.pt"


def test_results_json_records_when_where_and_with_what(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    cfg = compose_cfg(
        "dp=off",
        "secagg=plain",
        "chain=none",
        "dataset=synthetic",
        "dataset.n_samples=200",
        "federation.rounds=1",
    )
    run_experiment(to_run_config(cfg), resolved_config=resolved_container(cfg), output_dir=tmp_path)
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert datetime.fromisoformat(meta["timestamp"]).tzinfo is not None
    assert torch.__version__.startswith(meta["versions"]["torch"].split("+")[0])
    assert meta["device"]["type"] == "cpu"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    if head.returncode == 0:
        assert meta["git_commit"] == head.stdout.strip()
        assert isinstance(meta["git_dirty"], bool)


def test_a_file_that_is_not_a_saved_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match=r"is not a model\.pt written by a run"):
        load_model(path)
