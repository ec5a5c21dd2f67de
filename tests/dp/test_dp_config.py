"""DPConfig validation and the Hydra ``dp`` group (composed in-process)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dp import (
    DPConfig,
    DPError,
    DPSampleSchema,
    InvalidDPConfigError,
    UnsoundAccountantError,
    register_configs,
    to_dp_config,
    to_dp_setup,
)


def test_config_is_frozen_and_keyword_only() -> None:
    config = DPConfig(noise_multiplier=1.0)
    with pytest.raises(AttributeError):
        config.noise_multiplier = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        DPConfig(1.0)  # type: ignore[misc]
    assert config.poisson_sampling is True and config.accountant == "rdp"
    assert math.isinf(config.budget)
    assert DPConfig(target_epsilon=2.0).budget == 2.0
    assert DPConfig(target_epsilon=2.0, epsilon_budget=3.0).budget == 3.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(noise_multiplier=0.0), "noise_multiplier"),
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(noise_multiplier=math.inf), "noise_multiplier"),
        (dict(target_epsilon=0.0), "target_epsilon"),
        (dict(), "exactly one"),
        (dict(noise_multiplier=1.0, target_epsilon=1.0), "exactly one"),
        (dict(noise_multiplier=1.0, max_grad_norm=0.0), "max_grad_norm"),
        (dict(noise_multiplier=1.0, max_grad_norm=-2.0), "max_grad_norm"),
        (dict(noise_multiplier=1.0, delta=0.0), "delta"),
        (dict(noise_multiplier=1.0, delta=1.0), "delta"),
        (dict(noise_multiplier=1.0, accountant="moments"), "accountant"),
        (dict(noise_multiplier=1.0, epsilon_budget=-1.0), "epsilon_budget"),
        (dict(target_epsilon=3.0, epsilon_budget=1.0), "epsilon_budget"),
        (dict(noise_multiplier=1.0, poisson_sampling="yes"), "poisson_sampling"),
    ],
)
def test_bad_config_is_a_named_value_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidDPConfigError, match=field) as info:
        DPConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and isinstance(info.value, DPError)


def test_delta_must_be_below_one_over_n() -> None:
    config = DPConfig(noise_multiplier=1.0, delta=1e-3)
    config.validate_for(999)
    with pytest.raises(InvalidDPConfigError, match=r"delta must be < 1/n_records"):
        config.validate_for(1000)
    DPConfig(noise_multiplier=1.0, delta=1e-3, allow_large_delta=True).validate_for(1000)
    with pytest.raises(InvalidDPConfigError, match="n_records"):
        config.validate_for(0)


def _compose(overrides: list[str], config_dir: Path) -> object:
    store = ConfigStore.instance()
    register_configs(store)
    store.store(name="dp_test_root", node={"defaults": [{"dp": "off"}, "_self_"]})
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="dp_test_root", overrides=overrides)


@pytest.fixture(autouse=True)
def _clear_hydra() -> object:
    yield
    GlobalHydra.instance().clear()


def test_hydra_sample_group_with_overrides(tmp_path: Path) -> None:
    overrides = ["dp=sample", "dp.target_epsilon=1.0", "dp.delta=1e-5", "dp.accountant=prv"]
    cfg = _compose(overrides, tmp_path)
    setup = to_dp_setup(cfg.dp)  # type: ignore[attr-defined]
    assert setup.mode == "sample"
    assert setup.config == DPConfig(target_epsilon=1.0, delta=1e-5, accountant="prv")
    assert to_dp_config(OmegaConf.to_object(cfg.dp)) == setup.config  # type: ignore[attr-defined]


def test_hydra_client_group_and_off(tmp_path: Path) -> None:
    cfg = _compose(["dp=client", "dp.noise_multiplier=0.8", "dp.distributed=true"], tmp_path)
    setup = to_dp_setup(cfg.dp)  # type: ignore[attr-defined]
    assert setup.mode == "client" and setup.distributed
    assert setup.config is not None and setup.config.noise_multiplier == 0.8
    assert to_dp_setup(_compose([], tmp_path).dp).config is None  # type: ignore[attr-defined]


def test_hydra_errors_name_the_override(tmp_path: Path) -> None:
    cfg = _compose(["dp=sample", "dp.noise_multiplier=-1"], tmp_path)
    with pytest.raises(InvalidDPConfigError, match=r"^dp\.noise_multiplier must be > 0"):
        to_dp_setup(cfg.dp)  # type: ignore[attr-defined]
    with pytest.raises(InvalidDPConfigError, match=r"exactly one of dp\.noise_multiplier"):
        to_dp_setup(DPSampleSchema())
    with pytest.raises(InvalidDPConfigError, match=r"dp\.grad_sample_mode"):
        to_dp_setup(DPSampleSchema(noise_multiplier=1.0, grad_sample_mode="magic"))
    with pytest.raises(InvalidDPConfigError, match=r"dp\.max_grad_norm"):
        to_dp_setup({"name": "client", "noise_multiplier": 1.0, "max_grad_norm": 0})


def test_gdp_is_refused_as_the_accountant_of_a_claim(tmp_path: Path) -> None:
    with pytest.raises(UnsoundAccountantError, match="gdp"):
        DPConfig(noise_multiplier=1.0, accountant="gdp")  # type: ignore[arg-type]
    cfg = _compose(["dp=sample", "dp.noise_multiplier=1.0", "dp.accountant=gdp"], tmp_path)
    with pytest.raises(UnsoundAccountantError, match=r"^dp\.accountant 'gdp'"):
        to_dp_setup(cfg.dp)  # type: ignore[attr-defined]


def test_hydra_client_worst_case_fields(tmp_path: Path) -> None:
    overrides = [
        "dp=client",
        "dp.noise_multiplier=0.8",
        "dp.distributed=true",
        "dp.min_survivors=3",
        "dp.max_colluding_clients=1",
    ]
    setup = to_dp_setup(_compose(overrides, tmp_path).dp)  # type: ignore[attr-defined]
    assert setup.min_survivors == 3 and setup.max_colluding_clients == 1
    with pytest.raises(InvalidDPConfigError, match=r"dp\.max_colluding_clients"):
        to_dp_setup({"name": "client", "noise_multiplier": 1.0, "max_colluding_clients": -1})
    with pytest.raises(InvalidDPConfigError, match=r"dp\.min_survivors"):
        to_dp_setup({"name": "client", "noise_multiplier": 1.0, "min_survivors": 0})
