"""Run artifacts: the final global model (``model.pt``) and run metadata for ``results.json``.

``model.pt`` holds the final global model's ``state_dict`` and what it takes to rebuild the
architecture without the data: the model config, the task's shape (features, classes,
input shape) and whether the model was prepared for DP-SGD (BatchNorm replaced).
:func:`load_model` rebuilds it. :func:`run_metadata` records when and where a run ran:
a UTC timestamp, the Python and package versions, the git commit when run from a
checkout (with a ``dirty`` flag), and the device. Nothing secret is written.
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from experiments._config import MODEL_SCHEMAS
from experiments._datasets import FederatedData
from experiments._errors import ExperimentError
from experiments._models import build_model

MODEL_FILE = "model.pt"
FORMAT = 1
PACKAGES = ("secagg-fl", "torch", "opacus", "tenseal", "web3", "numpy", "hydra-core")
REPO_ROOT = Path(__file__).resolve().parents[1]


class ModelFileError(ExperimentError, ValueError):
    """A ``model.pt`` cannot be read or does not follow the expected layout."""


def save_model(
    model: nn.Module, *, model_config: Any, data: FederatedData, dp_fix: bool | None, path: Path
) -> Path:
    """Write the model's state dict and its rebuild recipe to ``path`` (``model.pt``)."""
    if not dataclasses.is_dataclass(model_config) or isinstance(model_config, type):
        raise ExperimentError(f"model_config must be a model schema, got {model_config!r}")
    config = dataclasses.asdict(model_config)
    payload = {
        "format": FORMAT,
        "model": config,
        "dataset": data.name,
        "n_features": data.n_features,
        "n_classes": data.n_classes,
        "input_shape": list(data.input_shape),
        "dp_fix": dp_fix,  # None: not prepared for DP-SGD; else prepare_model(fix=...)
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    return path


def load_model(path: Path | str) -> nn.Module:
    """Rebuild the model saved by :func:`save_model` (in eval mode, on the CPU)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        config = dict(payload["model"])
        schema = MODEL_SCHEMAS[config["name"]]
    except (OSError, KeyError, TypeError, RuntimeError) as error:
        raise ModelFileError(f"{path} is not a model.pt written by a run: {error!r}") from error
    shape = FederatedData(
        name=payload["dataset"],
        clients=(),
        pooled_test=TensorDataset(torch.empty(0)),
        n_features=int(payload["n_features"]),
        n_classes=int(payload["n_classes"]),
        input_shape=tuple(payload["input_shape"]),
    )
    model = build_model(schema(**config), shape, seed=0)
    if payload["dp_fix"] is not None:
        from dp import prepare_model

        model = prepare_model(model, fix=bool(payload["dp_fix"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def _git(*args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def run_metadata(device: torch.device) -> dict[str, Any]:
    """``results.json``'s ``meta``: timestamp, versions, git commit, device."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked=no"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "device": {"type": device.type, "name": name or platform.machine()},
        "platform": platform.platform(),
    }
