"""Hydra entry points, datasets and models for federated experiments.

``python -m experiments.run`` runs one federation (``-m`` for a sweep) and writes
``results.json``; ``python -m experiments.report DIR`` summarises a sweep. The round loop
(:class:`Federation`) has small overridable steps so the dp, secagg and chain layers plug
in without rewriting it.
"""

from experiments._config import (
    BreastCancerConfig,
    CNNConfig,
    FederationConfig,
    HeartDiseaseConfig,
    LogRegConfig,
    MedMNISTConfig,
    MLPConfig,
    ResNet18Config,
    RunConfig,
    SyntheticConfig,
    register_configs,
    validate,
)
from experiments._datasets import (
    DATASETS,
    ClientData,
    FederatedData,
    load_dataset,
    resolve_data_dir,
)
from experiments._errors import (
    ChecksumError,
    ConfigError,
    DatasetNotFoundError,
    ExperimentError,
    PartitionError,
)
from experiments._federation import (
    AggregationResult,
    Federation,
    FinalRecord,
    RoundExtras,
    RoundRecord,
    RoundSeconds,
    RunResults,
    derive_seed,
    resolve_device,
)
from experiments._fetch import FetchError, fetch_dataset, import_dataset
from experiments._models import (
    MLP,
    MODELS,
    LogisticRegression,
    ResNet18,
    SmallCNN,
    build_model,
)
from experiments._partition import (
    dirichlet_partition,
    iid_partition,
    label_skew,
    partition,
    quantity_partition,
)
from experiments._runner import build_federation, run_experiment, summary_table, write_results
from experiments._training import Evaluation, LocalResult, LocalTrainer, SGDTrainer, evaluate

__all__ = [
    "DATASETS",
    "MLP",
    "MODELS",
    "AggregationResult",
    "BreastCancerConfig",
    "CNNConfig",
    "ChecksumError",
    "ClientData",
    "ConfigError",
    "DatasetNotFoundError",
    "Evaluation",
    "ExperimentError",
    "FederatedData",
    "Federation",
    "FederationConfig",
    "FetchError",
    "FinalRecord",
    "HeartDiseaseConfig",
    "LocalResult",
    "LocalTrainer",
    "LogRegConfig",
    "LogisticRegression",
    "MLPConfig",
    "MedMNISTConfig",
    "PartitionError",
    "ResNet18",
    "ResNet18Config",
    "RoundExtras",
    "RoundRecord",
    "RoundSeconds",
    "RunConfig",
    "RunResults",
    "SGDTrainer",
    "SmallCNN",
    "SyntheticConfig",
    "build_federation",
    "build_model",
    "derive_seed",
    "dirichlet_partition",
    "evaluate",
    "fetch_dataset",
    "iid_partition",
    "import_dataset",
    "label_skew",
    "load_dataset",
    "partition",
    "quantity_partition",
    "register_configs",
    "resolve_data_dir",
    "resolve_device",
    "run_experiment",
    "summary_table",
    "validate",
    "write_results",
]
