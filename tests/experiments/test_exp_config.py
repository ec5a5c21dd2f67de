"""Config composition of every group through Hydra's compose API, and validation errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from experiments._config import (
    BreastCancerConfig,
    FederationConfig,
    LogRegConfig,
    MLPConfig,
    RunConfig,
    SyntheticConfig,
    validate,
)
from experiments._errors import ConfigError
from experiments._runner import check_supported

Compose = Callable[..., DictConfig]
ToRun = Callable[..., RunConfig]


def _options(group: str) -> list[str]:
    return sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list(group))


def test_defaults_are_the_hardened_run_on_breast_cancer(run_cfg: ToRun) -> None:
    cfg = run_cfg()
    assert isinstance(cfg.dataset, BreastCancerConfig)
    assert isinstance(cfg.model, LogRegConfig)
    assert isinstance(cfg.federation, FederationConfig)
    assert (cfg.dp.name, cfg.secagg.name, cfg.chain.name) == ("sample", "ckks", "inprocess")
    assert (cfg.dp.target_epsilon, cfg.dp.delta) == (1.0, 1e-5)
    plain = run_cfg("dp=off", "secagg=plain", "chain=none")
    assert (plain.dp.name, plain.secagg.name, plain.chain.name) == ("off", "plain", "none")
    assert cfg.federation.clients == 5 and cfg.federation.rounds >= 10
    validate(cfg)


@pytest.mark.parametrize("group", ["dataset", "model", "dp", "secagg", "chain"])
def test_every_registered_option_composes(group: str, compose_cfg: Compose) -> None:
    options = _options(group)
    assert options
    for option in options:
        converted = OmegaConf.to_object(compose_cfg(f"{group}={option}"))
        assert isinstance(converted, RunConfig)
        assert getattr(converted, group).name == option


def test_federation_presets_compose(run_cfg: ToRun) -> None:
    heart = run_cfg("dataset=heart_disease", "federation=heart_disease")
    assert heart.federation.clients == 4 and heart.federation.optimizer == "adam"
    validate(heart)
    assert run_cfg("federation=default").federation == FederationConfig()


def test_the_documented_overrides_work_as_written(run_cfg: ToRun) -> None:
    cfg = run_cfg(
        "federation.clients=3",
        "federation.rounds=2",
        "federation.seed=1",
        "dataset=synthetic",
        "dataset.n_features=20",
        "dataset.n_samples=500",
        "model=mlp",
        "model.hidden=[32,16]",
    )
    assert isinstance(cfg.dataset, SyntheticConfig) and isinstance(cfg.model, MLPConfig)
    assert (cfg.federation.clients, cfg.federation.rounds, cfg.federation.seed) == (3, 2, 1)
    assert (cfg.dataset.n_features, cfg.dataset.n_samples) == (20, 500)
    assert cfg.model.hidden == [32, 16]
    validate(cfg)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["federation.rounds=0"], "federation.rounds"),
        (["federation.clients=0"], "federation.clients"),
        (["federation.client_fraction=1.5"], "federation.client_fraction"),
        (["federation.client_fraction=0"], "federation.client_fraction"),
        (["federation.local_epochs=0"], "federation.local_epochs"),
        (["federation.local_steps=0"], "federation.local_steps"),
        (["federation.optimizer=rmsprop"], "federation.optimizer"),
        (["federation.lr=0"], "federation.lr"),
        (["federation.batch_size=0"], "federation.batch_size"),
        (["federation.partition=shards"], "federation.partition"),
        (["federation.alpha=0"], "federation.alpha"),
        (["federation.dropout=1.0"], "federation.dropout"),
        (["federation.seed=-1"], "federation.seed"),
        (["federation.device=tpu"], "federation.device"),
        (["dataset.test_fraction=1.0"], "dataset.test_fraction"),
        (["dataset=synthetic", "dataset.n_informative=30"], "dataset.n_informative"),
        (["dataset=synthetic", "dataset.n_classes=1"], "dataset.n_classes"),
        (["dataset=medmnist", "dataset.subset=chestmnist"], "dataset.subset"),
        (["dataset=heart_disease"], "federation.clients"),
        (["model=mlp", "model.hidden=[]"], "model.hidden"),
        (["model=mlp", "model.hidden=[8,0]"], "model.hidden[1]"),
        (["model=cnn", "dataset=medmnist", "model.groups=5"], "model.channels[0]"),
        (["model=cnn"], "model=cnn"),
        (["dataset.name=imagenet"], "dataset.name"),
    ],
)
def test_bad_values_fail_naming_the_field(overrides: list[str], field: str, run_cfg: ToRun) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(run_cfg(*overrides))
    assert field in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("override", "named"),
    [("dataset=imagenet", "dataset/imagenet"), ("federation.rounds=many", "federation.rounds")],
)
def test_unknown_options_and_wrong_types_fail_at_composition(
    override: str, named: str, compose_cfg: Compose
) -> None:
    with pytest.raises(HydraException) as caught:
        compose_cfg(override)
    assert named in str(caught.value)


def test_unknown_fields_fail_at_composition(compose_cfg: Compose) -> None:
    with pytest.raises(HydraException, match="n_features"):
        compose_cfg("dataset.n_features=3")  # breast_cancer has no n_features


def test_layers_not_wired_in_are_refused(run_cfg: ToRun) -> None:
    cfg = run_cfg()
    check_supported(cfg)
    # central dp=client noise needs a single releasing party (refused with a committee)
    cfg.secagg.committee_size = cfg.secagg.committee_threshold = 1
    for wired in ("sample", "client"):
        cfg.dp.name = wired
        check_supported(cfg)
    cfg.dp.name = "local"
    with pytest.raises(ConfigError, match="dp"):
        check_supported(cfg)
