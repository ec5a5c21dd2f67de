"""Benchmark of the federation runner's own overhead, printed as JSON.

Runs the same tiny synthetic federation in-process for several client counts with the
``plain`` scheme and reports, per configuration, the mean seconds per round by phase, and
ratios measured in the same run: the share of a round that is not local training
(aggregation + evaluation bookkeeping) and how the per-round time scales with the number
of clients. Absolute times depend on the machine; the ratios are what to compare.

One torch thread by default (``--threads``): these models are tiny, and on a shared
machine several intra-op threads spin against each other and swamp the measurement.

Usage: ``.venv/bin/python benchmarks/bench_runner.py [--rounds R] [--clients 3 10]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import RunConfig, register_configs, run_experiment

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def measure(clients: int, rounds: int) -> dict[str, float]:
    """Mean per-round seconds of one synthetic federation with ``clients`` clients."""
    overrides = [
        "dataset=synthetic",
        "dataset.n_samples=4000",
        "dataset.n_features=50",
        "model=mlp",
        "model.hidden=[64,32]",
        f"federation.clients={clients}",
        f"federation.rounds={rounds}",
        "federation.device=cpu",
    ]
    cfg = OmegaConf.to_object(compose(config_name="config", overrides=overrides))
    if not isinstance(cfg, RunConfig):
        raise TypeError("composition did not give a RunConfig")
    start = time.perf_counter()
    results = run_experiment(cfg, resolved_config={}, progress=False)
    elapsed = time.perf_counter() - start
    phases = {
        phase: sum(getattr(r.seconds, phase) for r in results.rounds) / rounds
        for phase in ("train", "protect", "combine", "reveal")
    }
    round_seconds = elapsed / rounds
    return {
        "clients": clients,
        **{f"{phase}_s_per_round": value for phase, value in phases.items()},
        "wall_s_per_round": round_seconds,
        "non_train_share": 1.0 - phases["train"] / round_seconds,
        "final_accuracy": results.final.accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        measure(args.clients[0], 1)  # warm-up: first-touch allocations, lazy imports
        rows = [measure(k, args.rounds) for k in args.clients]
    base = rows[0]
    report = {
        "benchmark": "runner_overhead",
        "scheme": "plain",
        "rounds": args.rounds,
        "threads": args.threads,
        "runs": rows,
        "ratios": {
            f"round_time_{row['clients']}_vs_{base['clients']}_clients": row["wall_s_per_round"]
            / base["wall_s_per_round"]
            for row in rows[1:]
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
