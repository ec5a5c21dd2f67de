"""Loaders: FLamby's Fed-Heart-Disease counts, checksums, missing data, partitioned sets,
and public pre-processing that keeps DP-SGD's clipped-sum sensitivity at ``2C``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import experiments._datasets as datasets_module
from experiments._config import (
    BreastCancerConfig,
    FederationConfig,
    HeartDiseaseConfig,
    MedMNISTConfig,
    RunConfig,
    SyntheticConfig,
    validate,
)
from experiments._datasets import (
    BREAST_CANCER_RANGES,
    DATA_DIR_ENV,
    HEART_DISEASE_RANGES,
    HEART_DISEASE_SHA256,
    FederatedData,
    load_breast_cancer_data,
    load_dataset,
    load_heart_disease_data,
    load_medmnist_data,
    load_synthetic_data,
    resolve_data_dir,
)
from experiments._errors import ChecksumError, ConfigError, DatasetNotFoundError

HEART_COUNTS = {
    "cleveland": (199, 104),
    "hungarian": (172, 89),
    "switzerland": (30, 16),
    "va": (85, 45),
}


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_heart_disease_matches_flamby_counts_and_features(heart_dir: Path) -> None:
    data = load_heart_disease_data(
        HeartDiseaseConfig(data_dir=str(heart_dir)),
        FederationConfig(clients=4),
        _rng(),
        preprocessing="per_client",
    )
    assert data.preprocessing == "per_client"
    assert data.client_names == tuple(HEART_COUNTS)
    assert data.n_features == 13 and data.n_classes == 2
    for client in data.clients:
        assert (len(client.train), len(client.test)) == HEART_COUNTS[client.name]
        x_train, y_train = client.train.tensors
        assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
        assert x_train.shape[1] == 13 and client.test.tensors[0].shape[1] == 13
        assert set(torch.unique(y_train).tolist()) <= {0, 1}
        # z-scored with the center's own training statistics: zero mean on train.
        assert torch.allclose(x_train.mean(dim=0), torch.zeros(13), atol=1e-4)
    assert len(data.pooled_test) == sum(test for _, test in HEART_COUNTS.values())
    # The one-hot columns (cp: 3, restecg: 2) are the last five and were 0/1 before scaling.
    cleveland = data.clients[0].train.tensors[0]
    assert all(len(torch.unique(cleveland[:, c])) <= 2 for c in range(8, 13))


def test_heart_disease_is_independent_of_the_run_seed(heart_dir: Path) -> None:
    cfg = HeartDiseaseConfig(data_dir=str(heart_dir))
    first = load_heart_disease_data(cfg, FederationConfig(clients=4), np.random.default_rng(1))
    second = load_heart_disease_data(cfg, FederationConfig(clients=4), np.random.default_rng(2))
    for a, b in zip(first.clients, second.clients, strict=True):
        assert torch.equal(a.train.tensors[0], b.train.tensors[0])


def _copy_heart(heart_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in HEART_DISEASE_SHA256:
        shutil.copy(heart_dir / name, target / name)
    return target


def test_tampered_heart_file_fails_its_checksum(heart_dir: Path, tmp_path: Path) -> None:
    copy = _copy_heart(heart_dir, tmp_path / "heart_disease")
    path = copy / "processed.va.data"
    text = path.read_text()
    path.write_text(text.replace("63", "64", 1))
    with pytest.raises(ChecksumError, match=r"processed\.va\.data"):
        load_heart_disease_data(
            HeartDiseaseConfig(data_dir=str(copy)), FederationConfig(clients=4), _rng()
        )
    # The tampered copy still parses: the checksum is what caught it.
    load_heart_disease_data(
        HeartDiseaseConfig(data_dir=str(copy), verify_checksums=False),
        FederationConfig(clients=4),
        _rng(),
    )


def test_missing_heart_file_names_the_path_and_the_source(heart_dir: Path, tmp_path: Path) -> None:
    copy = _copy_heart(heart_dir, tmp_path / "heart_disease")
    (copy / "processed.hungarian.data").unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        load_heart_disease_data(
            HeartDiseaseConfig(data_dir=str(copy)), FederationConfig(clients=4), _rng()
        )
    message = str(caught.value)
    assert str(copy / "processed.hungarian.data") in message
    assert "archive.ics.uci.edu" in message and "dataset.data_dir" in message


def test_data_dir_comes_from_the_environment_variable(
    heart_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_heart(heart_dir, tmp_path / "heart_disease")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir(None, "heart_disease", "") == tmp_path / "heart_disease"
    assert resolve_data_dir("/elsewhere", "heart_disease", "") == Path("/elsewhere")
    data = load_heart_disease_data(HeartDiseaseConfig(), FederationConfig(clients=4), _rng())
    assert len(data.clients) == 4


def test_medmnist_partitions_the_official_splits(medmnist_dir: Path) -> None:
    data = load_medmnist_data(
        MedMNISTConfig(subset="breastmnist", data_dir=str(medmnist_dir)),
        FederationConfig(clients=3),
        _rng(),
    )
    assert data.input_shape == (1, 28, 28) and data.n_classes == 2
    assert sum(len(c.train) for c in data.clients) == 546
    assert len(data.pooled_test) == 156
    images = data.clients[0].train.tensors[0]
    assert images.shape[1:] == (1, 28, 28)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_medmnist_eval_split_val_evaluates_on_the_official_val_split(
    medmnist_dir: Path,
) -> None:
    def load(split: str) -> FederatedData:
        return load_medmnist_data(
            MedMNISTConfig(subset="breastmnist", data_dir=str(medmnist_dir), eval_split=split),
            FederationConfig(clients=3),
            _rng(),
        )

    test, val = load("test"), load("val")
    with np.load(medmnist_dir / "breastmnist.npz") as archive:
        val_pixels = archive["val_images"].astype(np.float32) / 255.0
    assert len(val.pooled_test) == len(val_pixels) == 78
    # the pooled evaluation set is the val split, image for image (dealt in another order)
    pooled = val.pooled_test.tensors[0].numpy().reshape(-1, 28 * 28)
    order = np.lexsort(pooled.T)
    expected = val_pixels.reshape(-1, 28 * 28)
    assert np.array_equal(pooled[order], expected[np.lexsort(expected.T)])
    # training data does not depend on the evaluation split
    for a, b in zip(test.clients, val.clients, strict=True):
        assert torch.equal(a.train.tensors[0], b.train.tensors[0])


def _image_rows(images: torch.Tensor | np.ndarray) -> list[bytes]:
    pixels = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    return sorted(row.tobytes() for row in pixels)


def test_medmnist_cv_folds_evaluate_every_train_and_val_image_once(medmnist_dir: Path) -> None:
    def load(fold: int, seed: int = 0) -> FederatedData:
        return load_medmnist_data(
            MedMNISTConfig(
                subset="breastmnist", data_dir=str(medmnist_dir), eval_split="cv", cv_fold=fold
            ),
            FederationConfig(clients=3),
            np.random.default_rng(seed),
        )

    with np.load(medmnist_dir / "breastmnist.npz") as archive:
        pool = np.concatenate([archive["train_images"], archive["val_images"]])
        pool_labels = np.concatenate([archive["train_labels"], archive["val_labels"]]).ravel()
    folds = [load(fold) for fold in range(5)]
    held_out: list[bytes] = []
    for data in folds:
        evaluated = _image_rows(data.pooled_test.tensors[0])
        trained = _image_rows(torch.cat([c.train.tensors[0] for c in data.clients]))
        assert len(evaluated) + len(trained) == len(pool) == 624
        assert not set(evaluated) & set(trained)  # a fold never trains on what it evaluates
        # stratified: each fold's positive share is the pool's to within one image
        share = float(data.pooled_test.tensors[1].float().mean())
        assert abs(share - pool_labels.mean()) <= 1.0 / len(evaluated)
        held_out += evaluated
    # over the folds, every train and val image is evaluated exactly once (and nothing else:
    # the official test split is not read)
    assert sorted(held_out) == _image_rows(pool.astype(np.float32) / 255.0)
    # the folds do not depend on the training seed
    other_seed = load(2, seed=7)
    assert _image_rows(other_seed.pooled_test.tensors[0]) == _image_rows(
        folds[2].pooled_test.tensors[0]
    )


def test_medmnist_eval_split_is_validated(run_cfg: Callable[..., RunConfig]) -> None:
    validate(run_cfg("dataset=medmnist", "dataset.eval_split=val"))
    validate(run_cfg("dataset=medmnist", "dataset.eval_split=cv", "dataset.cv_fold=4"))
    cfg = run_cfg("dataset=medmnist")
    cfg.dataset.eval_split = "train"
    with pytest.raises(ConfigError, match=r"dataset\.eval_split"):
        validate(cfg)
    for field, value, expected in (
        ("cv_fold", 5, r"dataset\.cv_fold.*< dataset\.cv_folds \(5\)"),
        ("cv_fold", -1, r"dataset\.cv_fold"),
        ("cv_folds", 1, r"dataset\.cv_folds.*>= 2"),
    ):
        cfg = run_cfg("dataset=medmnist", "dataset.eval_split=cv")
        setattr(cfg.dataset, field, value)
        with pytest.raises(ConfigError, match=expected):
            validate(cfg)


def test_missing_medmnist_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"pneumoniamnist\.npz.*medmnist"):
        load_medmnist_data(
            MedMNISTConfig(subset="pneumoniamnist", data_dir=str(tmp_path)),
            FederationConfig(),
            _rng(),
        )


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity"])
def test_breast_cancer_keeps_every_sample_once(scheme: str) -> None:
    fed = FederationConfig(clients=4, partition=scheme, alpha=1.0)
    data = load_breast_cancer_data(BreastCancerConfig(), fed, _rng())
    assert data.n_features == 30 and len(data.clients) == 4
    assert sum(len(c.train) + len(c.test) for c in data.clients) == 569
    assert len(data.pooled_test) == sum(len(c.test) for c in data.clients)
    for client in data.clients:
        assert len(client.train) > 0 and len(client.test) > 0


def test_synthetic_has_the_requested_shape() -> None:
    cfg = SyntheticConfig(n_samples=300, n_features=7, n_classes=3, n_informative=4)
    data = load_synthetic_data(cfg, FederationConfig(clients=3), _rng())
    assert data.n_features == 7 and data.n_classes == 3
    assert sum(len(c.train) + len(c.test) for c in data.clients) == 300
    assert data.clients[0].train.tensors[0].shape[1] == 7


# ----------------------------------------------------------------- public pre-processing


def _clipped_gradient_sum(
    features: torch.Tensor, labels: torch.Tensor, *, clip: float, seed: int = 0
) -> np.ndarray:
    """Sum over the records of the per-record cross-entropy gradients of a fixed logistic
    regression, each clipped to L2 norm ``clip``: what DP-SGD adds noise to (batch = all)."""
    x = features.numpy().astype(np.float64)
    y = labels.numpy()
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(2, x.shape[1]))
    bias = rng.normal(size=2)
    logits = x @ weights.T + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    residual = probs.copy()
    residual[np.arange(len(y)), y] -= 1.0
    grads = np.concatenate(
        [(residual[:, :, None] * x[:, None, :]).reshape(len(y), -1), residual], axis=1
    )
    norms = np.linalg.norm(grads, axis=1, keepdims=True)
    clipped: np.ndarray = (grads * np.minimum(1.0, clip / np.maximum(norms, 1e-12))).sum(axis=0)
    return clipped


def _replace_first_cleveland_record(directory: Path) -> None:
    """Replace one record (same label, so the same split) by an outlier: any record is a
    valid neighbour, a typo included."""
    path = directory / "processed.cleveland.data"
    lines = path.read_text().splitlines()
    cells = lines[0].split(",")
    cells[0], cells[3], cells[4], cells[7], cells[9] = "100.0", "300.0", "20000.0", "250.0", "60"
    path.write_text("\n".join([",".join(cells), *lines[1:]]) + "\n")


@pytest.mark.parametrize(("preprocessing", "blows_up"), [("per_client", True), ("public", False)])
def test_replacing_one_heart_record_moves_the_clipped_sum_by_at_most_2c_only_when_public(
    heart_dir: Path, tmp_path: Path, preprocessing: str, blows_up: bool
) -> None:
    clip = 1.0
    copy = _copy_heart(heart_dir, tmp_path / "heart_disease")
    cfg = HeartDiseaseConfig(data_dir=str(copy), verify_checksums=False)
    fed = FederationConfig(clients=4)
    before = load_heart_disease_data(cfg, fed, _rng(), preprocessing=preprocessing)
    _replace_first_cleveland_record(copy)
    after = load_heart_disease_data(cfg, fed, _rng(), preprocessing=preprocessing)
    x_before, y_before = before.clients[0].train.tensors
    x_after, y_after = after.clients[0].train.tensors
    assert torch.equal(y_before, y_after)
    changed_rows = int((x_before != x_after).any(dim=1).sum())
    change = float(
        np.linalg.norm(
            _clipped_gradient_sum(x_before, y_before, clip=clip)
            - _clipped_gradient_sum(x_after, y_after, clip=clip)
        )
    )
    if blows_up:  # per-client z-scores: one record moves every record, sensitivity >> 2C
        assert changed_rows == len(y_before)
        assert change > 2 * clip
    else:
        assert changed_rows == 1
        assert 0 < change <= 2 * clip


@pytest.mark.parametrize(("preprocessing", "blows_up"), [("per_client", True), ("public", False)])
def test_replacing_one_breast_cancer_record_keeps_the_sensitivity_only_when_public(
    monkeypatch: pytest.MonkeyPatch, preprocessing: str, blows_up: bool
) -> None:
    clip = 1.0
    original = datasets_module.load_breast_cancer()
    fed = FederationConfig(clients=4)
    # A record of client 0's training set: public scaling is row by row, so its row is
    # found by value (each record's scaled row is unique).
    public_rows = load_breast_cancer_data(BreastCancerConfig(), fed, _rng()).clients[0].train
    scaled = torch.from_numpy(
        datasets_module.scale_to_range(original.data, BREAST_CANCER_RANGES).astype(np.float32)
    )
    target = next(
        index
        for index, row in enumerate(scaled)
        if (row == public_rows.tensors[0]).all(dim=1).any()
    )
    before = load_breast_cancer_data(BreastCancerConfig(), fed, _rng(), preprocessing=preprocessing)
    x_before, y_before = before.clients[0].train.tensors
    neighbour = original.data.copy()
    neighbour[target] = original.data[target] * 50.0  # same label, far-off values
    bunch = type(original)(data=neighbour, target=original.target)
    monkeypatch.setattr(datasets_module, "load_breast_cancer", lambda: bunch)
    after = load_breast_cancer_data(BreastCancerConfig(), fed, _rng(), preprocessing=preprocessing)
    x_after, y_after = after.clients[0].train.tensors
    assert torch.equal(y_before, y_after)
    change = float(
        np.linalg.norm(
            _clipped_gradient_sum(x_before, y_before, clip=clip)
            - _clipped_gradient_sum(x_after, y_after, clip=clip)
        )
    )
    changed_rows = int((x_before != x_after).any(dim=1).sum())
    if blows_up:
        assert changed_rows == len(y_before) and change > 2 * clip
    else:
        assert changed_rows == 1 and 0 < change <= 2 * clip


def test_public_heart_features_are_the_documented_ranges_row_by_row(heart_dir: Path) -> None:
    data = load_heart_disease_data(
        HeartDiseaseConfig(data_dir=str(heart_dir)), FederationConfig(clients=4), _rng()
    )
    assert data.preprocessing == "public" and data.n_features == len(HEART_DISEASE_RANGES) == 13
    for client in data.clients:
        for split in (client.train, client.test):
            x = split.tensors[0]
            assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    # A 63-year-old (0.26 in [-1, 1] over 0-100 years) is the first Cleveland record.
    first = data.clients[0]
    rows = torch.cat([first.train.tensors[0], first.test.tensors[0]])
    assert bool(torch.isclose(rows[:, 0], torch.tensor(0.26)).any())


def test_unknown_preprocessing_is_refused() -> None:
    with pytest.raises(ConfigError, match="preprocessing"):
        load_dataset(BreastCancerConfig(), FederationConfig(), _rng(), preprocessing="global")
