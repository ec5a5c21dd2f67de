"""Hydra entry point: ``python -m experiments.run [overrides]`` (console script ``secagg-run``).

Composes the config from ``conf/`` and the registered schemas, converts it to typed
dataclasses with ``OmegaConf.to_object`` (a missing or mistyped field fails here, at
start), validates every value, runs the federation and writes ``results.json`` into
Hydra's output directory (``hydra.run.dir=DIR`` puts it in DIR). ``-m`` runs a sweep.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from chain import redact_url
from experiments._config import RunConfig, register_configs
from experiments._errors import ExperimentError
from experiments._runner import run_experiment, summary_table

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

log = logging.getLogger("experiments")

register_configs()


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Convert a composed config into a :class:`RunConfig` (typed dataclasses)."""
    run_cfg = OmegaConf.to_object(cfg)
    if not isinstance(run_cfg, RunConfig):
        raise ExperimentError(f"the composed config is a {type(run_cfg).__name__}, not RunConfig")
    return run_cfg


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, for ``results.json``."""
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    container.pop("defaults", None)
    chain = container.get("chain")
    if isinstance(chain, dict) and chain.get("url"):
        chain["url"] = redact_url(chain["url"])  # never credentials, paths or API keys
    return container


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_cfg = to_run_config(cfg)
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        results = run_experiment(
            run_cfg, resolved_config=resolved_container(cfg), output_dir=output_dir
        )
    except ExperimentError as error:
        log.error("%s: %s", type(error).__name__, error)
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    print(summary_table(results))
    print(f"results: {output_dir / 'results.json'}")


def main() -> None:
    """Console-script entry point (``secagg-run``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
