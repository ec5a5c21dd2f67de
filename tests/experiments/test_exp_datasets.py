"""Loaders: FLamby's Fed-Heart-Disease counts, checksums, missing data, partitioned sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments._config import (
    BreastCancerConfig,
    FederationConfig,
    HeartDiseaseConfig,
    MedMNISTConfig,
    SyntheticConfig,
)
from experiments._datasets import (
    DATA_DIR_ENV,
    HEART_DISEASE_SHA256,
    load_breast_cancer_data,
    load_heart_disease_data,
    load_medmnist_data,
    load_synthetic_data,
    resolve_data_dir,
)
from experiments._errors import ChecksumError, DatasetNotFoundError

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
        HeartDiseaseConfig(data_dir=str(heart_dir)), FederationConfig(clients=4), _rng()
    )
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
