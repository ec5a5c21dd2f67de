"""Bring your own model and data: register them by name, select them on the command line.

:func:`register_model` and :func:`register_dataset` add an entry to the runner's
registries and to Hydra's ConfigStore, so ``model=NAME`` / ``dataset=NAME`` select it and
its schema's fields are overridable (``model.width=64``) and strictly checked like the
built-in ones. The command line imports the modules named in the environment variable
``SECAGG_PLUGINS`` (comma-separated) before it checks the config, so a user package
registers itself on import::

    SECAGG_PLUGINS=my_package.fl python -m experiments.run model=my_net dataset=my_data

With ``dp=sample`` a registered model is validated by Opacus before training; a model it
cannot train (BatchNorm, ...) fails with a :class:`~experiments._errors.ConfigError`
naming the layer and the fix (``dp.fix_model=true``). See ``docs/extending.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from experiments._config import DATASET_SCHEMAS, MODEL_SCHEMAS, NATURAL_CLIENTS, FederationConfig
from experiments._errors import ConfigError

PLUGINS_ENV = "SECAGG_PLUGINS"

ModelFactory = Callable[[Any, Any], Any]  # (model schema instance, FederatedData) -> nn.Module
DatasetLoader = Callable[[Any, FederationConfig, np.random.Generator], Any]  # -> FederatedData


def _schema_for(kind: str, name: str, schema: type | None) -> type:
    """The given schema (checked), or a schema with only ``name``."""
    if not name.isidentifier():
        raise ConfigError(f"a {kind} name must be an identifier, got {name!r}")
    if schema is None:
        return dataclasses.make_dataclass(
            f"{name.title().replace('_', '')}{kind.title()}Config",
            [("name", str, dataclasses.field(default=name))],
        )
    if not dataclasses.is_dataclass(schema) or not isinstance(schema, type):
        raise ConfigError(f"the schema of {kind}={name} must be a dataclass, got {schema!r}")
    defaults = {f.name: f.default for f in dataclasses.fields(schema)}
    if defaults.get("name") != name:
        raise ConfigError(
            f"the schema of {kind}={name} needs a field `name: str = {name!r}`, "
            f"got {defaults.get('name', 'no name field')!r}"
        )
    return schema


def register_model(
    name: str, factory: ModelFactory, *, schema: type | None = None, replace: bool = False
) -> None:
    """Make ``model=name`` build ``factory(cfg, data)``: ``cfg`` is an instance of
    ``schema`` (a dataclass whose ``name`` defaults to ``name``; default: no other
    field), ``data`` the :class:`FederatedData` (``n_features``, ``n_classes``,
    ``input_shape``). The model must map a batch to logits ``(batch, n_classes)``."""
    from hydra.core.config_store import ConfigStore

    from experiments._models import MODELS

    schema = _schema_for("model", name, schema)
    if name in MODELS and not replace:
        raise ConfigError(f"model={name} is already registered (pass replace=True)")
    MODELS[name] = factory
    MODEL_SCHEMAS[name] = schema
    ConfigStore.instance().store(group="model", name=name, node=schema)


def register_dataset(
    name: str,
    loader: DatasetLoader,
    *,
    schema: type | None = None,
    natural_clients: int | None = None,
    replace: bool = False,
) -> None:
    """Make ``dataset=name`` load ``loader(cfg, federation, rng)`` -> FederatedData.

    The loader partitions the data across ``federation.clients`` clients (see
    :func:`federated_from_arrays`) and does any public pre-processing; ``rng`` is the
    run's seeded data generator. ``natural_clients``: the dataset has a fixed number of
    clients (one per site) and ``federation.clients`` must equal it."""
    from hydra.core.config_store import ConfigStore

    from experiments._datasets import DATASETS

    schema = _schema_for("dataset", name, schema)
    if name in DATASETS and not replace:
        raise ConfigError(f"dataset={name} is already registered (pass replace=True)")
    DATASETS[name] = _accepting_preprocessing(loader)
    DATASET_SCHEMAS[name] = schema
    if natural_clients is not None:
        NATURAL_CLIENTS[name] = natural_clients
    ConfigStore.instance().store(group="dataset", name=name, node=schema)


def _accepting_preprocessing(loader: DatasetLoader) -> Callable[..., Any]:
    """The runner calls every loader with ``preprocessing=`` ("public" under DP); a user
    loader that does not take it is called without it, and what it returns says how it was
    scaled (``FederatedData.preprocessing``), which the privacy layer checks."""
    try:
        takes_it = "preprocessing" in inspect.signature(loader).parameters
    except (TypeError, ValueError):
        takes_it = False
    if takes_it:
        return loader

    def load(cfg: Any, federation: FederationConfig, rng: np.random.Generator, **_: Any) -> Any:
        return loader(cfg, federation, rng)

    return load


def federated_from_arrays(
    name: str,
    features: np.ndarray,
    labels: np.ndarray,
    federation: FederationConfig,
    rng: np.random.Generator,
    *,
    test_fraction: float = 0.2,
    standardize: bool = False,
) -> Any:
    """A :class:`FederatedData` from one table: partitioned by ``federation.partition``
    across ``federation.clients`` clients, each split into train and test (stratified
    when possible) and, with ``standardize``, z-scored with its own training statistics.

    Scale features with public constants before calling this under DP: per-client
    z-scores (``standardize=True``) let one record move every other record's features, so
    the data is marked ``preprocessing="per_client"`` and the privacy layer refuses it
    under any ``dp`` mode but ``off``."""
    from experiments._datasets import FederatedData, _pooled, _tabular_clients

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    clients = _tabular_clients(
        features,
        labels,
        federation,
        rng,
        test_fraction=test_fraction,
        standardize=standardize,
    )
    return FederatedData(
        name=name,
        clients=clients,
        pooled_test=_pooled(clients),
        n_features=features.shape[1],
        n_classes=int(labels.max()) + 1,
        input_shape=(features.shape[1],),
        preprocessing="per_client" if standardize else "public",
    )


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the modules named in ``spec`` (default: ``$SECAGG_PLUGINS``, comma-separated)."""
    text = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    names = [part.strip() for part in text.split(",") if part.strip()]
    for module in names:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"{PLUGINS_ENV}: cannot import {module!r}: {error}") from error
    return names
