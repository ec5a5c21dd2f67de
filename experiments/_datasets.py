"""Federated datasets for experiments: real medical data first, synthetic for benchmarks.

Each loader returns a :class:`FederatedData`: per client a train and a test
``TensorDataset`` (X float32, y int64 class index), the pooled test set (the union of the
clients' test sets), and metadata. Files read from disk are checked against pinned
sha256 checksums; a missing file fails naming the path and how to obtain it.

Pre-processing (``preprocessing=``) is part of the privacy guarantee:

* ``"public"`` (the default, and the only choice under any ``dp`` mode): every feature is
  clipped to a fixed range written down below with its source and mapped linearly to
  ``[-1, 1]``; pixels are scaled to ``[0, 1]``. Each record is transformed on its own, so
  replacing one record changes one row of the input and DP-SGD's clipped-gradient sum by
  at most ``2C``, as the accounting assumes.
* ``"per_client"`` (``dp=off`` only): z-score with each client's own training mean and std
  (as FLamby does). No statistic leaves its site, but one record then moves every other
  record's features, so no record-level DP claim survives it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.model_selection import StratifiedKFold, train_test_split
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

Preprocessing = Literal["public", "per_client"]
PREPROCESSING: tuple[str, ...] = get_args(Preprocessing)

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


#: Public range ``(low, high)`` of each of WDBC's 30 features, in scikit-learn's column
#: order (mean, standard error, worst of radius, texture, perimeter, area, smoothness,
#: compactness, concavity, concave points, symmetry, fractal dimension). Source: the
#: dataset's published description (UCI wdbc.names, Street, Wolberg and Mangasarian 1993;
#: "Summary Statistics" in scikit-learn's ``load_breast_cancer().DESCR``). Rule: every
#: feature is a non-negative length, area or ratio, so ``low = 0``; ``high`` is the
#: published maximum widened by 25% and rounded up to two significant digits.
BREAST_CANCER_RANGES: tuple[tuple[float, float], ...] = tuple(
    (0.0, high)
    for high in (
        36.0, 50.0, 240.0, 3200.0, 0.21, 0.44, 0.54, 0.26, 0.38, 0.13,
        3.6, 6.2, 28.0, 680.0, 0.039, 0.17, 0.5, 0.067, 0.099, 0.038,
        46.0, 62.0, 320.0, 5400.0, 0.28, 1.4, 1.6, 0.37, 0.83, 0.26,
    )
)  # fmt: skip

#: Documented codes of the two categorical heart-disease attributes (UCI heart-disease.names:
#: cp 1-4 = typical angina, atypical angina, non-anginal pain, asymptomatic; restecg 0-2 =
#: normal, ST-T wave abnormality, left ventricular hypertrophy).
HEART_DISEASE_CP_LEVELS = (1.0, 2.0, 3.0, 4.0)
HEART_DISEASE_RESTECG_LEVELS = (0.0, 1.0, 2.0)

#: Public range of each of the 13 encoded heart-disease features (FLamby's column order:
#: eight numeric attributes, then the cp and restecg dummies), with its source. Values
#: outside are clipped (the Swiss and VA files code a missing cholesterol as 0).
HEART_DISEASE_RANGES: tuple[tuple[str, float, float, str], ...] = (
    ("age", 0.0, 100.0, "years; UCI heart-disease.names"),
    ("sex", 0.0, 1.0, "UCI: 1 = male, 0 = female"),
    ("trestbps", 80.0, 200.0, "resting systolic blood pressure, mm Hg; clinical range"),
    ("chol", 100.0, 600.0, "serum cholesterol, mg/dl; clinical range"),
    ("fbs", 0.0, 1.0, "UCI: fasting blood sugar > 120 mg/dl, 1 = true"),
    ("thalach", 60.0, 220.0, "maximum heart rate, bpm; 220 = age-predicted maximum at 0"),
    ("exang", 0.0, 1.0, "UCI: exercise-induced angina, 1 = yes"),
    ("oldpeak", -3.0, 7.0, "exercise ST depression, mm (negative: ST elevation)"),
    ("cp=2", 0.0, 1.0, "one-hot of the documented cp codes 1-4, drop first"),
    ("cp=3", 0.0, 1.0, "one-hot"),
    ("cp=4", 0.0, 1.0, "one-hot"),
    ("restecg=1", 0.0, 1.0, "one-hot of the documented restecg codes 0-2, drop first"),
    ("restecg=2", 0.0, 1.0, "one-hot"),
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
    #: How features were scaled (see the module docstring); only ``"public"`` keeps a
    #: record-level DP guarantee.
    preprocessing: str = "public"

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


def check_preprocessing(preprocessing: str) -> None:
    """Raise :class:`ConfigError` unless ``preprocessing`` is one of :data:`PREPROCESSING`."""
    if preprocessing not in PREPROCESSING:
        raise ConfigError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")


def scale_to_range(features: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Clip each column to its public ``(low, high)`` and map it linearly to ``[-1, 1]``.

    A function of one row at a time: no statistic of the data enters it.
    """
    low = np.asarray([r[0] for r in ranges], dtype=np.float64)
    high = np.asarray([r[1] for r in ranges], dtype=np.float64)
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(low):
        raise ConfigError(
            f"{len(low)} public ranges for features of shape {values.shape}: they must match"
        )
    if not np.all(high > low):
        raise ConfigError("every public range needs high > low")
    clipped = np.clip(values, low, high)
    scaled: np.ndarray = 2.0 * (clipped - low) / (high - low) - 1.0
    return scaled


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
    """Partition samples across clients, then split each client into train and test.

    ``standardize`` z-scores each client with its own training statistics (``dp=off``
    only: see the module docstring); public scaling is applied by the caller beforehand.
    """
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
    cfg: BreastCancerConfig,
    fed: FederationConfig,
    rng: np.random.Generator,
    *,
    preprocessing: str = "public",
) -> FederatedData:
    """Wisconsin Diagnostic Breast Cancer from scikit-learn, split across K hospitals.

    ``preprocessing="public"`` scales by :data:`BREAST_CANCER_RANGES`;
    ``"per_client"`` z-scores each client if ``cfg.standardize`` (else raw values).
    """
    check_preprocessing(preprocessing)
    bunch = load_breast_cancer()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    public = preprocessing == "public"
    if public:
        features = scale_to_range(features, BREAST_CANCER_RANGES)
    clients = _tabular_clients(
        features,
        labels,
        fed,
        rng,
        test_fraction=cfg.test_fraction,
        standardize=cfg.standardize and not public,
    )
    return FederatedData(
        name="breast_cancer",
        clients=clients,
        pooled_test=_pooled(clients),
        n_features=features.shape[1],
        n_classes=2,
        input_shape=(features.shape[1],),
        preprocessing=preprocessing,
    )


def load_synthetic_data(
    cfg: SyntheticConfig,
    fed: FederationConfig,
    rng: np.random.Generator,
    *,
    preprocessing: str = "public",
) -> FederatedData:
    """A seeded ``make_classification`` task of any size, split across K clients.

    ``preprocessing="public"`` leaves the generator's output as it is: its scale is fixed
    by the generator's published parameters (clusters at the vertices of a hypercube of
    side 2, unit-variance noise), not estimated from the data. ``"per_client"`` z-scores.
    """
    check_preprocessing(preprocessing)
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
        standardize=preprocessing == "per_client",
    )
    return FederatedData(
        name="synthetic",
        clients=clients,
        pooled_test=_pooled(clients),
        n_features=cfg.n_features,
        n_classes=cfg.n_classes,
        input_shape=(cfg.n_features,),
        preprocessing=preprocessing,
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
    cfg: HeartDiseaseConfig,
    fed: FederationConfig,
    rng: np.random.Generator,
    *,
    preprocessing: str = "public",
) -> FederatedData:
    """UCI Heart Disease, one client per hospital, split and encoded as FLamby's
    Fed-Heart-Disease: per-center split (train_size=0.66, random_state=43, stratified on
    the binary label when every class has > 2 samples), one-hot ``cp`` and ``restecg``
    with drop_first (13 features).

    Scaling: ``preprocessing="public"`` clips each feature to its public range
    (:data:`HEART_DISEASE_RANGES`) and maps it to ``[-1, 1]``, one-hot over the documented
    codes; ``"per_client"`` is FLamby's: one-hot over the codes seen in all centers, z-score
    with each center's own training mean and (unbiased) std plus 1e-9, in float32."""
    check_preprocessing(preprocessing)
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
    public = preprocessing == "public"
    if public:
        cp_levels = np.asarray(HEART_DISEASE_CP_LEVELS)
        restecg_levels = np.asarray(HEART_DISEASE_RESTECG_LEVELS)
    else:
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
        if public:
            ranges = [(low, high) for _, low, high, _ in HEART_DISEASE_RANGES]
            normalized = scale_to_range(encoded, ranges)
        else:
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
        preprocessing=preprocessing,
    )


def load_medmnist_data(
    cfg: MedMNISTConfig,
    fed: FederationConfig,
    rng: np.random.Generator,
    *,
    preprocessing: str = "public",
) -> FederatedData:
    """A MedMNIST 28x28 task: the official train split partitioned across K clients with
    the configured scheme, the official test split dealt IID to the clients (pooled, it is
    the official test set). With ``cfg.eval_split="val"`` the official val split takes the
    test split's place; with ``"cv"`` the official train and val splits are pooled, cut into
    ``cfg.cv_folds`` stratified folds (fixed by :data:`MEDMNIST_CV_SEED`, the same for every
    run), and fold ``cfg.cv_fold`` is evaluated on while the others are trained on. Both are
    for choosing hyperparameters: the test split is then not read. Pixels are scaled to
    [0, 1] by the public constant 255 under every ``preprocessing``."""
    check_preprocessing(preprocessing)
    data_dir = resolve_data_dir(cfg.data_dir, "medmnist", MEDMNIST_HOWTO)
    path = _require(data_dir / f"{cfg.subset}.npz", MEDMNIST_HOWTO)
    if cfg.verify_checksums:
        _verify(path, MEDMNIST_SHA256[cfg.subset], MEDMNIST_HOWTO)
    with np.load(path) as archive:
        try:
            train_x, train_y = archive["train_images"], archive["train_labels"]
            split = "val" if cfg.eval_split == "cv" else cfg.eval_split
            test_x, test_y = archive[f"{split}_images"], archive[f"{split}_labels"]
        except KeyError as error:
            raise ChecksumError(f"{path} lacks MedMNIST key {error}") from error
    if cfg.eval_split == "cv":
        train_x, train_y, test_x, test_y = _cv_fold(
            np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]), cfg
        )

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
        preprocessing="public",
    )


MEDMNIST_CV_SEED = 0
"""Seeds the fold split of ``dataset.eval_split=cv``: a constant, so the folds are the same
for every candidate and training seed and each pool image is evaluated exactly once."""


def _cv_fold(
    images: np.ndarray, labels: np.ndarray, cfg: MedMNISTConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fold ``cfg.cv_fold`` of a stratified ``cfg.cv_folds``-fold split: train, then eval."""
    folds = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=MEDMNIST_CV_SEED)
    flat = labels.reshape(-1)
    train_index, eval_index = list(folds.split(np.zeros(len(flat)), flat))[cfg.cv_fold]
    return images[train_index], labels[train_index], images[eval_index], labels[eval_index]


DatasetLoader = Callable[..., FederatedData]

DATASETS: dict[str, DatasetLoader] = {
    "breast_cancer": load_breast_cancer_data,
    "heart_disease": load_heart_disease_data,
    "medmnist": load_medmnist_data,
    "synthetic": load_synthetic_data,
}


def load_dataset(
    cfg: Any, fed: FederationConfig, rng: np.random.Generator, *, preprocessing: str = "public"
) -> FederatedData:
    """Load the dataset a ``dataset`` schema instance names (registry lookup, no _target_).

    ``preprocessing`` is ``"public"`` (default; required under DP) or ``"per_client"``.
    """
    name = getattr(cfg, "name", None)
    if name not in DATASETS:
        raise ConfigError(f"dataset.name must be one of {list(DATASETS)}, got {name!r}")
    check_preprocessing(preprocessing)
    return DATASETS[name](cfg, fed, rng, preprocessing=preprocessing)
