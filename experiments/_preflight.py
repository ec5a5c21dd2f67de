"""Strict, fast checks of a run's configuration, before composition and after it.

:func:`check_command_line` runs before Hydra composes the config and before torch loads:
it rejects unknown keys (including ones added with ``+``), fields the selected group
option does not use (``dp=off +dp.target_epsilon=1.0``), suggests the closest valid key,
and checks every value it can know without the heavy packages (federation, dataset and
model fields; clients against ``secagg.min_clients``; a CUDA device on a CPU-only torch
build). A bad command line fails in well under 2 s. Field lists of the dp, secagg and
chain groups come from :mod:`experiments._catalog`; when that is stale the check of those
groups is left to :func:`check_composed`, which runs on the composed config against the
real schemas, and :func:`check_feasible`, which plans a masking round for the largest
dropout fraction before any training.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from experiments._config import (
    DATASET_SCHEMAS,
    DEFAULTS,
    MODEL_SCHEMAS,
    FederationConfig,
    RunOptions,
    validate_local,
    validate_run,
)
from experiments._errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("dataset", "model", "federation", "dp", "secagg", "chain")
# Top-level nodes that are not config groups (one fixed schema each).
NODES = {"run": RunOptions}
# More combinations than this in one sweep: only the keys are checked up front.
MAX_COMBINATIONS = 256

Options = dict[str, dict[str, dict[str, Any]]]  # group -> option -> field -> value


def _schema_defaults(schema: type) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in dataclasses.fields(schema):
        if item.default is not dataclasses.MISSING:
            values[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            values[item.name] = item.default_factory()
    return values


def group_options(catalog: Mapping[str, Mapping[str, Mapping[str, Any]]] | None) -> Options:
    """Every option of every group with its field defaults (YAML presets included).

    Without a catalogue, the dp, secagg and chain groups are absent (not checked here).
    """
    options: Options = {
        "dataset": {name: _schema_defaults(s) for name, s in DATASET_SCHEMAS.items()},
        "model": {name: _schema_defaults(s) for name, s in MODEL_SCHEMAS.items()},
        "federation": {"default": _schema_defaults(FederationConfig)},
        **{node: {"default": _schema_defaults(schema)} for node, schema in NODES.items()},
    }
    for group, entries in (catalog or {}).items():
        options[group] = {option: dict(fields) for option, fields in entries.items()}
    for group in list(options):
        folder = CONF_DIR / group
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            preset = _load_preset(path, options[group])
            if preset is not None:
                options[group][path.stem] = preset
    return options


def _load_preset(path: Path, known: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A YAML preset's fields: its base option's defaults updated with its own values."""
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(content, dict):
        return None
    bases = [d for d in content.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    if len(bases) != 1 or bases[0] not in known:
        return None
    fields = dict(known[bases[0]])
    if not set(content) <= set(fields):
        return None  # left to Hydra and check_composed
    fields.update(content)
    return fields


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_field(group: str, option: str, field_name: str, options: Options) -> None:
    """Raise :class:`ConfigError` unless ``group=option`` has the field ``field_name``."""
    fields = options[group][option]
    if field_name in fields:
        return
    key = f"{group}.{field_name}"
    users = sorted(name for name, other in options[group].items() if field_name in other)
    if users:
        raise ConfigError(
            f"{key} is not used by {group}={option} (its fields: {', '.join(sorted(fields))}); "
            f"it belongs to {', '.join(f'{group}={name}' for name in users)}"
        )
    raise ConfigError(
        f"unknown key {key} for {group}={option}"
        + _suggest(key, (f"{group}.{name}" for name in fields))
    )


def check_top_level(key: str) -> None:
    """Raise :class:`ConfigError` for a top-level key that is not a config group."""
    if key not in GROUPS and key not in NODES and key != "hydra" and not key.startswith("hydra/"):
        raise ConfigError(f"unknown key {key}" + _suggest(key, (*GROUPS, *NODES)))


def _default_choices() -> dict[str, str]:
    choices: dict[str, str] = {}
    for entry in DEFAULTS:
        if isinstance(entry, dict):
            choices.update(entry)
    choices.update(dict.fromkeys(NODES, "default"))
    return choices


def check_command_line(argv: Sequence[str]) -> None:
    """Check the overrides of ``python -m experiments.run`` before composition.

    Returns silently when the arguments are not plain overrides (``--help``, ``--cfg``,
    another config name) or do not parse: Hydra then reports what is wrong.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from experiments._catalog import load_catalog

    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    if any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in argv):
        return
    texts = [arg for arg in argv if arg not in ("-m", "--multirun")]
    if any(re.match(r"\+?experiment=", text) for text in texts):
        return  # a preset changes groups and fields: checked once composed (check_composed)
    try:
        overrides = OverridesParser.create().parse_overrides(texts)
    except HydraException:
        return
    options = group_options(load_catalog())
    choices: dict[str, list[Any]] = {g: [c] for g, c in _default_choices().items()}
    fields: list[tuple[str, str, list[Any]]] = []  # group, field, values
    for override in overrides:
        key = override.key_or_group
        if override.is_sweep_override() and not multirun:
            return  # Hydra explains that a sweep needs -m
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or override.is_delete():
            continue
        if override.package is not None:
            return
        try:
            values = (
                list(override.sweep_iterator())
                if override.is_sweep_override()
                else [override.value()]
            )
        except HydraException:
            return  # a glob or an interval sweep: left to Hydra
        group, _, rest = key.partition(".")
        check_top_level(group)
        if not rest and group in NODES:
            fields_of = ", ".join(f"{group}.{name}" for name in options[group]["default"])
            raise ConfigError(f"{group} is not a config group; set its fields ({fields_of})")
        if not rest:
            if group in options:
                for value in values:
                    if value not in options[group]:
                        raise ConfigError(
                            f"{group}={value} is not an option; choose one of "
                            f"{sorted(options[group])}" + _suggest(str(value), options[group])
                        )
            choices[group] = values
            continue
        fields.append((group, rest.split(".")[0].split("[")[0], values))
    for group, field_name, _ in fields:
        if group in options:
            for option in choices[group]:
                check_field(group, option, field_name, options)
    _check_values(options, choices, fields)


def _check_values(
    options: Options, choices: Mapping[str, list[Any]], fields: list[tuple[str, str, list[Any]]]
) -> None:
    """Check each combination a sweep would run (at most :data:`MAX_COMBINATIONS`)."""
    axes: list[tuple[str, str | None, list[Any]]] = [(g, None, list(c)) for g, c in choices.items()]
    axes += [(g, f, v) for g, f, v in fields]
    count = math.prod(len(values) for _, _, values in axes)
    if count > MAX_COMBINATIONS:
        return
    for combination in itertools.product(*(values for _, _, values in axes)):
        chosen = {g: v for (g, f, _), v in zip(axes, combination, strict=True) if f is None}
        config = {g: dict(options[g][chosen[g]]) for g in options if g in chosen}
        for (group, field_name, _), value in zip(axes, combination, strict=True):
            if field_name is not None and group in config:
                config[group][field_name] = value
        check_values(config)


def _build(schema: type, values: Mapping[str, Any], group: str) -> Any:
    try:
        return schema(**values)
    except TypeError as error:
        raise ConfigError(f"{group}: {error}") from error


def check_values(config: Mapping[str, Mapping[str, Any]]) -> None:
    """Check one combination's values (group -> field -> value) without the heavy packages."""
    federation = _build(FederationConfig, config["federation"], "federation")
    dataset = _build(DATASET_SCHEMAS[config["dataset"]["name"]], config["dataset"], "dataset")
    model = _build(MODEL_SCHEMAS[config["model"]["name"]], config["model"], "model")
    validate_local(dataset=dataset, model=model, federation=federation)
    if "secagg" in config:
        check_min_clients(federation, config["secagg"])
    if "dp" in config:
        check_strategy(federation, str(config["dp"].get("name")))
    if federation.device == "cuda":
        check_cuda_build()
    if "run" in config and "chain" in config:
        run = _build(RunOptions, config["run"], "run")
        validate_run(
            run,
            chain=config["chain"],
            dp_audit=_audit(config),
            committee_size=int(config.get("secagg", {}).get("committee_size", 1) or 1),
        )


def _audit(config: Mapping[str, Mapping[str, Any]]) -> str | None:
    audit = config.get("dp", {}).get("audit")
    return None if audit is None else str(audit)


def check_strategy(federation: FederationConfig, dp_name: str) -> None:
    """FedProx's proximal term is applied by the plain trainer, not by DP-SGD (Opacus)."""
    if federation.strategy == "fedprox" and dp_name == "sample":
        raise ConfigError(
            "federation.strategy=fedprox needs the proximal term in local training, which "
            "dp=sample (Opacus DP-SGD) does not apply; use dp=off or dp=client, or another "
            "strategy (the adaptive ones compose with dp=sample)"
        )


def survivors_per_round(federation: FederationConfig) -> tuple[int, int]:
    """(clients selected, clients left after the configured dropout) in every round."""
    selected = max(1, round(federation.client_fraction * federation.clients))
    return selected, selected - math.floor(federation.dropout * selected)


def check_min_clients(federation: FederationConfig, secagg: Mapping[str, Any] | Any) -> None:
    """Refuse a federation whose rounds would all be too small for the scheme to reveal."""
    get = secagg.get if isinstance(secagg, Mapping) else lambda k: getattr(secagg, k, None)
    minimum = get("min_clients")
    if minimum is None:
        return
    _, survivors = survivors_per_round(federation)
    if survivors < minimum:
        raise ConfigError(
            f"federation.clients={federation.clients} (client_fraction="
            f"{federation.client_fraction}, dropout={federation.dropout}) leaves {survivors} "
            f"client(s) per round, but secagg={get('name')} reveals only sums of "
            f"secagg.min_clients={minimum} or more: no round would aggregate anything"
        )


def check_cuda_build() -> None:
    """Refuse ``federation.device=cuda`` on a torch build without CUDA (or ROCm), read
    from ``torch/version.py`` without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return
    built = {
        match.group(1): match.group(2).strip().strip("'\"")
        for match in re.finditer(r"^(cuda|hip|__version__)\b[^=]*=\s*(.+)$", text, re.M)
    }
    if built.get("cuda", "None") == "None" and built.get("hip", "None") == "None":
        raise ConfigError(
            f"federation.device=cuda, but this torch build ({built.get('__version__', '?')}) "
            "has no CUDA support; use federation.device=cpu or federation.device=auto"
        )


def check_composed(cfg: Any) -> None:
    """Strict keys on the composed config (a DictConfig), against the real schemas."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return
    for key in cfg:
        if str(key) != "defaults":
            check_top_level(str(key))
    for group in (*GROUPS, *NODES):
        node = cfg.get(group)
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if schema is None or not dataclasses.is_dataclass(schema):
            continue
        names = {item.name for item in dataclasses.fields(schema)}
        option = "default" if group in NODES else str(node.get("name", "?"))
        for key in node:
            if str(key) not in names:
                options = {group: {option: dict.fromkeys(names)}}
                check_field(group, option, str(key), options)


def check_feasible(cfg: Any) -> None:
    """Checks on the typed config that need the heavy packages, before any training:
    the scheme's minimum number of clients, a masking round at the configured dropout
    (naming the largest dropout fraction ``n`` clients allow), and the CUDA device."""
    check_min_clients(cfg.federation, cfg.secagg)
    check_strategy(cfg.federation, str(cfg.dp.name))
    _check_scheme(cfg.federation, cfg.secagg)
    if cfg.federation.device == "cuda":
        check_cuda_build()
        from experiments._federation import resolve_device

        resolve_device("cuda")


def _check_scheme(federation: FederationConfig, schema: Any) -> None:
    """The scheme's own feasibility check at the configured clients per round and dropout
    (masking: a round must be plannable, the error naming the largest dropout allowed)."""
    from secagg import SecAggError
    from secagg._hydra import scheme_class

    selected, _ = survivors_per_round(federation)
    try:
        scheme_class(schema.name).check_feasible(
            schema, clients_per_round=selected, dropout=federation.dropout
        )
    except SecAggError as error:
        raise ConfigError(f"secagg={schema.name} {error}") from error


def check_partition(cfg: Any, data: Any) -> None:
    """With ``dp=sample`` every client needs at least ``batch_size`` training records (the
    sample rate is ``batch_size / n_train``); name the smallest clients and the fixes."""
    if getattr(cfg.dp, "name", None) != "sample":
        return
    batch = cfg.federation.batch_size
    small = sorted(
        (client.n_train, client.name) for client in data.clients if client.n_train < batch
    )
    if not small:
        return
    listed = ", ".join(f"{name} has {size}" for size, name in small[:3])
    more = f" and {len(small) - 3} more" if len(small) > 3 else ""
    raise ConfigError(
        f"federation.partition={cfg.federation.partition} (alpha={cfg.federation.alpha}) "
        f"leaves clients with fewer training records than federation.batch_size={batch}, "
        f"which dp=sample needs ({listed}{more}); raise federation.alpha, lower "
        "federation.batch_size or federation.clients, or use federation.partition=iid"
    )
