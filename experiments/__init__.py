"""Hydra entry points, datasets and models for federated experiments.

``python -m experiments.run`` runs one federation (``-m`` for a sweep) and writes
``results.json``; ``python -m experiments.report DIR`` summarises a sweep. The round loop
(:class:`Federation`) has small overridable steps so the dp, secagg and chain layers plug
in without rewriting it.

Names are imported on first use (PEP 562), so ``import experiments`` and the command
line's config checks do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "federated_from_arrays": "experiments._registry",
    "load_plugins": "experiments._registry",
    "register_dataset": "experiments._registry",
    "register_model": "experiments._registry",
    "STRATEGIES": "experiments._strategies",
    "ServerOptimizer": "experiments._strategies",
    "ServerOptimizerParams": "experiments._strategies",
    "ModelFileError": "experiments._artifacts",
    "load_model": "experiments._artifacts",
    "run_metadata": "experiments._artifacts",
    "FetchError": "experiments._fetch",
    "fetch_dataset": "experiments._fetch",
    "import_dataset": "experiments._fetch",
    "ResNet18": "experiments._models",
    "ResNet18Config": "experiments._config",
    "RandomFeatures": "experiments._models",
    "RandomFeaturesConfig": "experiments._config",
    "AggregationResult": "experiments._federation",
    "BreastCancerConfig": "experiments._config",
    "CNNConfig": "experiments._config",
    "ChecksumError": "experiments._errors",
    "Checkpoint": "experiments._checkpoint",
    "CheckpointError": "experiments._errors",
    "read_checkpoint": "experiments._checkpoint",
    "RunOptions": "experiments._config",
    "ClientData": "experiments._datasets",
    "ConfigError": "experiments._errors",
    "DATASETS": "experiments._datasets",
    "DatasetNotFoundError": "experiments._errors",
    "Evaluation": "experiments._training",
    "ExperimentError": "experiments._errors",
    "FederatedData": "experiments._datasets",
    "Federation": "experiments._federation",
    "FederationConfig": "experiments._config",
    "FinalRecord": "experiments._federation",
    "HeartDiseaseConfig": "experiments._config",
    "LocalResult": "experiments._training",
    "LocalTrainer": "experiments._training",
    "LogRegConfig": "experiments._config",
    "LogisticRegression": "experiments._models",
    "MLP": "experiments._models",
    "MLPConfig": "experiments._config",
    "MODELS": "experiments._models",
    "MedMNISTConfig": "experiments._config",
    "PartitionError": "experiments._errors",
    "RoundExtras": "experiments._federation",
    "RoundRecord": "experiments._federation",
    "RoundSeconds": "experiments._federation",
    "RunConfig": "experiments._config",
    "RunResults": "experiments._federation",
    "SGDTrainer": "experiments._training",
    "SmallCNN": "experiments._models",
    "SyntheticConfig": "experiments._config",
    "build_federation": "experiments._runner",
    "build_model": "experiments._models",
    "derive_seed": "experiments._federation",
    "dirichlet_partition": "experiments._partition",
    "evaluate": "experiments._training",
    "iid_partition": "experiments._partition",
    "label_skew": "experiments._partition",
    "load_dataset": "experiments._datasets",
    "partition": "experiments._partition",
    "quantity_partition": "experiments._partition",
    "register_configs": "experiments._config",
    "resolve_data_dir": "experiments._datasets",
    "resolve_device": "experiments._federation",
    "run_experiment": "experiments._runner",
    "summary_table": "experiments._runner",
    "validate": "experiments._config",
    "write_results": "experiments._runner",
}

if TYPE_CHECKING:
    from experiments._artifacts import ModelFileError, load_model, run_metadata
    from experiments._checkpoint import Checkpoint, read_checkpoint
    from experiments._config import (
        BreastCancerConfig,
        CNNConfig,
        FederationConfig,
        HeartDiseaseConfig,
        LogRegConfig,
        MedMNISTConfig,
        MLPConfig,
        RandomFeaturesConfig,
        ResNet18Config,
        RunConfig,
        RunOptions,
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
        CheckpointError,
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
        RandomFeatures,
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
    from experiments._registry import (
        federated_from_arrays,
        load_plugins,
        register_dataset,
        register_model,
    )
    from experiments._runner import build_federation, run_experiment, summary_table, write_results
    from experiments._strategies import STRATEGIES, ServerOptimizer, ServerOptimizerParams
    from experiments._training import Evaluation, LocalResult, LocalTrainer, SGDTrainer, evaluate

__all__ = [
    "DATASETS",
    "MLP",
    "MODELS",
    "STRATEGIES",
    "AggregationResult",
    "BreastCancerConfig",
    "CNNConfig",
    "Checkpoint",
    "CheckpointError",
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
    "ModelFileError",
    "PartitionError",
    "RandomFeatures",
    "RandomFeaturesConfig",
    "ResNet18",
    "ResNet18Config",
    "RoundExtras",
    "RoundRecord",
    "RoundSeconds",
    "RunConfig",
    "RunOptions",
    "RunResults",
    "SGDTrainer",
    "ServerOptimizer",
    "ServerOptimizerParams",
    "SmallCNN",
    "SyntheticConfig",
    "build_federation",
    "build_model",
    "derive_seed",
    "dirichlet_partition",
    "evaluate",
    "federated_from_arrays",
    "fetch_dataset",
    "iid_partition",
    "import_dataset",
    "label_skew",
    "load_dataset",
    "load_model",
    "load_plugins",
    "partition",
    "quantity_partition",
    "read_checkpoint",
    "register_configs",
    "register_dataset",
    "register_model",
    "resolve_data_dir",
    "resolve_device",
    "run_experiment",
    "run_metadata",
    "summary_table",
    "validate",
    "write_results",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
