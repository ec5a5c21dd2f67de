"""The command lines as a user runs them: one run with the documented overrides, a sweep
with the default multirun folder, and the report over it (CSV + PNG)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.slow
def test_run_with_the_documented_overrides_writes_results_in_the_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "x"
    overrides = (
        "federation.clients=3 federation.rounds=2 federation.seed=1 dataset=synthetic "
        "dataset.n_features=20 dataset.n_samples=500 model=mlp model.hidden=[32,16] "
        f"hydra.run.dir={out}"
    ).split()
    completed = _run(["-m", "experiments.run", *overrides], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "summary" in completed.stdout and "pooled accuracy" in completed.stdout
    output = completed.stdout + completed.stderr
    assert "round 2/2" in output and "epsilon=" in output  # plain log lines under CI
    assert "Ghost Clipping" not in output  # Opacus's INFO lines are silenced
    assert "Ghost Clipping" not in (out / "run.log").read_text()
    results = json.loads((out / "results.json").read_text())
    config = results["config"]
    assert config["federation"]["clients"] == 3 and config["federation"]["seed"] == 1
    assert config["dataset"] == {**config["dataset"], "n_features": 20, "n_samples": 500}
    assert config["model"]["hidden"] == [32, 16]
    assert len(results["rounds"]) == 2
    assert len(results["final"]["per_client_accuracy"]) == 3


def test_bad_value_exits_naming_the_field(tmp_path: Path) -> None:
    completed = _run(
        ["-m", "experiments.run", "federation.rounds=0", f"hydra.run.dir={tmp_path / 'bad'}"],
        cwd=tmp_path,
    )
    assert completed.returncode != 0
    assert "ConfigError: federation.rounds must be an integer >= 1, got 0" in completed.stderr
    assert not (tmp_path / "bad" / "results.json").exists()


@pytest.mark.slow
def test_sweep_then_report_gives_csv_png_and_table(tmp_path: Path) -> None:
    sweep = [
        "-m",
        "experiments.run",
        "-m",
        "federation.clients=3,5",
        "federation.rounds=1",
        "dataset=synthetic",
        "dataset.n_samples=200",
    ]
    completed = _run(sweep, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    results = sorted((tmp_path / "multirun").rglob("results.json"))
    assert len(results) == 2
    sweep_dir = results[0].parents[1]

    report = _run(["-m", "experiments.report", str(sweep_dir)], cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    with (sweep_dir / "summary.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(int(row["clients"]) for row in rows) == [3, 5]
    # The sweep ran the default (hardened) configuration: CKKS, DP at epsilon <= 1, ledger.
    assert all(row["secagg"] == "ckks" for row in rows)
    assert all(0 < float(row["epsilon"]) <= 1.0 for row in rows)
    assert all(row["audit"] == "clean" and int(row["gas_total"]) > 0 for row in rows)
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean_client_accuracy" in report.stdout and "synthetic" in report.stdout


def test_report_on_an_empty_folder_fails_clearly(tmp_path: Path) -> None:
    completed = _run(["-m", "experiments.report", str(tmp_path)], cwd=tmp_path)
    assert completed.returncode == 2
    assert "no results.json below" in completed.stderr
