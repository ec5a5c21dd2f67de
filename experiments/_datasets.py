"""Federated datasets for experiments: real medical data first, synthetic for benchmarks.

Each loader returns a :class:`FederatedData`: per client a train and a test
``TensorDataset`` (X float32, y int64 class index), the pooled test set (the union of the
clients' test sets), and metadata. Files read from disk are checked against pinned
sha256 checksums; a missing file fails naming the path and how to obtain it.

Privacy assumption: features are standardised with each client's *own* training
statistics (as FLamby does), so no statistic of one site's data reaches another site.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from experiments._config import (
    BreastCancerConfig,
    FederationConfig,
    HeartDiseaseConfig,
    MedMNISTConfig,
    SyntheticConfig,
)
from experiments._errors import ChecksumError, ConfigError, DatasetNotFoundError
from experiments._fetch import DATA_DIR_ENV, DATASET_SOURCES, cache_dir, matches_known_version
from experiments._partition import iid_partition, partition

REPO_ROOT = Path(__file__).resolve().parents[1]

# The sha256 of each accepted copy (experiments/_fetch.py pins them, with the published md5).
HEART_DISEASE_SHA256 = {
    spec.name: spec.sha256[0] for spec in DATASET_SOURCES["heart_disease"].files
}
# FLamby's center order: cleveland=0, hungarian=1, switzerland=2, va=3.
HEART_DISEASE_CENTERS = ("cleveland", "hungarian", "switzerland", "va")
HEART_DISEASE_HOWTO = (
    "run `secagg data fetch heart_disease` (downloads the UCI Heart Disease "
    "'processed.<center>.data' files from https://archive.ics.uci.edu/dataset/45/heart+disease; "
    "`--from DIR` imports copies you have), or point dataset.data_dir or "
    f"${DATA_DIR_ENV} (its heart_disease/ subfolder) at a folder holding them"
)
MEDMNIST_SHA256 = {
    subset: DATASET_SOURCES[subset].files[0].sha256[0]
    for subset in ("breastmnist", "pneumoniamnist")
}
MEDMNIST_HOWTO = (
    "run `secagg data fetch <subset>` (downloads '<subset>.npz', 28x28, from MedMNIST v2, "
    "https://medmnist.com, https://zenodo.org/records/10519652; `--from DIR` imports a copy "
    "you have), or point dataset.data_dir or "
    f"${DATA_DIR_ENV} (its medmnist/ subfolder) at its folder"
)


@dataclass(frozen=True)
class ClientData:
    """One client's local data: a training set and a held-out test set."""

    name: str
    train: TensorDataset
    test: TensorDataset

    @property
    def n_train(self) -> int:
        return len(self.train)


@dataclass(frozen=True)
class FederatedData:
    """Every client's data, the pooled test set, and the shape of the task."""

    name: str
    clients: tuple[ClientData, ...]
    pooled_test: TensorDataset
    n_features: int
    n_classes: int
    input_shape: tuple[int, ...]

    @property
    def client_names(self) -> tuple[str, ...]:
        return tuple(client.name for client in self.clients)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _verify(path: Path, expected: str, howto: str) -> None:
    """Accept the pinned copy (``expected``) or any published version ``_fetch`` knows."""
    actual = sha256_file(path)
    if actual != expected and not matches_known_version(path):
        raise ChecksumError(
            f"{path} has sha256 {actual}, expected {expected} or the publisher's checksum: "
            f"the file is corrupt or not the published version; {howto}"
        )


def resolve_data_dir(configured: str | None, subfolder: str, howto: str) -> Path:
    """The data folder, first that applies: ``configured`` (``dataset.data_dir``);
    ``$SECAGG_DATA_DIR/<subfolder>``; the per-user cache ``<cache>/<subfolder>`` that
    ``secagg data fetch`` fills, when it exists; a ``../shared/data/<subfolder>`` beside the
    repository (or the working directory), when it exists."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser() / subfolder
    candidates = [
        cache_dir() / subfolder,
        REPO_ROOT.parent / "shared" / "data" / subfolder,
        Path.cwd().parent / "shared" / "data" / subfolder,
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetNotFoundError(
        f"no data folder for '{subfolder}': dataset.data_dir and ${DATA_DIR_ENV} are unset "
        f"and none of {', '.join(str(c) for c in candidates)} exists; " + howto
    )


def _require(path: Path, howto: str) -> Path:
    if not path.is_file():
        raise DatasetNotFoundError(f"missing data file {path}; {howto}")
    return path


def _tensor_dataset(features: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
    )


def _pooled(clients: Sequence[ClientData]) -> TensorDataset:
    features = torch.cat([client.test.tensors[0] for client in clients])
    labels = torch.cat([client.test.tensors[1] for client in clients])
    return TensorDataset(features, labels)


def _can_stratify(labels: np.ndarray, test_fraction: float) -> bool:
    _, counts = np.unique(labels, return_counts=True)
    n_test = int(np.ceil(test_fraction * len(labels)))
    n_classes = len(counts)
    return (
        n_classes > 1
        and bool(np.all(counts >= 2))
        and n_classes <= n_test <= len(labels) - n_classes
    )


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def _tabular_clients(
    features: np.ndarray,
    labels: np.ndarray,
    fed: FederationConfig,
    rng: np.random.Generator,
    *,
    test_fraction: float,
    standardize: bool,
) -> tuple[ClientData, ...]:
    """Partition samples across clients, then split each client into train and test."""
    parts = partition(fed.partition, labels, fed.clients, rng, alpha=fed.alpha, min_size=2)
    clients = []
    for index, part in enumerate(parts):
        x_local, y_local = features[part], labels[part]
        stratify = y_local if _can_stratify(y_local, test_fraction) else None
        x_train, x_test, y_train, y_test = train_test_split(
            x_local,
            y_local,
            test_size=test_fraction,
            random_state=int(rng.integers(2**31 - 1)),
            stratify=stratify,
        )
        if standardize:
            x_train, x_test = _standardize(x_train, x_test)
        clients.append(
            ClientData(
                name=f"client_{index}",
                train=_tensor_dataset(x_train, y_train),
                test=_tensor_dataset(x_test, y_test),
            )
        )
    return tuple(clients)


def load_breast_cancer_data(
    cfg: BreastCancerConfig, fed: FederationConfig, rng: np.random.Generator
) -> FederatedData:
    """Wisconsin Diagnostic Breast Cancer from scikit-learn, split across K hospitals."""
    bunch = load_breast_cancer()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    clients = _tabular_clients(
        features,
        labels,
        fed,
        rng,
        test_fraction=cfg.test_fraction,
        standardize=cfg.standardize,
    )
    return FederatedData(
        name="breast_cancer",
        clients=clients,
        pooled_test=_pooled(clients),
        n_features=features.shape[1],
        n_classes=2,
        input_shape=(features.shape[1],),
    )


def load_synthetic_data(
    cfg: SyntheticConfig, fed: FederationConfig, rng: np.random.Generator
) -> FederatedData:
    """A seeded ``make_classification`` task of any size, split across K clients."""
    features, labels = make_classification(
        n_samples=cfg.n_samples,
        n_features=cfg.n_features,
        n_informative=cfg.n_informative,
        n_redundant=0,
        n_repeated=0,
        n_classes=cfg.n_classes,
        n_clusters_per_class=1,
        random_state=int(rng.integers(2**31 - 1)),
    )
    clients = _tabular_clients(
        features,
        labels.astype(np.int64),
        fed,
        rng,
        test_fraction=cfg.test_fraction,
        standardize=True,
    )
    return FederatedData(
        name="synthetic",
        clients=clients,
        pooled_test=_pooled(clients),
        n_features=cfg.n_features,
        n_classes=cfg.n_classes,
        input_shape=(cfg.n_features,),
    )


def _read_heart_center(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One center's rows: '?' is missing, columns 10-12 dropped, incomplete rows dropped."""
    rows_x: list[list[float]] = []
    rows_y: list[float] = []
    kept_columns = [c for c in range(14) if c not in (10, 11, 12)]
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.strip().split(",")
        if len(cells) != 14:
            raise ChecksumError(f"{path}:{line_number} has {len(cells)} columns, expected 14")
        values = [cells[c] for c in kept_columns]
        if any(value.strip() == "?" for value in values):
            continue
        numbers = [float(value) for value in values]
        rows_x.append(numbers[:-1])
        rows_y.append(numbers[-1])
    return np.asarray(rows_x, dtype=np.float64), np.asarray(rows_y, dtype=np.float64)


def _one_hot_drop_first(column: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return np.stack([(column == level).astype(np.float64) for level in levels[1:]], axis=1)


def load_heart_disease_data(
    cfg: HeartDiseaseConfig, fed: FederationConfig, rng: np.random.Generator
) -> FederatedData:
    """UCI Heart Disease, one client per hospital, preprocessed exactly as FLamby's
    Fed-Heart-Disease: per-center split (train_size=0.66, random_state=43, stratified on
    the binary label when every class has > 2 samples), one-hot ``cp`` and ``restecg``
    with drop_first over all centers (13 features), z-score with each center's own
    training mean and (unbiased) std plus 1e-9, computed in float32 as FLamby does."""
    data_dir = resolve_data_dir(cfg.data_dir, "heart_disease", HEART_DISEASE_HOWTO)
    centers_x: list[np.ndarray] = []
    centers_y: list[np.ndarray] = []
    for center in HEART_DISEASE_CENTERS:
        file_name = f"processed.{center}.data"
        path = _require(data_dir / file_name, HEART_DISEASE_HOWTO)
        if cfg.verify_checksums:
            _verify(path, HEART_DISEASE_SHA256[file_name], HEART_DISEASE_HOWTO)
        x_center, y_center = _read_heart_center(path)
        centers_x.append(x_center)
        centers_y.append(y_center)

    # Columns left after dropping 10-12 and the label: 0,1,2(cp),3,4,5,6(restecg),7,8,9.
    cp_index, restecg_index = 2, 6
    all_x = np.concatenate(centers_x)
    cp_levels = np.unique(all_x[:, cp_index])
    restecg_levels = np.unique(all_x[:, restecg_index])
    numeric = [c for c in range(all_x.shape[1]) if c not in (cp_index, restecg_index)]

    clients = []
    for center, x_raw, y_raw in zip(HEART_DISEASE_CENTERS, centers_x, centers_y, strict=True):
        # pandas.get_dummies order: remaining columns first, then cp dummies, restecg dummies.
        encoded = np.concatenate(
            [
                x_raw[:, numeric],
                _one_hot_drop_first(x_raw[:, cp_index], cp_levels),
                _one_hot_drop_first(x_raw[:, restecg_index], restecg_levels),
            ],
            axis=1,
        )
        labels = (y_raw > 0).astype(np.int64)
        levels, counts = np.unique(labels, return_counts=True)
        stratify = labels if len(levels) > 1 and bool(np.all(counts > 2)) else None
        _, test_index = train_test_split(
            np.arange(len(labels)),
            test_size=1.0 - 0.66,
            train_size=0.66,
            random_state=43,
            shuffle=True,
            stratify=stratify,
        )
        # As FLamby: a row is a test row if its index is in the test split, else train.
        train_mask = ~np.isin(np.arange(len(labels)), test_index)
        features = torch.from_numpy(encoded.astype(np.float32))
        train_features = features[torch.from_numpy(train_mask)]
        mean = train_features.mean(dim=0)
        std = train_features.std(dim=0)
        normalized = ((features - mean) / (std + 1e-9)).numpy()
        clients.append(
            ClientData(
                name=center,
                train=_tensor_dataset(normalized[train_mask], labels[train_mask]),
                test=_tensor_dataset(normalized[~train_mask], labels[~train_mask]),
            )
        )
    n_features = clients[0].train.tensors[0].shape[1]
    return FederatedData(
        name="heart_disease",
        clients=tuple(clients),
        pooled_test=_pooled(clients),
        n_features=n_features,
        n_classes=2,
        input_shape=(n_features,),
    )


def load_medmnist_data(
    cfg: MedMNISTConfig, fed: FederationConfig, rng: np.random.Generator
) -> FederatedData:
    """A MedMNIST 28x28 task: the official train split partitioned across K clients with
    the configured scheme, the official test split dealt IID to the clients (pooled, it is
    the official test set). Pixels are scaled to [0, 1]; the val split is not used."""
    data_dir = resolve_data_dir(cfg.data_dir, "medmnist", MEDMNIST_HOWTO)
    path = _require(data_dir / f"{cfg.subset}.npz", MEDMNIST_HOWTO)
    if cfg.verify_checksums:
        _verify(path, MEDMNIST_SHA256[cfg.subset], MEDMNIST_HOWTO)
    with np.load(path) as archive:
        try:
            train_x, train_y = archive["train_images"], archive["train_labels"]
            test_x, test_y = archive["test_images"], archive["test_labels"]
        except KeyError as error:
            raise ChecksumError(f"{path} lacks MedMNIST key {error}") from error

    def to_arrays(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pixels = images.astype(np.float32).reshape(len(images), 1, 28, 28) / 255.0
        return pixels, labels.reshape(-1).astype(np.int64)

    train_x, train_y = to_arrays(train_x, train_y)
    test_x, test_y = to_arrays(test_x, test_y)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    train_parts = partition(fed.partition, train_y, fed.clients, rng, alpha=fed.alpha)
    test_parts = iid_partition(test_y, fed.clients, rng)
    clients = tuple(
        ClientData(
            name=f"client_{index}",
            train=_tensor_dataset(train_x[train_part], train_y[train_part]),
            test=_tensor_dataset(test_x[test_part], test_y[test_part]),
        )
        for index, (train_part, test_part) in enumerate(zip(train_parts, test_parts, strict=True))
    )
    return FederatedData(
        name=f"medmnist/{cfg.subset}",
        clients=clients,
        pooled_test=_pooled(clients),
        n_features=28 * 28,
        n_classes=n_classes,
        input_shape=(1, 28, 28),
    )


DatasetLoader = Callable[[Any, FederationConfig, np.random.Generator], FederatedData]

DATASETS: dict[str, DatasetLoader] = {
    "breast_cancer": load_breast_cancer_data,
    "heart_disease": load_heart_disease_data,
    "medmnist": load_medmnist_data,
    "synthetic": load_synthetic_data,
}


def load_dataset(cfg: Any, fed: FederationConfig, rng: np.random.Generator) -> FederatedData:
    """Load the dataset a ``dataset`` schema instance names (registry lookup, no _target_)."""
    name = getattr(cfg, "name", None)
    if name not in DATASETS:
        raise ConfigError(f"dataset.name must be one of {list(DATASETS)}, got {name!r}")
    return DATASETS[name](cfg, fed, rng)
