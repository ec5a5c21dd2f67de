"""Benchmark: seconds per training step of Opacus DP-SGD against non-private SGD.

For each model (a small MLP 30-64-32-2, a bigger MLP 784-256-128-10, a small GroupNorm
CNN on 1x28x28, and the two imaging models the BreastMNIST and PneumoniaMNIST presets and
their search train: the non-private preset's CNN, ``model=cnn_medmnist``, and the
full-width ``model=resnet18``, both with two classes) and batch size (64, 256; the ResNet
only at 64 on the CPU, where one of its DP steps takes seconds), measures the non-private
step and the DP step in each of Opacus's grad-sample modes (``hooks``, ``functorch``,
``ew``, ``ghost`` clipping), on the CPU and, where CUDA is present, on the GPU; each
timing is also given as samples per second (batch / seconds per step), and the summary's
``imaging_samples_per_second`` lists them per device for the imaging models. Each mode is
first checked for correctness at noise 0: its clipped, averaged gradient must equal an
explicit per-sample loop (clip each sample's gradient to C, sum, divide by the batch size).

Each configuration runs in a forked child (libraries already imported by the parent) so
that its peak memory can be read: on the CPU the growth of peak RSS over the child's
starting RSS (``resource``), on CUDA ``torch.cuda.max_memory_allocated``. Step times are
medians over the timed steps (robust to other processes on a shared CPU). Prints one JSON
document; ratios are DP / non-private in the same run.

The ``privacy_audit`` section runs the default federation (``dp=hardened``, breast_cancer,
logreg, 5 clients, 20 rounds; ``secagg=plain chain=none``, which the audit does not
touch) with ``dp.audit=none`` and with ``dp.audit=one_run`` (1000 canaries per client) and
reports the audit's cost (extra seconds per round), the accuracy with and without
canaries, and each client's ratio epsilon_lower / epsilon.
Usage: ``python benchmarks/bench_dp.py [--quick] [--audit-only | --no-audit]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import opacus
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dp import GRAD_SAMPLE_MODES

MODES = ("hooks", "functorch", "ew", "ghost")
# Timed CPU steps per model: enough to average out, small enough for ~3 minutes in all.
STEPS = {
    "mlp_30_64_32_2": 300,
    "mlp_784_256_128_10": 12,
    "cnn_28x28_groupnorm": 8,
    "cnn_medmnist": 8,
    "resnet18": 3,
}
# Slow models (a DP step of the full ResNet takes seconds on the CPU): batch 64 only on the
# CPU, and a longer timeout per configuration.
SLOW_MODELS = frozenset({"resnet18"})
IMAGING = ("cnn_medmnist", "resnet18")
CLIP = 1.0


def small_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2)
    )


def big_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.GroupNorm(8, 32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


def preset_cnn() -> nn.Module:
    """``model=cnn_medmnist`` as conf/model/cnn_medmnist.yaml sets it, for a binary task."""
    from omegaconf import OmegaConf

    from experiments import SmallCNN

    preset = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/model/cnn_medmnist.yaml")
    return SmallCNN(2, list(preset.channels), int(preset.groups), int(preset.hidden))


def resnet18() -> nn.Module:
    """``model=resnet18`` at its defaults (width 64, GroupNorm 16) for a binary task."""
    from experiments import ResNet18, ResNet18Config

    config = ResNet18Config()
    return ResNet18(1, 2, width=config.width, groups=config.groups)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    "mlp_30_64_32_2": (small_mlp, (30,), 2),
    "mlp_784_256_128_10": (big_mlp, (1, 28, 28), 10),
    "cnn_28x28_groupnorm": (small_cnn, (1, 28, 28), 10),
    "cnn_medmnist": (preset_cnn, (1, 28, 28), 2),
    "resnet18": (resnet18, (1, 28, 28), 2),
}


def _data(
    shape: tuple[int, ...], classes: int, batch: int, device: torch.device
) -> tuple[Any, Any]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=generator)
    y = torch.randint(0, classes, (batch,), generator=generator)
    return x.to(device), y.to(device)


def _reference_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Per-sample loop: clip each sample's gradient to CLIP, sum, divide by the batch."""
    loss_fn = nn.CrossEntropyLoss()
    total = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(len(y)):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]  # type: ignore[union-attr]
        norm = torch.sqrt(torch.stack([(g**2).sum() for g in grads]).sum())
        factor = min(1.0, CLIP / (float(norm) + 1e-6))
        for t, g in zip(total, grads, strict=True):
            t += g * factor
    return [t / len(y) for t in total]


def _private(model: nn.Module, x: Any, y: Any, mode: str, sigma: float) -> tuple[Any, Any, Any]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=len(y))
    engine = PrivacyEngine()
    kwargs: dict[str, Any] = dict(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=CLIP,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )
    criterion: Any = nn.CrossEntropyLoss()
    if mode == "ghost":
        module, dp_optimizer, criterion, _ = engine.make_private(criterion=criterion, **kwargs)
    else:
        module, dp_optimizer, _ = engine.make_private(**kwargs)
    return module, dp_optimizer, criterion


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_config(job: dict[str, Any], queue: Any) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    factory, shape, classes = MODELS[job["model"]]
    x, y = _data(shape, classes, job["batch"], device)
    result: dict[str, Any] = {}
    start_rss = _current_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        torch.manual_seed(0)
        model = factory().to(device)
        if job["mode"] == "nonprivate":
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            loss_fn = nn.CrossEntropyLoss()

            def step() -> None:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
        else:
            if job["check"]:
                torch.manual_seed(0)
                reference = _reference_gradient(factory().to(device), x[:32], y[:32])
                torch.manual_seed(0)  # the same initial weights as the reference
                module, dp_opt, criterion = _private(
                    factory().to(device), x[:32], y[:32], job["mode"], 0.0
                )
                dp_opt.zero_grad()
                criterion(module(x[:32]), y[:32]).backward()
                dp_opt.step()
                error = max(
                    float((p.grad - r).abs().max())
                    for p, r in zip(module.parameters(), reference, strict=True)
                )
                result["max_abs_error_vs_loop"] = error
                result["correct"] = error < 1e-5
            module, dp_opt, criterion = _private(model, x, y, job["mode"], 1.0)

            def step() -> None:
                dp_opt.zero_grad()
                criterion(module(x), y).backward()
                dp_opt.step()

        for _ in range(2):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        durations = []
        for _ in range(job["steps"]):
            began = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            durations.append(time.perf_counter() - began)
        # The median resists other processes sharing the CPU; the mean is reported too.
        result["seconds_per_step"] = statistics.median(durations)
        result["mean_seconds_per_step"] = statistics.fmean(durations)
        result["samples_per_second"] = job["batch"] / result["seconds_per_step"]
        if device.type == "cuda":
            result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
        else:
            result["peak_memory_bytes"] = max(0, _peak_rss_bytes() - start_rss)
    except Exception as exc:  # reported in the JSON, not hidden
        result["error"] = f"{type(exc).__name__}: {exc}"
    queue.put(result)


def _run_forked(job: dict[str, Any]) -> dict[str, Any]:
    context = mp.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_run_config, args=(job, queue))
    process.start()
    try:
        result: dict[str, Any] = queue.get(timeout=job["timeout"])
    except Exception:
        result = {"error": "timed out"}
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
    return result


AUDIT_OVERRIDES = ("secagg=plain", "chain=none", "federation.device=cpu")


def _default_run(audit: str, extra: tuple[str, ...]) -> dict[str, Any]:
    """One default federation with ``dp.audit=audit``: seconds per round, accuracy, audit."""
    from hydra import compose
    from omegaconf import OmegaConf

    from experiments import RunConfig, run_experiment

    overrides = [*AUDIT_OVERRIDES, *extra, f"dp.audit={audit}"]
    cfg = OmegaConf.to_object(compose(config_name="config", overrides=overrides))
    if not isinstance(cfg, RunConfig):
        raise TypeError("composition did not give a RunConfig")
    start = time.perf_counter()
    results = run_experiment(cfg, resolved_config={}, progress=False)
    elapsed = time.perf_counter() - start
    rounds = len(results.rounds)
    return {
        "overrides": overrides,
        "train_s_per_round": sum(r.seconds.train for r in results.rounds) / rounds,
        "wall_s_per_round": elapsed / rounds,
        "accuracy": results.final.accuracy,
        "mean_client_accuracy": results.final.mean_client_accuracy,
        "epsilon": results.final.epsilon,
        "privacy_audit": results.final.privacy_audit,
    }


def audit_section(*, repeats: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The one-run audit's cost and tightness on the default run (median of ``repeats``)."""
    from hydra import initialize_config_dir

    from experiments import register_configs

    register_configs()
    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "one_run": []}
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        _default_run("one_run", (*extra, "federation.rounds=1"))  # warm-up: imports, caches
        for _ in range(repeats):
            for audit in runs:  # interleaved, so a busy CPU hurts both alike
                runs[audit].append(_default_run(audit, extra))

    def median(audit: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[audit])

    ratios = [
        entry["epsilon_lower"] / entry["epsilon_claimed"]
        for run in runs["one_run"]
        for entry in (run["privacy_audit"] or {}).values()
        if entry["epsilon_claimed"]
    ]
    return {
        "runs": runs,
        "extra_train_s_per_round": median("one_run", "train_s_per_round")
        - median("none", "train_s_per_round"),
        "extra_wall_s_per_round": median("one_run", "wall_s_per_round")
        - median("none", "wall_s_per_round"),
        "accuracy_without_canaries": median("none", "accuracy"),
        "accuracy_with_canaries": median("one_run", "accuracy"),
        "epsilon_lower_over_epsilon_max": max(ratios) if ratios else None,
        "epsilon_lower_over_epsilon_mean": statistics.fmean(ratios) if ratios else None,
        "note": (
            "epsilon_lower is a lower bound at 95% confidence on each client's privacy "
            "loss in this run; epsilon is the accountant's upper bound"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--audit-only", action="store_true", help="only the privacy_audit part")
    skip.add_argument("--no-audit", action="store_true", help="skip the privacy_audit part")
    args = parser.parse_args()
    if args.audit_only:
        torch.set_num_threads(args.threads)
        extra = ("federation.rounds=3",) if args.quick else ()
        section = audit_section(repeats=1 if args.quick else 3, extra=extra)
        print(json.dumps({"benchmark": "dp_privacy_audit", "privacy_audit": section}, indent=1))
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: list[dict[str, Any]] = []
    for device in devices:
        for model_name in MODELS:
            on_gpu = device == "cuda"
            batches = (64,) if model_name in SLOW_MODELS and not on_gpu else (64, 256)
            for batch in batches:
                steps = 3 if args.quick else (50 if on_gpu else STEPS[model_name])
                base = dict(
                    device=device,
                    model=model_name,
                    batch=batch,
                    threads=args.threads,
                    steps=steps,
                    timeout=600 if model_name in SLOW_MODELS else 120,
                )
                plain = _run_forked({**base, "mode": "nonprivate", "check": False})
                row: dict[str, Any] = {
                    "device": device,
                    "model": model_name,
                    "batch": batch,
                    "nonprivate": plain,
                    "dp": {},
                }
                for mode in MODES:
                    dp = _run_forked({**base, "mode": mode, "check": batch == 64})
                    if "seconds_per_step" in dp and "seconds_per_step" in plain:
                        dp["ratio_vs_nonprivate"] = (
                            dp["seconds_per_step"] / plain["seconds_per_step"]
                        )
                    row["dp"][mode] = dp
                results.append(row)
    # Correctness is checked at batch 64; a mode is eligible if it was correct there.
    correct = {
        (r["device"], r["model"], m)
        for r in results
        if r["batch"] == 64
        for m, d in r["dp"].items()
        if d.get("correct")
    }
    for row in results:
        eligible = {
            m: d
            for m, d in row["dp"].items()
            if (row["device"], row["model"], m) in correct and "ratio_vs_nonprivate" in d
        }
        if eligible:
            best = min(eligible, key=lambda m: eligible[m]["seconds_per_step"])
            row["fastest_correct_mode"] = best
            row["fastest_correct_ratio"] = eligible[best]["ratio_vs_nonprivate"]
            usable = {m: d for m, d in eligible.items() if m in GRAD_SAMPLE_MODES}
            trainer_best = min(usable, key=lambda m: usable[m]["seconds_per_step"])
            row["fastest_trainer_mode"] = trainer_best
            row["fastest_trainer_ratio"] = usable[trainer_best]["ratio_vs_nonprivate"]
    mlp_ratios = [
        r["fastest_trainer_ratio"]
        for r in results
        if r["model"].startswith("mlp") and r["device"] == "cpu" and "fastest_trainer_ratio" in r
    ]
    small_mlp_ratios = [
        r["fastest_trainer_ratio"]
        for r in results
        if r["model"] == "mlp_30_64_32_2" and r["device"] == "cpu" and "fastest_trainer_ratio" in r
    ]
    imaging = [
        {
            "device": r["device"],
            "model": r["model"],
            "batch": r["batch"],
            "nonprivate": r["nonprivate"].get("samples_per_second"),
            "dp_mode": r.get("fastest_trainer_mode"),
            "dp": r["dp"][r["fastest_trainer_mode"]]["samples_per_second"]
            if "fastest_trainer_mode" in r
            else None,
        }
        for r in results
        if r["model"] in IMAGING
    ]
    summary = {
        "target": "DP / non-private step-time ratio <= 3 for the MLP (CPU)",
        "imaging_samples_per_second": imaging,
        "small_mlp_max_ratio": max(small_mlp_ratios) if small_mlp_ratios else None,
        "all_mlp_max_ratio": max(mlp_ratios) if mlp_ratios else None,
        "small_mlp_meets_target": bool(small_mlp_ratios) and max(small_mlp_ratios) <= 3.0,
    }
    privacy_audit = None
    if not args.no_audit:
        torch.set_num_threads(args.threads)
        extra = ("federation.rounds=3",) if args.quick else ()
        privacy_audit = audit_section(repeats=1 if args.quick else 3, extra=extra)
    print(
        json.dumps(
            {
                "benchmark": "dp_step_time",
                "environment": {
                    "python": sys.version.split()[0],
                    "torch": torch.__version__,
                    "opacus": opacus.__version__,
                    "platform": platform.platform(),
                    "cpu_count": os.cpu_count(),
                    "torch_threads": args.threads,
                    "devices": devices,
                },
                "trainer_modes": list(GRAD_SAMPLE_MODES),
                "trainer_modes_note": "ew is excluded from dp: it fails on empty Poisson batches",
                "memory_note": (
                    "cpu: peak RSS growth of the forked run over its start; cuda: max allocated"
                ),
                "results": results,
                "summary": summary,
                "privacy_audit": privacy_audit,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
