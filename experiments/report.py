"""Summarise a sweep: ``python -m experiments.report <multirun dir>`` (``secagg-report``).

Gathers every ``results.json`` below the directory into one CSV row per run, draws a PNG
with matplotlib's Agg backend, and prints the table. Runs with ``dp.audit=one_run``
also get ``privacy_audit.png``: the empirical lower bound beside the claimed epsilon.
Nothing is re-run.

The runs are grouped into *settings*: runs whose configs differ only in
``federation.seed``. Every other config value that differs between runs is a swept
variable, and each setting is labelled with all of them (``secagg=ckks clients=5``).
Panels: accuracy and epsilon against round (mean over seeds, band = one standard
deviation); final accuracy against final epsilon (log axis, error bars over seeds),
with each non-private setting drawn as its own dashed baseline in the legend; seconds
per round by phase (only phases that ran; the first round, which carries one-off
start-up and warm-up costs, is left out when a run has more than one); bytes up per
round.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments._errors import ExperimentError

COLUMNS = (
    "run",
    "setting",
    "dataset",
    "model",
    "dp",
    "secagg",
    "chain",
    "clients",
    "rounds",
    "seed",
    "accuracy",
    "auc",
    "mean_client_accuracy",
    "epsilon",
    "delta",
    "epsilon_lower",
    "train_s_per_round",
    "protect_s_per_round",
    "combine_s_per_round",
    "reveal_s_per_round",
    "chain_s_per_round",
    "bytes_up_per_round",
    "bytes_down_per_round",
    "gas_total",
    "audit",
    "wall_seconds",
)
PHASES = ("train", "protect", "combine", "reveal", "chain")


class ReportError(ExperimentError, ValueError):
    """No results to report, or a results.json that does not follow the schema."""


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(value) if isinstance(value, list) else value}


def _steady(rounds: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """The rounds without the first (one-off start-up and warm-up) when there are more."""
    return rounds[1:] if len(rounds) > 1 else rounds


def summarise(path: Path, root: Path) -> dict[str, Any]:
    """One CSV row from one ``results.json`` (plus private ``_curve`` and ``_config``)."""
    try:
        results = json.loads(path.read_text())
        config, rounds, final = results["config"], results["rounds"], results["final"]
        federation = config["federation"]
        row: dict[str, Any] = {
            "run": str(path.parent.relative_to(root)) or ".",
            "dataset": config["dataset"]["name"],
            "model": config["model"]["name"],
            "dp": config["dp"]["name"],
            "secagg": config["secagg"]["name"],
            "chain": config["chain"]["name"],
            "clients": federation["clients"],
            "rounds": len(rounds),
            "seed": federation["seed"],
            "accuracy": final["accuracy"],
            "auc": final["auc"],
            "mean_client_accuracy": final["mean_client_accuracy"],
            "epsilon": final["epsilon"],
            "delta": final["delta"],
            "bytes_up_per_round": _mean([r["bytes_up"] for r in rounds]),
            "bytes_down_per_round": _mean([r["bytes_down"] for r in rounds]),
            "gas_total": final["gas_total"],
            "audit": (final.get("audit") or {}).get("verdict"),
            "epsilon_lower": _epsilon_lower(final),
            "wall_seconds": final["wall_seconds"],
        }
        steady = _steady(rounds)
        for phase in PHASES:
            row[f"{phase}_s_per_round"] = _mean([r["seconds"][phase] for r in steady])
        row["_curve"] = [(r["round"], r["accuracy"], r["epsilon"]) for r in rounds]
        row["_config"] = _flatten(config)
    except (KeyError, TypeError, ValueError) as error:
        raise ReportError(f"{path} does not follow the results.json schema: {error!r}") from error
    return row


def _epsilon_lower(final: dict[str, Any]) -> float | None:
    """The run's empirical lower bound: the largest over its audited clients, or None."""
    audits = final.get("privacy_audit") or {}
    bounds = [entry["epsilon_lower"] for entry in audits.values()]
    return max(bounds) if bounds else None


def plot_privacy_audit(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Per audited run, the claimed epsilon (accountant, an upper bound) beside the
    empirical lower bound of the one-run audit. Returns False (no file) when no run was
    audited."""
    audited = [r for r in rows if r["epsilon_lower"] is not None and r["epsilon"] is not None]
    if not audited:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(audited) + 2), 4.5))
    positions = list(range(len(audited)))
    axis.bar([p - 0.2 for p in positions], [r["epsilon"] for r in audited], 0.4, label="claimed")
    axis.bar(
        [p + 0.2 for p in positions],
        [r["epsilon_lower"] for r in audited],
        0.4,
        label="empirical lower bound",
    )
    axis.set_xticks(positions, [r["run"] for r in audited], rotation=30, ha="right")
    axis.set_ylabel("epsilon")
    axis.set_title("claimed epsilon vs one-run audit lower bound")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


SEED_KEY = "federation.seed"
# Config keys that differ between runs without being a choice of the experimenter.
NOT_SWEPT = ("chain.store_dir", "chain.state_file", "chain.url", "dataset.data_dir")


def _varies(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return len({json.dumps(row["_config"].get(key), sort_keys=True) for row in rows}) > 1


def swept_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Config keys (dotted) whose values differ between runs, the seed excepted. A field
    of a group counts only if it differs between runs of the same group option (``dp=off``
    and ``dp=sample`` differ in ``dp.name``, not in every field of ``dp=sample``)."""
    keys = sorted({key for row in rows for key in row["_config"]})
    swept = []
    for key in keys:
        if key == SEED_KEY or key in NOT_SWEPT or not _varies(rows, key):
            continue
        group, _, leaf = key.partition(".")
        if leaf != "name" and f"{group}.name" in keys:
            options: dict[Any, list[dict[str, Any]]] = {}
            for row in rows:
                options.setdefault(row["_config"].get(f"{group}.name"), []).append(row)
            if not any(_varies(same, key) for same in options.values()):
                continue
        swept.append(key)
    return swept


def _short(key: str, keys: Sequence[str]) -> str:
    """``federation.clients`` -> ``clients`` unless two swept keys share the last part;
    a group's ``name`` is shown as the group (``secagg=ckks``)."""
    group, _, leaf = key.rpartition(".")
    if leaf == "name" and group:
        return group
    if sum(k.rpartition(".")[2] == leaf for k in keys) > 1:
        return key
    return leaf


def label_settings(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``setting``: every swept variable as ``name=value`` (runs that
    differ only in the seed share a setting)."""
    keys = swept_keys(rows)
    for row in rows:
        parts = [f"{_short(k, keys)}={row['_config'].get(k)}" for k in keys]
        row["setting"] = " ".join(parts) or "all runs"


def collect(root: Path) -> list[dict[str, Any]]:
    """Rows for every ``results.json`` below ``root``, in path order."""
    paths = sorted(root.rglob("results.json"))
    if not paths:
        raise ReportError(f"no results.json below {root}")
    rows = [summarise(path, root) for path in paths]
    label_settings(rows)
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write the rows as CSV (empty cell for null)."""
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS})


def _stats(values: Sequence[float | None]) -> tuple[float, float] | None:
    """Mean and (sample) standard deviation of the present values; 0 for one value."""
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not present:
        return None
    mean = sum(present) / len(present)
    if len(present) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))


def _by_setting(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["setting"], []).append(row)
    return groups


def _curves(
    runs: Sequence[dict[str, Any]], index: int
) -> tuple[list[int], list[float], list[float]]:
    """Per round: mean and standard deviation over the runs of one setting."""
    rounds = sorted({point[0] for run in runs for point in run["_curve"]})
    xs, means, stds = [], [], []
    for round_id in rounds:
        values = [p[index] for run in runs for p in run["_curve"] if p[0] == round_id]
        stats = _stats(values)
        if stats is not None:
            xs.append(round_id)
            means.append(stats[0])
            stds.append(stats[1])
    return xs, means, stds


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Draw the summary figure and save it as a PNG."""
    import matplotlib.pyplot as plt

    figure = draw(rows)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw(rows: Sequence[dict[str, Any]]) -> Any:
    """The six-panel summary figure (see the module docstring); a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import (
        LogFormatterMathtext,
        MaxNLocator,
        NullFormatter,
        ScalarFormatter,
    )

    groups = _by_setting(rows)
    settings = sorted(groups)
    cmap = plt.get_cmap("tab10" if len(settings) <= 10 else "tab20")
    colour = {name: cmap(i % cmap.N) for i, name in enumerate(settings)}
    # Distinct markers and dashes, so settings with identical curves stay visible.
    marker = {name: "osD^vP*X"[i % 8] for i, name in enumerate(settings)}
    dashes = {name: (4 + 2 * (i % 4), 2 + i % 3) for i, name in enumerate(settings)}
    figure, axes = plt.subplots(2, 3, figsize=(18, 9.5))
    ax_acc, ax_eps_round, ax_tradeoff = axes[0]
    ax_time, ax_bytes, ax_legend = axes[1]
    seeds = {name: len({r["seed"] for r in runs}) for name, runs in groups.items()}

    for name in settings:
        runs = groups[name]
        xs, means, stds = _curves(runs, 1)
        ax_acc.plot(xs, means, marker=marker[name], color=colour[name], mfc="none", ms=7)
        low = [m - s for m, s in zip(means, stds, strict=True)]
        high = [m + s for m, s in zip(means, stds, strict=True)]
        ax_acc.fill_between(xs, low, high, color=colour[name], alpha=0.2, linewidth=0)
        xs, means, stds = _curves(runs, 2)
        if xs and any(m > 0 for m in means):
            ax_eps_round.plot(xs, means, marker=marker[name], color=colour[name], mfc="none", ms=7)
    ax_acc.set(xlabel="round", ylabel="pooled test accuracy", title="accuracy per round")
    for axis in (ax_acc, ax_eps_round):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_eps_round.set(xlabel="round", ylabel="cumulative epsilon", title="epsilon per round")
    if ax_eps_round.lines:
        ax_eps_round.set_yscale("log")
        ax_eps_round.yaxis.set_major_formatter(LogFormatterMathtext())
    else:
        ax_eps_round.text(0.5, 0.5, "no DP runs", ha="center", transform=ax_eps_round.transAxes)

    baseline_handles = []
    dp_epsilons: list[float] = []
    for number, name in enumerate(settings, start=1):
        runs = groups[name]
        accuracy = _stats([r["accuracy"] for r in runs])
        epsilon = _stats([r["epsilon"] for r in runs])
        if accuracy is None:
            continue
        if epsilon is None or epsilon[0] <= 0:
            line = ax_tradeoff.axhline(
                accuracy[0], linestyle=(0, dashes[name]), linewidth=1.5, color=colour[name]
            )
            # numbered as in the settings legend, which names the whole setting
            baseline_handles.append((line, f"no DP ({number}): {accuracy[0]:.3f}"))
            continue
        dp_epsilons.append(epsilon[0])
        ax_tradeoff.errorbar(
            [epsilon[0]],
            [accuracy[0]],
            xerr=[epsilon[1]],
            yerr=[accuracy[1]],
            fmt="o",
            color=colour[name],
            capsize=4,
        )
    if any(_stats([r["epsilon"] for r in runs]) for runs in groups.values()):
        ax_tradeoff.set_xscale("log")
        ax_tradeoff.xaxis.set_major_formatter(LogFormatterMathtext())
        if 1 < len(dp_epsilons) <= 8:  # label the epsilons swept, not the log decades
            ticks = sorted({float(f"{e:.2g}") for e in dp_epsilons})
            ax_tradeoff.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax_tradeoff.xaxis.set_minor_formatter(NullFormatter())
    ax_tradeoff.set(
        xlabel="final epsilon (log)",
        ylabel="final pooled accuracy",
        title="privacy / utility (mean ± sd over seeds)",
    )
    if baseline_handles:
        ax_tradeoff.legend(*zip(*baseline_handles, strict=True), fontsize=8, loc="best")

    phases = [p for p in PHASES if any((r[f"{p}_s_per_round"] or 0) > 0 for r in rows)]
    bottoms = [0.0] * len(settings)
    positions = list(range(len(settings)))
    for phase in phases:
        heights = [
            (_stats([r[f"{phase}_s_per_round"] for r in groups[n]]) or (0.0, 0.0))[0]
            for n in settings
        ]
        ax_time.bar(positions, heights, bottom=bottoms, label=phase)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax_time.set(ylabel="seconds per round (after round 1)", title="time per round by phase")
    if phases:
        ax_time.legend(fontsize=8)
    bytes_up = [
        _stats([r["bytes_up_per_round"] for r in groups[n]]) or (0.0, 0.0) for n in settings
    ]
    ax_bytes.bar(positions, [b[0] for b in bytes_up], color=[colour[n] for n in settings])
    ax_bytes.set(ylabel="bytes up per round", title="upload per round")
    for axis in (ax_time, ax_bytes):
        axis.set_xticks(positions, [str(i + 1) for i in positions])
        axis.set_xlabel("setting (numbered as in the legend)")
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        axis.yaxis.set_major_formatter(formatter)
    ax_legend.axis("off")
    handles = [
        plt.Line2D([], [], color=colour[n], marker=marker[n], mfc="none", linestyle="-")
        for n in settings
    ]
    labels = [  # wrapped: a setting names every key that differs between runs
        textwrap.fill(f"{i + 1}. {n} ({seeds[n]} seed{'s' if seeds[n] != 1 else ''})", 64)
        for i, n in enumerate(settings)
    ]
    ax_legend.legend(handles, labels, loc="upper left", fontsize=9, title="settings", frameon=False)
    figure.tight_layout()
    return figure


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of the main columns."""
    shown = (
        "run",
        "dataset",
        "secagg",
        "dp",
        "clients",
        "rounds",
        "accuracy",
        "mean_client_accuracy",
        "epsilon",
        "bytes_up_per_round",
        "wall_seconds",
    )

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    table = [list(shown)] + [[cell(row[key]) for key in shown] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in table
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: gather, write CSV and PNG, print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.report", description=(__doc__ or "").replace("``", "")
    )
    parser.add_argument("directory", type=Path, help="a multirun (or any) directory")
    parser.add_argument("--csv", type=Path, default=None, help="default: DIR/summary.csv")
    parser.add_argument("--png", type=Path, default=None, help="default: DIR/summary.png")
    args = parser.parse_args(argv)
    root: Path = args.directory
    if not root.is_dir():
        parser.error(f"{root} is not a directory")
    try:
        rows = collect(root)
    except ReportError as error:
        parser.exit(2, f"ReportError: {error}\n")
    csv_path = args.csv or root / "summary.csv"
    png_path = args.png or root / "summary.png"
    write_csv(rows, csv_path)
    plot(rows, png_path)
    print(format_table(rows))
    print(f"csv: {csv_path}\npng: {png_path}")
    audit_png = png_path.with_name("privacy_audit.png")
    if plot_privacy_audit(rows, audit_png):
        print(f"privacy audit png: {audit_png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
