"""Exit codes that mean something, and quiet, informative output (per-round lines with
epsilon, always in run.log, also while the progress bar is shown)."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from experiments._federation import RunResults
from experiments._runner import run_experiment
from experiments.run import (
    EXIT_AUDIT_FINDINGS,
    EXIT_EMPTY_ROUND,
    EXIT_OK,
    exit_code,
    resolved_container,
    to_run_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
Compose = Callable[..., DictConfig]
PLAIN = ("dp=off", "secagg=plain", "chain=none", "dataset=synthetic", "dataset.n_samples=300")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture
def handlers(tmp_path: Path) -> Iterator[tuple[io.StringIO, Path]]:
    """A console handler and a run.log file handler on the root logger, as Hydra sets up."""
    console = io.StringIO()
    console_handler = logging.StreamHandler(console)
    log_path = tmp_path / "run.log"
    file_handler = logging.FileHandler(log_path)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(console_handler)
    root.addHandler(file_handler)
    yield console, log_path
    root.removeHandler(console_handler)
    root.removeHandler(file_handler)
    file_handler.close()
    root.setLevel(old_level)


def _plain_run(compose_cfg: Compose, *overrides: str, progress: bool) -> RunResults:
    cfg = compose_cfg(*PLAIN, *overrides)
    return run_experiment(
        to_run_config(cfg), resolved_config=resolved_container(cfg), progress=progress
    )


def test_round_lines_reach_run_log_but_not_the_console_under_the_bar(
    compose_cfg: Compose, handlers: tuple[io.StringIO, Path]
) -> None:
    console, log_path = handlers
    _plain_run(compose_cfg, "federation.rounds=2", progress=True)
    logged = log_path.read_text()
    assert "round 1/2: accuracy=" in logged and "round 2/2: accuracy=" in logged
    assert "epsilon=n/a" in logged
    assert "round 1/2" not in console.getvalue()
    assert "dataset=synthetic" in console.getvalue()  # other lines still reach the console
    console.truncate(0)
    _plain_run(compose_cfg, "federation.rounds=1", progress=False)
    assert "round 1/1: accuracy=" in console.getvalue()


def test_exit_codes_and_the_majority_class_warning(
    compose_cfg: Compose, caplog: pytest.LogCaptureFixture
) -> None:
    results = _plain_run(compose_cfg, "federation.rounds=1", progress=False)
    assert results.final.majority_accuracy is not None
    assert 0.5 <= results.final.majority_accuracy < 1.0
    at_majority = dataclasses.replace(results.final, accuracy=results.final.majority_accuracy)
    above = dataclasses.replace(results.final, accuracy=results.final.majority_accuracy + 0.1)
    with caplog.at_level(logging.WARNING, logger="experiments"):
        assert exit_code(dataclasses.replace(results, final=above)) == EXIT_OK
        assert "majority-class level" not in caplog.text
        assert exit_code(dataclasses.replace(results, final=at_majority)) == EXIT_OK
        assert "majority-class level" in caplog.text
    finding = {"round_id": 1, "check": "commitment", "client": "client_0", "detail": "x"}
    audited = dataclasses.replace(
        above, audit={"verdict": "findings", "exit_code": 1, "findings": [finding]}
    )
    assert exit_code(dataclasses.replace(results, final=audited)) == EXIT_AUDIT_FINDINGS
    clean = dataclasses.replace(above, audit={"verdict": "clean", "exit_code": 0, "findings": []})
    assert exit_code(dataclasses.replace(results, final=clean)) == EXIT_OK


def test_majority_accuracy_is_the_share_of_the_most_common_test_class(
    compose_cfg: Compose,
) -> None:
    from experiments._runner import build_federation

    federation = build_federation(to_run_config(compose_cfg(*PLAIN)))
    labels = federation.data.pooled_test.tensors[1].numpy()
    expected = np.bincount(labels).max() / len(labels)
    assert federation.majority_accuracy() == pytest.approx(expected)


def test_a_run_whose_rounds_aggregate_nobody_exits_4(tmp_path: Path) -> None:
    out = tmp_path / "run"
    completed = _run(
        [
            "-m",
            "experiments.run",
            "dataset=synthetic",
            "dataset.n_samples=300",
            "federation.rounds=2",
            "secagg=plain",
            "chain=none",
            "dp.target_epsilon=null",
            "dp.noise_multiplier=1.0",
            "dp.epsilon_budget=0.5",  # every client is over budget from round 1
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
    )
    assert completed.returncode == EXIT_EMPTY_ROUND, completed.stderr
    logged = (out / "run.log").read_text()
    assert "round(s) [1, 2] aggregated no client" in logged
    assert "round 2/2: accuracy=" in logged and "clients=0" in logged
