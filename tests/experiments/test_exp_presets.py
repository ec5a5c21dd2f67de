"""The experiment presets (``+experiment=...``) compose, validate and run one private round."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from experiments._config import (
    CNNConfig,
    HeartDiseaseConfig,
    LogRegConfig,
    MedMNISTConfig,
    ResNet18Config,
    RunConfig,
    validate,
)
from experiments._runner import run_experiment

ToRun = Callable[..., RunConfig]


@pytest.mark.parametrize(
    ("preset", "subset", "batch_size"),
    [("breastmnist", "breastmnist", 64), ("pneumoniamnist", "pneumoniamnist", 256)],
)
def test_imaging_presets_select_the_narrow_resnet_and_large_batches(
    run_cfg: ToRun, preset: str, subset: str, batch_size: int
) -> None:
    cfg = run_cfg(f"+experiment={preset}")
    validate(cfg)
    assert isinstance(cfg.dataset, MedMNISTConfig) and cfg.dataset.subset == subset
    assert cfg.model == ResNet18Config(width=16, groups=16)
    assert (cfg.federation.clients, cfg.federation.partition) == (5, "iid")
    assert cfg.federation.batch_size == batch_size and cfg.federation.optimizer == "adam"
    # Privacy stays the dp group's choice: the hardened default, or any override.
    assert cfg.dp.name == "sample" and cfg.dp.target_epsilon == 1.0
    assert run_cfg(f"+experiment={preset}", "dp.target_epsilon=8").dp.target_epsilon == 8.0
    assert run_cfg(f"+experiment={preset}", "dp=off").dp.name == "off"
    # The model group is still free: the published width, or the small CNN.
    assert run_cfg(f"+experiment={preset}", "model=resnet18").model == ResNet18Config()
    assert isinstance(run_cfg(f"+experiment={preset}", "model=cnn").model, CNNConfig)


def test_flamby_heart_preset_is_flambys_fedavg(run_cfg: ToRun) -> None:
    cfg = run_cfg("+experiment=flamby_heart", "dp=off")
    validate(cfg)
    assert isinstance(cfg.dataset, HeartDiseaseConfig) and isinstance(cfg.model, LogRegConfig)
    fed = cfg.federation
    assert (fed.clients, fed.rounds, fed.local_steps, fed.batch_size) == (4, 15, 100, 4)
    assert (fed.optimizer, fed.lr) == ("adam", 0.001)


@pytest.mark.slow
def test_breastmnist_preset_runs_a_private_round(medmnist_dir: object, run_cfg: ToRun) -> None:
    cfg = run_cfg(
        "+experiment=breastmnist",
        "model.width=4",
        "model.groups=4",
        "federation.rounds=1",
        "federation.local_steps=1",
        "dp.target_epsilon=8",
        "secagg=plain",
        "chain=none",
    )
    results = run_experiment(cfg, resolved_config={}, progress=False)
    (record,) = results.rounds
    assert 0.0 <= record.accuracy <= 1.0
    assert record.epsilon is not None and 7.0 < record.epsilon <= 8.0
