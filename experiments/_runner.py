"""Run one federation from a validated :class:`RunConfig` and write ``results.json``.

This is the Hydra-free core of ``python -m experiments.run``: tests and scripts call
:func:`run_experiment` directly with a config composed through Hydra's compose API.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dp import DPError, prepare_model
from experiments._config import RunConfig, validate
from experiments._datasets import load_dataset
from experiments._errors import ConfigError
from experiments._federation import (
    SEED_DATA,
    SEED_MODEL,
    Federation,
    RoundRecord,
    RunResults,
    derive_seed,
    resolve_device,
)
from experiments._models import build_model
from experiments._privacy import build_privacy_layer
from secagg._hydra import build_scheme

log = logging.getLogger("experiments")

RESULTS_FILE = "results.json"
# The layers this runner wires in so far; others fail at start rather than run unprotected.
SUPPORTED_DP = ("off", "sample", "client")
SUPPORTED_CHAIN = ("none",)


def check_supported(cfg: RunConfig) -> None:
    """Refuse dp/chain options the runner does not wire in yet (never run them silently)."""
    if cfg.dp.name not in SUPPORTED_DP:
        raise ConfigError(
            f"dp must be one of {list(SUPPORTED_DP)} in this runner, got {cfg.dp.name!r}"
        )
    if cfg.chain.name not in SUPPORTED_CHAIN:
        raise ConfigError(
            f"chain must be one of {list(SUPPORTED_CHAIN)} in this runner, got {cfg.chain.name!r}"
        )


def build_federation(cfg: RunConfig) -> Federation:
    """Validate ``cfg`` and build data, model, scheme and the federation from it."""
    validate(cfg)
    check_supported(cfg)
    fed = cfg.federation
    data_rng = np.random.default_rng(derive_seed(fed.seed, SEED_DATA))
    data = load_dataset(cfg.dataset, fed, data_rng)
    model = build_model(cfg.model, data, seed=derive_seed(fed.seed, SEED_MODEL))
    privacy = build_privacy_layer(cfg.dp, federation=fed, data=data, scheme_name=cfg.secagg.name)
    if privacy.mode == "sample":
        # Once, on the global model, so every client and the aggregator share one layout.
        try:
            model = prepare_model(model, fix=bool(getattr(cfg.dp, "fix_model", False)))
        except DPError as error:
            raise ConfigError(f"dp=sample: {error}") from error
    return Federation(
        config=fed,
        data=data,
        model=model,
        scheme=build_scheme(cfg.secagg),
        device=resolve_device(fed.device),
        privacy=privacy,
    )


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def write_results(results: RunResults, output_dir: Path) -> Path:
    """Write ``results.json`` (non-finite floats become null) and return its path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / RESULTS_FILE
    payload = _finite_or_none(results.to_dict())
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def use_progress_bar() -> bool:
    """A progress bar for interactive runs only: stderr is a TTY and ``CI`` is unset."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def _format_round(record: RoundRecord, rounds: int) -> str:
    auc = "n/a" if record.auc is None else f"{record.auc:.4f}"
    return (
        f"round {record.round}/{rounds}: accuracy={record.accuracy:.4f} auc={auc} "
        f"loss={record.loss:.4f} clients={record.n_clients} dropped={len(record.dropped)}"
    )


def run_experiment(
    cfg: RunConfig,
    *,
    resolved_config: dict[str, Any],
    output_dir: Path | None = None,
    progress: bool | None = None,
) -> RunResults:
    """Run the federation ``cfg`` describes; write ``results.json`` to ``output_dir``.

    ``resolved_config`` is the resolved config as plain containers (stored verbatim).
    """
    start = time.perf_counter()
    federation = build_federation(cfg)
    rounds = cfg.federation.rounds
    show_bar = use_progress_bar() if progress is None else progress
    log.info(
        "dataset=%s clients=%d rounds=%d model=%s secagg=%s dp=%s chain=%s device=%s",
        federation.data.name,
        len(federation.data.clients),
        rounds,
        cfg.model.name,
        cfg.secagg.name,
        cfg.dp.name,
        cfg.chain.name,
        federation.device,
    )
    on_round: Callable[[RoundRecord], None]
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=rounds, desc="rounds", unit="round", file=sys.stderr)

        def on_round(record: RoundRecord) -> None:
            bar.update(1)
            bar.set_postfix(accuracy=f"{record.accuracy:.4f}", loss=f"{record.loss:.4f}")

    else:
        bar = None

        def on_round(record: RoundRecord) -> None:
            log.info(_format_round(record, rounds))

    try:
        records, final = federation.run(on_round=on_round)
    finally:
        if bar is not None:
            bar.close()
    final = dataclasses.replace(final, wall_seconds=time.perf_counter() - start)
    results = RunResults(config=resolved_config, rounds=records, final=final)
    if output_dir is not None:
        path = write_results(results, output_dir)
        log.info("results written to %s", path)
    return results


def summary_table(results: RunResults) -> str:
    """A short plain-text summary of a run (printed at the end of ``experiments.run``)."""
    final = results.final
    last = results.rounds[-1]

    def fmt(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [
        ("rounds", str(len(results.rounds))),
        ("pooled accuracy", fmt(final.accuracy)),
        ("pooled AUC", fmt(final.auc)),
        ("mean client accuracy", fmt(final.mean_client_accuracy)),
    ]
    rows += [(f"  {name}", fmt(acc)) for name, acc in final.per_client_accuracy.items()]
    rows += [
        ("final loss", fmt(last.loss)),
        ("epsilon", fmt(final.epsilon, 3)),
    ]
    privacy = final.privacy or {}
    rows += [(f"  {name}", fmt(summary.get("epsilon"), 3)) for name, summary in privacy.items()]
    rows += [
        ("delta", "n/a" if final.delta is None else f"{final.delta:.3g}"),
        ("bytes up (total)", str(final.bytes_up_total)),
        ("gas (total)", "n/a" if final.gas_total is None else str(final.gas_total)),
        ("wall seconds", fmt(final.wall_seconds, 2)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["summary", "-" * (width + 14)]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)
