"""The experiment presets (``+experiment=...``) compose, validate and run one private round."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from experiments._config import (
    CNNConfig,
    HeartDiseaseConfig,
    LogRegConfig,
    MedMNISTConfig,
    RandomFeaturesConfig,
    ResNet18Config,
    RunConfig,
    validate,
)
from experiments._runner import run_experiment

ToRun = Callable[..., RunConfig]


@pytest.mark.parametrize(
    ("preset", "subset", "batch_size"),
    [("breastmnist", "breastmnist", 96), ("pneumoniamnist", "pneumoniamnist", 256)],
)
def test_imaging_presets_select_random_features_sgd_and_large_batches(
    run_cfg: ToRun, preset: str, subset: str, batch_size: int
) -> None:
    cfg = run_cfg(f"+experiment={preset}")
    validate(cfg)
    assert isinstance(cfg.dataset, MedMNISTConfig) and cfg.dataset.subset == subset
    assert cfg.model == RandomFeaturesConfig()
    assert (cfg.federation.clients, cfg.federation.partition) == (5, "iid")
    fed = cfg.federation
    assert fed.batch_size == batch_size
    assert (fed.optimizer, fed.lr, fed.lr_schedule) == ("sgd", 2.0, "cosine")
    # Privacy stays the dp group's choice: the hardened default, or any override.
    assert cfg.dp.name == "sample" and cfg.dp.target_epsilon == 1.0
    assert run_cfg(f"+experiment={preset}", "dp.target_epsilon=8").dp.target_epsilon == 8.0
    assert run_cfg(f"+experiment={preset}", "dp=off").dp.name == "off"
    # The model group is still free: the narrow or published ResNet, or the small CNN.
    assert run_cfg(f"+experiment={preset}", "model=resnet18").model == ResNet18Config()
    narrow = run_cfg(f"+experiment={preset}", "model=resnet18_w16").model
    assert narrow == ResNet18Config(width=16, groups=16)
    assert isinstance(run_cfg(f"+experiment={preset}", "model=cnn").model, CNNConfig)


@pytest.mark.parametrize(
    ("preset", "subset", "rounds", "local_epochs", "batch_size", "smoothing"),
    [
        ("breastmnist_nonprivate", "breastmnist", 30, 4, 32, 0.1),
        ("pneumoniamnist_nonprivate", "pneumoniamnist", 20, 1, 64, 0.0),
    ],
)
def test_nonprivate_imaging_presets_train_the_cnn_with_augmentation_and_adam(
    run_cfg: ToRun,
    preset: str,
    subset: str,
    rounds: int,
    local_epochs: int,
    batch_size: int,
    smoothing: float,
) -> None:
    cfg = run_cfg(f"+experiment={preset}")
    validate(cfg)
    assert isinstance(cfg.dataset, MedMNISTConfig) and cfg.dataset.subset == subset
    assert cfg.dataset.eval_split == "test"
    assert cfg.dp.name == "off"
    assert cfg.model == CNNConfig(channels=[32, 64, 128], groups=8, hidden=128)
    fed = cfg.federation
    assert (fed.clients, fed.partition, fed.strategy) == (5, "iid", "fedavg")
    assert (fed.rounds, fed.local_steps, fed.local_epochs) == (rounds, None, local_epochs)
    assert (fed.optimizer, fed.lr, fed.lr_schedule) == ("adam", 0.001, "cosine")
    assert (fed.batch_size, fed.augmult) == (batch_size, 1)
    assert (fed.label_smoothing, fed.eval_tta) == (smoothing, False)
    # Hyperparameters are chosen on the val split; the model group stays free.
    assert run_cfg(f"+experiment={preset}", "dataset.eval_split=val").dataset.eval_split == "val"
    narrow = run_cfg(f"+experiment={preset}", "model=resnet18_w16").model
    assert narrow == ResNet18Config(width=16, groups=16)


def test_cnn_medmnist_model_is_the_nonprivate_presets_cnn(run_cfg: ToRun) -> None:
    cfg = run_cfg("dataset=medmnist", "model=cnn_medmnist")
    validate(cfg)
    assert cfg.model == CNNConfig(channels=[32, 64, 128], groups=8, hidden=128)


def test_flamby_heart_preset_is_flambys_fedavg(run_cfg: ToRun) -> None:
    cfg = run_cfg("+experiment=flamby_heart", "dp=off")
    validate(cfg)
    assert isinstance(cfg.dataset, HeartDiseaseConfig) and isinstance(cfg.model, LogRegConfig)
    fed = cfg.federation
    assert (fed.clients, fed.rounds, fed.local_steps, fed.batch_size) == (4, 15, 100, 4)
    assert (fed.optimizer, fed.lr) == ("adam", 0.001)


@pytest.mark.slow
@pytest.mark.parametrize("augmult", [0, 2])
def test_breastmnist_preset_runs_a_private_round(
    medmnist_dir: object, run_cfg: ToRun, augmult: int
) -> None:
    cfg = run_cfg(
        "+experiment=breastmnist",
        "model.filters=4",
        f"federation.augmult={augmult}",
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


@pytest.mark.slow
@pytest.mark.parametrize("dp", ["off", "sample"])
def test_breastmnist_nonprivate_preset_runs_a_round_and_its_cnn_trains_under_dp(
    medmnist_dir: object, run_cfg: ToRun, dp: str
) -> None:
    overrides = [
        "+experiment=breastmnist_nonprivate",
        "federation.rounds=1",
        "federation.local_epochs=1",
        "secagg=plain",
        "chain=none",
    ]
    if dp == "sample":  # the same CNN is Opacus-valid: it also trains with DP-SGD
        # (label smoothing is the plain trainer's: DP-SGD trains with its own loss)
        overrides += ["dp=sample", "dp.target_epsilon=8", "federation.label_smoothing=0"]
    results = run_experiment(run_cfg(*overrides), resolved_config={}, progress=False)
    (record,) = results.rounds
    assert 0.0 <= record.accuracy <= 1.0
    if dp == "sample":
        assert record.epsilon is not None and 7.0 < record.epsilon <= 8.0
    else:
        assert record.epsilon is None
