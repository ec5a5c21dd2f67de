"""Hydra entry point: ``python -m experiments.run [overrides]`` (console script ``secagg-run``).

Composes the config from ``conf/`` and the registered schemas, converts it to typed
dataclasses with ``OmegaConf.to_object`` (a missing or mistyped field fails here, at
start), validates every value, runs the federation and writes ``results.json`` into
Hydra's output directory (``hydra.run.dir=DIR`` puts it in DIR). ``-m`` runs a sweep.

Exit codes (of a sweep: the largest over its runs):

* 0: the run finished and its results are usable;
* 2: a bad configuration (one line on stderr, before training; most before torch loads);
* 3: the final audit of the ledger has findings (``final.audit`` in ``results.json``);
* 4: some round aggregated no client (``rounds[i].n_clients == 0``): nothing was learnt
  in that round, though epsilon may have been spent.

``run.stop_after=N`` stops after round N with exit code 0 and leaves ``checkpoint.pt``
(no ``results.json``); ``run.resume=DIR`` continues from it (a checkpoint that cannot be
read, or a config that differs from it, is exit code 2).

A final model no better than always predicting the most common test class is reported
as a warning (exit code unchanged): with strong DP and little data this is common.
Third-party INFO logs (Opacus) and Opacus's alpha-order warnings are silenced unless
``hydra.verbose`` names a logger.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments._config import RunConfig, register_configs
from experiments._errors import ConfigError, ExperimentError
from experiments._preflight import check_command_line, check_composed
from experiments._registry import load_plugins

if TYPE_CHECKING:
    from experiments._federation import RunResults

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

log = logging.getLogger("experiments")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_AUDIT_FINDINGS = 3
EXIT_EMPTY_ROUND = 4
# Loggers quietened to WARNING by default, and warnings ignored (message regexes).
QUIET_LOGGERS = ("opacus",)
QUIET_WARNINGS = (r"Optimal order is the (largest|smallest) alpha",)
_exit_codes: list[int] = []


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Convert a composed config into a :class:`RunConfig` (typed dataclasses); unknown
    keys, including ones added with ``+``, are refused first."""
    check_composed(cfg)
    run_cfg = OmegaConf.to_object(cfg)
    if not isinstance(run_cfg, RunConfig):
        raise ExperimentError(f"the composed config is a {type(run_cfg).__name__}, not RunConfig")
    return run_cfg


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, for ``results.json``."""
    from chain import redact_url

    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    container.pop("defaults", None)
    chain = container.get("chain")
    if isinstance(chain, dict) and chain.get("url"):
        chain["url"] = redact_url(chain["url"])  # never credentials, paths or API keys
    return container


def quiet_third_party(verbose: Any) -> None:
    """Silence third-party INFO logs and noisy warnings, unless ``hydra.verbose`` is set."""
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def exit_code(results: RunResults) -> int:
    """The documented exit code of a finished run; logs why when it is not 0."""
    code = EXIT_OK
    empty = [r.round for r in results.rounds if r.n_clients == 0]
    if empty:
        log.warning("round(s) %s aggregated no client: the model did not change in them", empty)
        code = EXIT_EMPTY_ROUND
    audit = results.final.audit
    if audit is not None and audit.get("findings"):
        log.warning("the final audit has %d finding(s)", len(audit["findings"]))
        code = EXIT_AUDIT_FINDINGS
    majority = results.final.majority_accuracy
    if majority is not None and results.final.accuracy <= majority + 1e-9:
        log.warning(
            "the final model is at the majority-class level (accuracy %.4f; always "
            "predicting the most common test class gives %.4f): it may have learnt nothing",
            results.final.accuracy,
            majority,
        )
    return code


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from experiments._runner import run_experiment, summary_table

    quiet_third_party(HydraConfig.get().verbose)
    try:
        run_cfg = to_run_config(cfg)
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        results = run_experiment(
            run_cfg, resolved_config=resolved_container(cfg), output_dir=output_dir
        )
    except ExperimentError as error:
        log.error("%s: %s", type(error).__name__, error)
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from error
    print(summary_table(results))
    stopped = (results.meta or {}).get("stopped_after")
    if stopped is not None:  # run.stop_after: the checkpoint is this run's output
        print(f"stopped after round {stopped}; continue with run.resume={output_dir}")
    else:
        print(f"results: {output_dir / 'results.json'}")
    _exit_codes.append(exit_code(results))


def main() -> None:
    """Console-script entry point (``secagg-run``): check the command line first (no
    torch yet, exit 2 with one line on a bad config), then compose and run."""
    try:
        load_plugins()  # $SECAGG_PLUGINS: user packages that register models and datasets
        check_command_line(sys.argv[1:])
    except ConfigError as error:
        print(f"ConfigError: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from error
    register_configs()
    _exit_codes.clear()
    _hydra_main()
    code = max(_exit_codes, default=EXIT_OK)
    if code != EXIT_OK:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
