"""docs/extending.md runs as written: a user module registers a dataset and a model, the
command line selects them by name; typos in their fields are caught; Opacus refuses a
model it cannot train with a clear error."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from experiments._errors import ConfigError
from experiments._registry import load_plugins, register_model

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "extending.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def _run(args: list[str], cwd: Path, plugins: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CI": "1",
        "PYTHONPATH": f"{cwd}{os.pathsep}{REPO_ROOT}",
        "SECAGG_PLUGINS": plugins,
    }
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _documented_command() -> tuple[str, list[str]]:
    (command,) = _blocks("bash")
    words = shlex.split(command.replace("\\\n", " "))
    plugins = words[0].removeprefix("SECAGG_PLUGINS=")
    assert words[1:4] == ["python", "-m", "experiments.run"]
    return plugins, words[3:]


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "my_fl_ext.py").write_text(_blocks("python")[0])
    return tmp_path


def test_the_documented_example_runs_as_written(user_dir: Path) -> None:
    plugins, args = _documented_command()
    out = user_dir / "run"
    completed = _run(["-m", *args, f"hydra.run.dir={out}"], user_dir, plugins)
    assert completed.returncode == 0, completed.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["dataset"] == {"name": "moons", "n_samples": 400, "noise": 0.2}
    assert results["config"]["model"] == {"name": "tiny_net", "width": 8}
    losses = [record["loss"] for record in results["rounds"]]
    assert len(losses) == 3 and losses[-1] < losses[0]  # it trains through masking


def test_a_typo_in_a_registered_field_is_caught_up_front(user_dir: Path) -> None:
    plugins, args = _documented_command()
    args = [a.replace("model.width=", "model.widht=") for a in args]
    completed = _run(["-m", *args], user_dir, plugins)
    assert completed.returncode == 2
    assert "did you mean model.width?" in completed.stderr


def test_opacus_refuses_a_batchnorm_model_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bn_ext.py").write_text(
        "from torch import nn\nimport experiments\n"
        "experiments.register_model('bn_net', lambda cfg, data: nn.Sequential("
        "nn.Linear(data.n_features, 8), nn.BatchNorm1d(8), nn.Linear(8, data.n_classes)))\n"
    )
    args = ["model=bn_net", "dataset=synthetic", "federation.rounds=1", "secagg=plain"]
    completed = _run(["-m", "experiments.run", *args, "chain=none"], tmp_path, "bn_ext")
    assert completed.returncode == 2
    (line,) = completed.stderr.strip().splitlines()
    assert "model=bn_net" in line and "BatchNorm" in line and "dp.fix_model=true" in line


def test_registration_refuses_bad_names_schemas_and_missing_plugins() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_model("logreg", lambda cfg, data: None)
    with pytest.raises(ConfigError, match="must be an identifier"):
        register_model("my-net", lambda cfg, data: None)
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        load_plugins("no_such_module_xyz")
