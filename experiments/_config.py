"""Structured-config schemas of the federation runner, their registration, and validation.

The schemas are dataclasses registered in Hydra's ConfigStore; YAML in ``conf/`` only
selects and overrides them. :func:`validate` checks every value once, at start, and raises
:class:`~experiments._errors.ConfigError` naming the bad field and the allowed range.
Names (dataset, model, scheme) map to code through our own registries: no ``_target_``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from experiments._errors import ConfigError

# The choice made for each config group when nothing is overridden.
DEFAULTS: list[Any] = [
    "_self_",
    {"dataset": "breast_cancer"},
    {"model": "logreg"},
    {"federation": "default"},
    {"dp": "hardened"},
    {"secagg": "ckks"},
    {"chain": "inprocess"},
]

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")
PARTITIONS = ("iid", "dirichlet", "quantity")
DEVICES = ("auto", "cpu", "cuda")
MEDMNIST_SUBSETS = ("breastmnist", "pneumoniamnist")
MEDMNIST_EVAL_SPLITS = ("test", "val", "cv")


@dataclass
class FederationConfig:
    """How the federation runs: clients, rounds, local training, sampling and partition."""

    clients: int = 5
    rounds: int = 20
    local_epochs: int = 1
    local_steps: int | None = None  # null: train ``local_epochs`` full passes instead
    optimizer: str = "sgd"
    lr: float = 0.1
    batch_size: int = 32
    client_fraction: float = 1.0
    seed: int = 0
    partition: str = "iid"
    alpha: float = 0.5  # Dirichlet concentration for partition=dirichlet|quantity
    dropout: float = 0.0  # share of the selected clients that drop mid-round
    device: str = "auto"
    # Server strategy (experiments/_strategies.py): fedavg|fedprox|fedadam|fedyogi|fedadagrad
    strategy: str = "fedavg"
    server_lr: float | None = None  # null: 1 for fedavg/fedprox, 0.01 for the adaptive ones
    proximal_mu: float = 0.0  # FedProx's proximal coefficient (> 0 with strategy=fedprox)
    server_beta1: float = 0.9  # adaptive strategies: first-moment decay
    server_beta2: float = 0.99  # fedadam/fedyogi: second-moment decay
    server_tau: float = 0.001  # adaptive strategies: adaptivity (epsilon) term
    # Image augmentation (random crop and flip, dp.augment_views): 0 off; K >= 1 trains on K
    # random views of every sample (under dp=sample their gradients are averaged before
    # clipping: augmentation multiplicity, De et al. 2022; the accounting is unchanged).
    augmult: int = 0
    # Client learning rate over rounds: constant, or cosine-decayed from ``lr`` in round 1
    # towards 0 after the last round (the noisy late steps of DP-SGD then move the model less).
    lr_schedule: str = "constant"
    # Evaluation: true averages the predicted class probabilities over each image and its
    # horizontal flip (test-time augmentation; images only). Training is unchanged.
    eval_tta: bool = False
    # Label smoothing of the plain (non-private) trainer's cross-entropy, in [0, 1); 0 off.
    label_smoothing: float = 0.0
    # Exponential moving average of the global model over rounds, in [0, 1); 0 off. After
    # each round ema = decay * ema + (1 - decay) * global (started at round 1's model);
    # evaluation and model.pt use the average, clients keep training the global model.
    # It reads only released aggregates, so it costs no privacy (De et al. 2022's
    # parameter averaging, here over rounds).
    ema: float = 0.0


@dataclass
class BreastCancerConfig:
    """Wisconsin Diagnostic Breast Cancer (569 x 30, shipped in scikit-learn)."""

    name: str = "breast_cancer"
    test_fraction: float = 0.2
    standardize: bool = True  # z-score with each client's own training statistics


@dataclass
class HeartDiseaseConfig:
    """UCI Heart Disease, four hospitals, preprocessed as FLamby's Fed-Heart-Disease."""

    name: str = "heart_disease"
    data_dir: str | None = None  # else $SECAGG_DATA_DIR/heart_disease, else ../shared/data
    verify_checksums: bool = True


@dataclass
class MedMNISTConfig:
    """A MedMNIST v2 28x28 binary task (BreastMNIST or PneumoniaMNIST) from ``.npz``."""

    name: str = "medmnist"
    subset: str = "breastmnist"
    data_dir: str | None = None  # else $SECAGG_DATA_DIR/medmnist, else ../shared/data
    verify_checksums: bool = True
    # The split the model is evaluated on: the official test split, the official val split,
    # or "cv": fold cv_fold of a stratified cv_folds-fold split of the official train + val
    # splits, trained on the other folds (both to choose hyperparameters without looking at
    # the test split; cv evaluates on all train + val images over its folds).
    eval_split: str = "test"
    cv_folds: int = 5
    cv_fold: int = 0


@dataclass
class SyntheticConfig:
    """A seeded synthetic classification task of any size (scikit-learn's generator)."""

    name: str = "synthetic"
    n_samples: int = 1000
    n_features: int = 20
    n_classes: int = 2
    n_informative: int = 10
    test_fraction: float = 0.2


@dataclass
class LogRegConfig:
    """Multinomial logistic regression: one linear layer to the class logits."""

    name: str = "logreg"


@dataclass
class MLPConfig:
    """A multi-layer perceptron with ReLU activations."""

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0


@dataclass
class CNNConfig:
    """A small CNN for 1x28x28 images, GroupNorm after each convolution (Opacus-safe)."""

    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [16, 32])
    groups: int = 4  # GroupNorm groups; must divide every entry of ``channels``
    hidden: int = 64
    # Average-pool the last feature map to one value per channel before the head: far
    # fewer parameters (less DP noise in total), at some cost without DP.
    global_pool: bool = False


@dataclass
class ResNet18Config:
    """MedMNIST's ResNet-18 for 28x28 images (3x3 stem, no max-pool), GroupNorm (Opacus-safe).

    Stages have ``width``, 2, 4 and 8 x ``width`` channels; 64 is the published model.
    """

    name: str = "resnet18"
    width: int = 64
    groups: int = 16  # GroupNorm groups; must divide ``width`` (De et al. 2022 use 16)


@dataclass
class RunOptions:
    """How this process runs the federation, not what it computes (``run.*``).

    ``stop_after``: stop after that round, leaving ``checkpoint.pt`` in the run directory
    (null: run every round). ``resume``: a run directory or checkpoint file to continue
    from; the rest of the config must match the checkpoint's (``federation.rounds`` may
    grow). Both need ``chain=none``, or a persistent ledger with ``chain.keys_seed_file``
    (:func:`validate_run`, :mod:`experiments._checkpoint`).
    """

    resume: str | None = None
    stop_after: int | None = None


@dataclass
class RandomFeaturesConfig:
    """Frozen random convolution features of 28x28 images and one trained linear layer.

    ``filters`` seeded random ``kernel`` x ``kernel`` filters (zero mean, unit norm; both
    signs of each response through a ReLU), applied with ``stride`` (3: a 10x10 response,
    9x fewer multiply-adds than stride 1 for the same accuracy in our BreastMNIST checks),
    are average-pooled to a ``grid`` x ``grid`` map and standardised per image; only the
    linear layer on these ``2 * filters * grid**2`` features is trained. The features
    depend on the seed only, never on data, so they cost no privacy (Tramer & Boneh 2021:
    under DP-SGD, fixed features and a linear model beat end-to-end CNNs on small data).
    """

    name: str = "rfnet"
    filters: int = 64
    kernel: int = 5  # odd: the response is centred on the pixels it is computed at
    stride: int = 3
    grid: int = 2


@dataclass
class RunConfig:
    """Top-level config of one federation run (``python -m experiments.run``)."""

    defaults: list[Any] = field(default_factory=lambda: list(DEFAULTS))
    dataset: Any = MISSING
    model: Any = MISSING
    federation: FederationConfig = MISSING
    dp: Any = MISSING
    secagg: Any = MISSING
    chain: Any = MISSING
    run: RunOptions = field(default_factory=RunOptions)


DATASET_SCHEMAS: dict[str, type] = {
    "breast_cancer": BreastCancerConfig,
    "heart_disease": HeartDiseaseConfig,
    "medmnist": MedMNISTConfig,
    "synthetic": SyntheticConfig,
}
MODEL_SCHEMAS: dict[str, type] = {
    "logreg": LogRegConfig,
    "mlp": MLPConfig,
    "cnn": CNNConfig,
    "resnet18": ResNet18Config,
    "rfnet": RandomFeaturesConfig,
}
# Datasets with a natural split: the number of clients is fixed by the data.
NATURAL_CLIENTS: dict[str, int] = {"heart_disease": 4}
# Models that need image input of this shape.
IMAGE_MODELS: dict[str, tuple[int, int, int]] = {
    "cnn": (1, 28, 28),
    "resnet18": (1, 28, 28),
    "rfnet": (1, 28, 28),
}
IMAGE_DATASETS = ("medmnist",)


def register_configs(store: ConfigStore | None = None) -> None:
    """Register every schema of the runner, and the dp, secagg and chain groups."""
    from chain._hydra import register_configs as register_chain
    from dp._hydra import register_configs as register_dp
    from secagg._hydra import register_configs as register_secagg

    store = store or ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="federation", name="default", node=FederationConfig)
    for name, schema in DATASET_SCHEMAS.items():
        store.store(group="dataset", name=name, node=schema)
    for name, schema in MODEL_SCHEMAS.items():
        store.store(group="model", name=name, node=schema)
    register_dp(store)
    register_secagg(store)
    register_chain(store)


def _fail(field_name: str, requirement: str, value: Any) -> ConfigError:
    return ConfigError(f"{field_name} must be {requirement}, got {value!r}")


def _check_int(field_name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(field_name, f"an integer >= {minimum}", value)


def _check_float(
    field_name: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
        raise _fail(field_name, f"in {interval}", value)


def _check_choice(field_name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(field_name, f"one of {list(choices)}", value)


def validate_federation(fed: FederationConfig) -> None:
    """Check every federation value; raise :class:`ConfigError` naming the field."""
    _check_int("federation.clients", fed.clients, 1)
    _check_int("federation.rounds", fed.rounds, 1)
    _check_int("federation.local_epochs", fed.local_epochs, 1)
    if fed.local_steps is not None:
        _check_int("federation.local_steps", fed.local_steps, 1)
    _check_choice("federation.optimizer", fed.optimizer, OPTIMIZERS)
    _check_float("federation.lr", fed.lr, 0.0, math.inf, low_open=True, high_open=True)
    _check_int("federation.batch_size", fed.batch_size, 1)
    _check_float(
        "federation.client_fraction", fed.client_fraction, 0.0, 1.0, low_open=True, high_open=False
    )
    _check_int("federation.seed", fed.seed, 0)
    _check_choice("federation.partition", fed.partition, PARTITIONS)
    _check_float("federation.alpha", fed.alpha, 0.0, math.inf, low_open=True, high_open=True)
    _check_float("federation.dropout", fed.dropout, 0.0, 1.0, low_open=False, high_open=True)
    _check_choice("federation.device", fed.device, DEVICES)
    _check_choice("federation.strategy", fed.strategy, STRATEGIES)
    if fed.server_lr is not None:
        _check_float(
            "federation.server_lr", fed.server_lr, 0.0, math.inf, low_open=True, high_open=True
        )
    _check_float(
        "federation.proximal_mu", fed.proximal_mu, 0.0, math.inf, low_open=False, high_open=True
    )
    if fed.strategy == "fedprox" and fed.proximal_mu == 0:
        raise _fail("federation.proximal_mu", "> 0 with strategy=fedprox (0 is FedAvg)", 0.0)
    if fed.strategy != "fedprox" and fed.proximal_mu != 0:
        raise ConfigError(
            f"federation.proximal_mu={fed.proximal_mu} applies only to "
            f"federation.strategy=fedprox, got strategy={fed.strategy}"
        )
    for name, value in (("server_beta1", fed.server_beta1), ("server_beta2", fed.server_beta2)):
        _check_float(f"federation.{name}", value, 0.0, 1.0, low_open=False, high_open=True)
    _check_float(
        "federation.server_tau", fed.server_tau, 0.0, math.inf, low_open=True, high_open=True
    )
    _check_int("federation.augmult", fed.augmult, 0)
    _check_choice("federation.lr_schedule", fed.lr_schedule, LR_SCHEDULES)
    if not isinstance(fed.eval_tta, bool):
        raise _fail("federation.eval_tta", "true or false", fed.eval_tta)
    _check_float(
        "federation.label_smoothing",
        fed.label_smoothing,
        0.0,
        1.0,
        low_open=False,
        high_open=True,
    )
    _check_float("federation.ema", fed.ema, 0.0, 1.0, low_open=False, high_open=True)


def validate_dataset(dataset: Any) -> None:
    """Check a dataset schema instance; raise :class:`ConfigError` naming the field."""
    name = str(getattr(dataset, "name", None))
    _check_choice("dataset.name", name, tuple(DATASET_SCHEMAS))
    if not isinstance(dataset, DATASET_SCHEMAS[name]):
        raise _fail("dataset", f"a {DATASET_SCHEMAS[name].__name__}", type(dataset).__name__)
    if isinstance(dataset, BreastCancerConfig | SyntheticConfig):
        _check_float(
            "dataset.test_fraction",
            dataset.test_fraction,
            0.0,
            1.0,
            low_open=True,
            high_open=True,
        )
    if isinstance(dataset, SyntheticConfig):
        _check_int("dataset.n_samples", dataset.n_samples, 10)
        _check_int("dataset.n_features", dataset.n_features, 1)
        _check_int("dataset.n_classes", dataset.n_classes, 2)
        _check_int("dataset.n_informative", dataset.n_informative, 1)
        if dataset.n_informative > dataset.n_features:
            raise _fail(
                "dataset.n_informative",
                f"<= dataset.n_features ({dataset.n_features})",
                dataset.n_informative,
            )
        if dataset.n_classes > 2**dataset.n_informative:
            raise _fail(
                "dataset.n_classes",
                f"<= 2**dataset.n_informative ({2**dataset.n_informative})",
                dataset.n_classes,
            )
    if isinstance(dataset, MedMNISTConfig):
        _check_choice("dataset.subset", dataset.subset, MEDMNIST_SUBSETS)
        _check_choice("dataset.eval_split", dataset.eval_split, MEDMNIST_EVAL_SPLITS)
        _check_int("dataset.cv_folds", dataset.cv_folds, 2)
        _check_int("dataset.cv_fold", dataset.cv_fold, 0)
        if dataset.cv_fold >= dataset.cv_folds:
            raise _fail(
                "dataset.cv_fold", f"< dataset.cv_folds ({dataset.cv_folds})", dataset.cv_fold
            )


def validate_model(model: Any) -> None:
    """Check a model schema instance; raise :class:`ConfigError` naming the field."""
    name = str(getattr(model, "name", None))
    _check_choice("model.name", name, tuple(MODEL_SCHEMAS))
    if not isinstance(model, MODEL_SCHEMAS[name]):
        raise _fail("model", f"a {MODEL_SCHEMAS[name].__name__}", type(model).__name__)
    if isinstance(model, MLPConfig):
        if not model.hidden:
            raise _fail("model.hidden", "a non-empty list of layer widths", model.hidden)
        for index, width in enumerate(model.hidden):
            _check_int(f"model.hidden[{index}]", width, 1)
        _check_float("model.dropout", model.dropout, 0.0, 1.0, low_open=False, high_open=True)
    if isinstance(model, CNNConfig):
        if not model.channels:
            raise _fail("model.channels", "a non-empty list of channel counts", model.channels)
        _check_int("model.groups", model.groups, 1)
        _check_int("model.hidden", model.hidden, 1)
        if not isinstance(model.global_pool, bool):
            raise _fail("model.global_pool", "a bool", model.global_pool)
        for index, channels in enumerate(model.channels):
            _check_int(f"model.channels[{index}]", channels, 1)
            if channels % model.groups:
                raise _fail(
                    f"model.channels[{index}]",
                    f"a multiple of model.groups ({model.groups})",
                    channels,
                )
    if isinstance(model, RandomFeaturesConfig):
        _validate_random_features(model)
    if isinstance(model, ResNet18Config):
        _check_int("model.width", model.width, 1)
        _check_int("model.groups", model.groups, 1)
        if model.width % model.groups:
            raise _fail("model.width", f"a multiple of model.groups ({model.groups})", model.width)


def _validate_random_features(model: RandomFeaturesConfig) -> None:
    _check_int("model.filters", model.filters, 1)
    _check_int("model.kernel", model.kernel, 1)
    if model.kernel % 2 == 0 or model.kernel > 27:
        raise _fail("model.kernel", "odd and at most 27", model.kernel)
    _check_int("model.stride", model.stride, 1)
    side = (28 - 1) // model.stride + 1  # the response's side: padding keeps 28 at stride 1
    _check_int("model.grid", model.grid, 1)
    if model.grid > side:
        raise _fail("model.grid", f"at most {side} (the response side at this stride)", model.grid)


def validate_local(*, dataset: Any, model: Any, federation: FederationConfig) -> None:
    """Check the groups this package defines, and how they combine (no heavy imports)."""
    validate_federation(federation)
    validate_dataset(dataset)
    validate_model(model)
    natural = NATURAL_CLIENTS.get(dataset.name)
    if natural is not None and federation.clients != natural:
        raise ConfigError(
            f"federation.clients must be {natural} for dataset={dataset.name} "
            f"(one client per hospital), got {federation.clients}; "
            f"add federation.clients={natural} or federation={dataset.name}"
        )
    if federation.augmult and dataset.name not in IMAGE_DATASETS:
        raise ConfigError(
            f"federation.augmult={federation.augmult} augments images (dataset one of "
            f"{list(IMAGE_DATASETS)}), got dataset={dataset.name}; use federation.augmult=0"
        )
    if federation.eval_tta and dataset.name not in IMAGE_DATASETS:
        raise ConfigError(
            "federation.eval_tta=true flips images at evaluation (dataset one of "
            f"{list(IMAGE_DATASETS)}), got dataset={dataset.name}; use federation.eval_tta=false"
        )
    if model.name in IMAGE_MODELS and dataset.name not in IMAGE_DATASETS:
        raise ConfigError(
            f"model={model.name} needs 28x28 images (dataset one of "
            f"{list(IMAGE_DATASETS)}), got dataset={dataset.name}"
        )


def _field(node: Any, name: str) -> Any:
    """``node.name`` of a schema instance or ``node[name]`` of a mapping (preflight)."""
    if isinstance(node, Mapping):
        return node.get(name)
    return getattr(node, name, None)


def validate_run(
    run: RunOptions, *, chain: Any, dp_audit: str | None = None, committee_size: int = 1
) -> None:
    """Check ``run.*``: which runs can stop and resume (``chain`` is the chain schema or,
    in the preflight, its fields as a mapping).

    A ledger-backed run resumes only on a ledger that outlives the process (``chain=rpc``,
    or ``chain=anvil`` attached at a ``url`` or with a ``state_file``) and only with
    ``chain.keys_seed_file``: without it every party's account is a fresh key held in the
    first process's memory only. The in-process EVM dies with its process; a decryption
    committee is set up once per contract and its members' key shares live in memory
    only; the one-run audit's canaries keep secret inclusion bits in memory only. Raises
    :class:`ConfigError` naming the field, why, and how to enable it where one can.
    """
    if run.stop_after is not None:
        _check_int("run.stop_after", run.stop_after, 1)
    if run.resume is not None and (not isinstance(run.resume, str) or not run.resume.strip()):
        raise _fail("run.resume", "a run directory or checkpoint file", run.resume)
    key = "run.resume" if run.resume is not None else "run.stop_after"
    if run.resume is None and run.stop_after is None:
        return
    chain_name = str(_field(chain, "name"))
    persistent = chain_name == "rpc" or (
        chain_name == "anvil"
        and (_field(chain, "url") is not None or _field(chain, "state_file") is not None)
    )
    if chain_name == "inprocess" or (chain_name == "anvil" and not persistent):
        where = (
            "the in-process EVM's contract, commitments and reputation live in the "
            "interrupted process's memory"
            if chain_name == "inprocess"
            else "the anvil node this run starts (no chain.url, no chain.state_file) stops with it"
        )
        raise ConfigError(
            f"{key} needs a ledger that outlives the process, got chain={chain_name}: {where} "
            "and is gone with it; use chain=rpc against `secagg node` (or chain=anvil with "
            "chain.state_file) and chain.keys_seed_file, or chain=none"
        )
    if persistent and _field(chain, "keys_seed_file") is None:
        raise ConfigError(
            f"{key} with chain={chain_name} needs chain.keys_seed_file: without it every "
            "party's ledger account (clients, aggregator, key holder) is a fresh key held "
            "only in the first process's memory and never written, so another process "
            "cannot act as the parties registered on that contract; to enable it, write a "
            "seed (`openssl rand -hex 32 > party.seed`, keep it private) and pass "
            "chain.keys_seed_file=party.seed to every run of the consortium, or use chain=none"
        )
    if persistent and committee_size > 1:
        raise ConfigError(
            f"{key} with a ledger cannot be used with secagg.committee_size={committee_size}: "
            "a contract sets its decryption committee up once and the members' key shares "
            "live in memory only; use secagg.committee_size=1 secagg.committee_threshold=1"
        )
    if dp_audit not in (None, "none"):
        raise ConfigError(
            f"{key} cannot be used with dp.audit={dp_audit}: the canaries' secret inclusion "
            "bits live in memory only and are never written to a checkpoint"
        )


def validate(cfg: RunConfig) -> None:
    """Check a whole run config once, at start; raise :class:`ConfigError` naming the field."""
    from secagg._hydra import SCHEMES

    validate_local(dataset=cfg.dataset, model=cfg.model, federation=cfg.federation)
    validate_run(
        cfg.run,
        chain=cfg.chain,
        dp_audit=getattr(cfg.dp, "audit", None),
        committee_size=int(getattr(cfg.secagg, "committee_size", 1) or 1),
    )
    _check_choice("secagg.name", getattr(cfg.secagg, "name", None), tuple(SCHEMES))
    if cfg.federation.label_smoothing and getattr(cfg.dp, "name", None) == "sample":
        raise ConfigError(
            f"federation.label_smoothing={cfg.federation.label_smoothing} applies to the plain "
            "trainer only, got dp=sample (DP-SGD trains with its own loss); use "
            "federation.label_smoothing=0"
        )
    for group in ("dp", "chain"):
        if not isinstance(getattr(getattr(cfg, group), "name", None), str):
            raise _fail(f"{group}.name", "a string", getattr(getattr(cfg, group), "name", None))
