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
from pathlib import Path
from typing import Any

import numpy as np

from chain import ChainError
from chain._hydra import validate_options
from dp import DPError, prepare_model
from experiments._artifacts import MODEL_FILE, run_metadata, save_model
from experiments._checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    capture,
    check_matches,
    checkpoint_config,
    data_digest,
    read_checkpoint,
    restore,
    write_checkpoint,
)
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
from experiments._ledger import open_ledger_layer, scheme_config_of
from experiments._models import build_model
from experiments._preflight import check_feasible, check_partition
from experiments._privacy import build_privacy_layer, preprocessing_for
from secagg._hydra import build_scheme

log = logging.getLogger("experiments")
# Per-round lines: always in run.log; on the console only when there is no progress bar.
ROUND_LOG = logging.getLogger("experiments.rounds")

RESULTS_FILE = "results.json"
# The layers this runner wires in so far; others fail at start rather than run unprotected.
SUPPORTED_DP = ("off", "sample", "client")
SUPPORTED_CHAIN = ("none", "inprocess", "anvil", "rpc")


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
    if cfg.chain.name != "none":
        try:
            validate_options(cfg.chain)
        except ChainError as error:
            raise ConfigError(f"chain.{error}") from error
    max_dropout = getattr(cfg.secagg, "max_dropout_fraction", None)
    if max_dropout is not None and cfg.federation.dropout > max_dropout:
        raise ConfigError(
            f"federation.dropout={cfg.federation.dropout} exceeds "
            f"secagg.max_dropout_fraction={max_dropout}: the masking threshold would not "
            "survive that many dropouts (raise secagg.max_dropout_fraction)"
        )
    committee = int(getattr(cfg.secagg, "committee_size", 1) or 1)
    if cfg.dp.name == "client" and not getattr(cfg.dp, "distributed", False) and committee > 1:
        raise ConfigError(
            "dp=client with central noise needs a single releasing party that adds the noise "
            f"inside its release; a decryption committee (secagg.committee_size={committee}) "
            "combines partials to the exact sum: use dp.distributed=true, or "
            "secagg.committee_size=1 secagg.committee_threshold=1"
        )
    check_feasible(cfg)  # min_clients, a masking round at the largest dropout, the device


def build_federation(cfg: RunConfig) -> Federation:
    """Validate ``cfg`` and build data, model, scheme and the federation from it."""
    validate(cfg)
    check_supported(cfg)
    fed = cfg.federation
    data_rng = np.random.default_rng(derive_seed(fed.seed, SEED_DATA))
    data = load_dataset(cfg.dataset, fed, data_rng, preprocessing=preprocessing_for(cfg.dp))
    check_partition(cfg, data)  # dp=sample: no client smaller than a batch
    model = build_model(cfg.model, data, seed=derive_seed(fed.seed, SEED_MODEL))
    privacy = build_privacy_layer(cfg.dp, federation=fed, data=data, scheme_name=cfg.secagg.name)
    if privacy.mode == "sample":
        # Once, on the global model, so every client and the aggregator share one layout.
        try:
            model = prepare_model(model, fix=bool(getattr(cfg.dp, "fix_model", False)))
        except DPError as error:
            raise ConfigError(
                f"dp=sample: model={cfg.model.name}: {error}; on the command line: "
                "dp.fix_model=true"
            ) from error
    return Federation(
        config=fed,
        data=data,
        model=model,
        scheme=build_scheme(cfg.secagg),
        device=resolve_device(fed.device),
        privacy=privacy,
        scheme_config=scheme_config_of(cfg.secagg),
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
    epsilon = "n/a" if record.epsilon is None else f"{record.epsilon:.3f}"
    return (
        f"round {record.round}/{rounds}: accuracy={record.accuracy:.4f} auc={auc} "
        f"loss={record.loss:.4f} epsilon={epsilon} clients={record.n_clients} "
        f"dropped={len(record.dropped)}"
    )


class _NotRounds(logging.Filter):
    """Keeps the per-round lines off the console while the progress bar shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != ROUND_LOG.name


def _console_handlers() -> list[logging.Handler]:
    """The root logger's console handlers (stream handlers that are not files)."""
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def run_experiment(
    cfg: RunConfig,
    *,
    resolved_config: dict[str, Any],
    output_dir: Path | None = None,
    progress: bool | None = None,
) -> RunResults:
    """Run the federation ``cfg`` describes; write ``results.json`` to ``output_dir``.

    ``resolved_config`` is the resolved config as plain containers (stored verbatim, but
    for ``run.*``). With an ``output_dir`` a checkpoint is written after every round;
    ``run.resume`` continues from one, ``run.stop_after`` stops after that round (no
    ``results.json`` then: the returned results' ``meta.stopped_after`` says so).
    """
    start = time.perf_counter()
    resolved_config = {k: v for k, v in resolved_config.items() if k != "run"}
    validate(cfg)
    if cfg.run.stop_after is not None and output_dir is None:
        raise ConfigError("run.stop_after needs an output directory to write the checkpoint in")
    config = checkpoint_config(cfg)
    checkpoint: Checkpoint | None = None
    if cfg.run.resume is not None:  # before any data or training: a mismatch fails fast
        checkpoint = read_checkpoint(cfg.run.resume)
        check_matches(checkpoint, config=config, rounds=cfg.federation.rounds)
    federation = build_federation(cfg)
    digest = data_digest(federation.data) if output_dir or checkpoint else ""
    previous: list[RoundRecord] = []
    seconds_before = 0.0
    if checkpoint is not None:
        restore(federation, checkpoint, data_sha256=digest)
        previous = checkpoint.round_records()
        seconds_before = checkpoint.wall_seconds
        log.info("resuming after round %d from %s", checkpoint.round, cfg.run.resume)
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
    bar: Any = None
    quiet = _NotRounds()
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(
            total=rounds, initial=len(previous), desc="rounds", unit="round", file=sys.stderr
        )
        for handler in _console_handlers():
            handler.addFilter(quiet)

    done = list(previous)

    def on_round(record: RoundRecord) -> None:
        ROUND_LOG.info(_format_round(record, rounds))
        done.append(record)
        if output_dir is not None:
            state = capture(
                federation,
                round_id=record.round,
                records=done,
                config=config,
                data_sha256=digest,
                wall_seconds=seconds_before + time.perf_counter() - start,
                ledger=federation.ledger,
            )
            write_checkpoint(state, output_dir / CHECKPOINT_FILE)
        if bar is not None:
            bar.update(1)
            postfix = {"accuracy": f"{record.accuracy:.4f}", "loss": f"{record.loss:.4f}"}
            if record.epsilon is not None:
                postfix["epsilon"] = f"{record.epsilon:.3f}"
            bar.set_postfix(postfix)

    with open_ledger_layer(
        cfg.chain,
        n_clients=len(federation.data.clients),
        scheme=federation.scheme,
        scheme_schema=cfg.secagg,
        dim=federation.dim,
        dp_mode=federation.privacy.mode,
        output_dir=output_dir,
        dp_budget=_dp_budget(cfg) if federation.privacy.mode == "sample" else None,
        resume=checkpoint.ledger if checkpoint is not None else None,
    ) as ledger:
        federation.ledger = ledger
        try:
            records, final = federation.run(
                on_round=on_round, previous=previous, stop_after=cfg.run.stop_after
            )
        finally:
            if bar is not None:
                bar.close()
                for handler in _console_handlers():
                    handler.removeFilter(quiet)
        report = ledger.final_audit()
        log.info("audit: %s (%d finding(s))", report.verdict.name.lower(), len(report.findings))
        final = dataclasses.replace(
            final,
            audit={
                "verdict": report.to_dict()["verdict"],
                "exit_code": report.exit_code,
                "findings": report.to_dict()["findings"],
            },
        )
        ledger_entry = ledger.entry()
    final = dataclasses.replace(final, wall_seconds=seconds_before + time.perf_counter() - start)
    meta = run_metadata(federation.device)
    if checkpoint is not None:
        meta["resumed_from"] = {"checkpoint": str(cfg.run.resume), "round": checkpoint.round}
    if len(records) < rounds:  # run.stop_after: the checkpoint is the run's output
        meta["stopped_after"] = records[-1].round if records else 0
        log.info(
            "stopped after round %d of %d; continue with run.resume=%s",
            meta["stopped_after"],
            rounds,
            output_dir,
        )
        return RunResults(config=resolved_config, rounds=records, final=final, meta=meta)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        dp_fix = bool(getattr(cfg.dp, "fix_model", False))
        save_model(
            federation.evaluation_model(),
            model_config=cfg.model,
            data=federation.data,
            dp_fix=dp_fix if federation.privacy.mode == "sample" else None,
            path=output_dir / MODEL_FILE,
        )
        meta["model_file"] = MODEL_FILE
    results = RunResults(
        config=resolved_config, rounds=records, final=final, ledger=ledger_entry, meta=meta
    )
    if output_dir is not None:
        path = write_results(results, output_dir)
        log.info("results written to %s", path)
    return results


def _dp_budget(cfg: RunConfig) -> float | None:
    """Each client's epsilon budget under dp=sample: ``dp.epsilon_budget``, else the target."""
    budget = getattr(cfg.dp, "epsilon_budget", None)
    return budget if budget is not None else getattr(cfg.dp, "target_epsilon", None)


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
        (f"  {name} audit", f"epsilon >= {entry['epsilon_lower']:.3f} ({entry['confidence']:.0%})")
        for name, entry in (final.privacy_audit or {}).items()
    ]
    rows += [
        ("delta", "n/a" if final.delta is None else f"{final.delta:.3g}"),
        ("bytes up (total)", str(final.bytes_up_total)),
        ("gas (total)", "n/a" if final.gas_total is None else str(final.gas_total)),
        ("wall seconds", fmt(final.wall_seconds, 2)),
    ]
    if final.audit is not None:
        rows.append(("audit verdict", str(final.audit["verdict"])))
        rows += [
            (f"  round {f['round_id']}", f"{f['check']}: {f['client'] or ''} {f['detail']}")
            for f in final.audit["findings"]
        ]
    if results.ledger is not None:
        rows.append(("ledger", f"{results.ledger['backend']} {results.ledger['address']}"))
        rows.append(("artifact store", str(results.ledger["store"])))
    width = max(len(name) for name, _ in rows)
    lines = [round_table(results), "", "summary", "-" * (width + 14)]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def round_table(results: RunResults) -> str:
    """Per round: pooled accuracy, cumulative epsilon, clients in the sum, bytes, gas."""
    header = ("round", "accuracy", "epsilon", "clients", "bytes up", "gas")
    rows = [
        (
            str(r.round),
            f"{r.accuracy:.4f}",
            "n/a" if r.epsilon is None else f"{r.epsilon:.3f}",
            str(r.n_clients),
            str(r.bytes_up),
            "n/a" if r.gas_used is None else str(r.gas_used),
        )
        for r in results.rounds
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
