"""Shared fixtures of the experiments tests: Hydra composition and data locations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from experiments._config import RunConfig, register_configs
from experiments._datasets import HEART_DISEASE_HOWTO, MEDMNIST_HOWTO, resolve_data_dir
from experiments._errors import DatasetNotFoundError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"

register_configs()


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """Compose ``conf/config.yaml`` with overrides through Hydra's compose API."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):

        def _compose(*overrides: str) -> DictConfig:
            return compose(config_name="config", overrides=list(overrides))

        yield _compose


@pytest.fixture
def run_cfg(compose_cfg: Callable[..., DictConfig]) -> Callable[..., RunConfig]:
    """Compose and convert to a typed :class:`RunConfig`."""

    def _run_cfg(*overrides: str) -> RunConfig:
        converted = OmegaConf.to_object(compose_cfg(*overrides))
        assert isinstance(converted, RunConfig)
        return converted

    return _run_cfg


def _data_dir(subfolder: str, howto: str) -> Path:
    try:
        return resolve_data_dir(None, subfolder, howto)
    except DatasetNotFoundError as error:
        pytest.skip(f"shared data not present: {error}")


@pytest.fixture
def heart_dir() -> Path:
    """The shared heart_disease folder (skips when the shared data is absent)."""
    return _data_dir("heart_disease", HEART_DISEASE_HOWTO)


@pytest.fixture
def medmnist_dir() -> Path:
    """The shared medmnist folder (skips when the shared data is absent)."""
    return _data_dir("medmnist", MEDMNIST_HOWTO)
