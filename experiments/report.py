"""Summarise a sweep: ``python -m experiments.report <multirun dir>`` (``secagg-report``).

Gathers every ``results.json`` below the directory into one CSV row per run, draws a PNG
(final accuracy against epsilon; seconds and bytes per round by secure-aggregation
scheme) with matplotlib's Agg backend, and prints the table. Runs with ``dp.audit=one_run``
also get ``privacy_audit.png``: the empirical lower bound beside the claimed epsilon.
Nothing is re-run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments._errors import ExperimentError

COLUMNS = (
    "run",
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


def summarise(path: Path, root: Path) -> dict[str, Any]:
    """One CSV row from one ``results.json``."""
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
        for phase in PHASES:
            row[f"{phase}_s_per_round"] = _mean([r["seconds"][phase] for r in rounds])
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


def collect(root: Path) -> list[dict[str, Any]]:
    """Rows for every ``results.json`` below ``root``, in path order."""
    paths = sorted(root.rglob("results.json"))
    if not paths:
        raise ReportError(f"no results.json below {root}")
    return [summarise(path, root) for path in paths]


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write the rows as CSV (empty cell for null)."""
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS})


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Accuracy vs epsilon (runs without DP drawn as dashed lines), and mean seconds per
    round (stacked by phase) and bytes up per round, grouped by secagg scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax_eps, ax_time, ax_bytes) = plt.subplots(1, 3, figsize=(15, 4.5))
    private = [r for r in rows if r["epsilon"] is not None and math.isfinite(r["epsilon"])]
    for scheme in sorted({r["secagg"] for r in private}):
        points = sorted((r["epsilon"], r["accuracy"]) for r in private if r["secagg"] == scheme)
        ax_eps.plot([p[0] for p in points], [p[1] for p in points], "o-", label=scheme)
    for row in rows:
        if row["epsilon"] is None:
            ax_eps.axhline(row["accuracy"], linestyle="--", linewidth=0.8, color="grey")
    ax_eps.set_xlabel("epsilon (final)")
    ax_eps.set_ylabel("pooled test accuracy")
    ax_eps.set_title("accuracy vs epsilon (dashed: no DP)")
    if private:
        ax_eps.legend()

    schemes = sorted({r["secagg"] for r in rows})
    bottoms = [0.0] * len(schemes)
    for phase in PHASES:
        heights = [
            _mean([r[f"{phase}_s_per_round"] for r in rows if r["secagg"] == s]) or 0.0
            for s in schemes
        ]
        ax_time.bar(schemes, heights, bottom=bottoms, label=phase)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax_time.set_ylabel("seconds per round (mean over runs)")
    ax_time.set_title("time per round by scheme")
    ax_time.legend()

    bytes_up = [
        _mean([r["bytes_up_per_round"] for r in rows if r["secagg"] == s]) or 0.0 for s in schemes
    ]
    ax_bytes.bar(schemes, bytes_up)
    ax_bytes.set_ylabel("bytes up per round (mean over runs)")
    ax_bytes.set_title("upload per round by scheme")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


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
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__)
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
