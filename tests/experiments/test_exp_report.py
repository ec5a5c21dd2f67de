"""The sweep report: settings named by every swept variable, seeds averaged with error
bars, per-round curves, a log epsilon axis, one baseline per non-private setting, and
timings without the first (warm-up) round and without phases that did not run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pytest
from omegaconf import DictConfig

from experiments._runner import run_experiment
from experiments.report import collect, draw, swept_keys
from experiments.run import resolved_container, to_run_config

matplotlib.use("Agg")
Compose = Callable[..., DictConfig]
BASE = ("chain=none", "dataset=synthetic", "dataset.n_samples=200", "federation.rounds=2")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real runs: 2 schemes x 2 seeds without DP, and one DP run per scheme."""
    from hydra import compose, initialize_config_dir

    root = tmp_path_factory.mktemp("sweep")
    conf = Path(__file__).resolve().parents[2] / "conf"
    runs = [
        ("dp=off", f"secagg={scheme}", f"federation.seed={seed}")
        for scheme in ("plain", "masking")
        for seed in (0, 1)
    ]
    runs += [("dp=sample", "dp.target_epsilon=2", f"secagg={s}") for s in ("plain", "masking")]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for index, overrides in enumerate(runs):
            cfg = compose(config_name="config", overrides=[*BASE, *overrides])
            run_experiment(
                to_run_config(cfg),
                resolved_config=resolved_container(cfg),
                output_dir=root / str(index),
            )
    return root


def test_settings_name_every_swept_variable_and_pool_the_seeds(sweep: Path) -> None:
    rows = collect(sweep)
    assert swept_keys(rows) == ["dp.name", "secagg.name"]
    settings = sorted({row["setting"] for row in rows})
    assert settings == [
        "dp=off secagg=masking",
        "dp=off secagg=plain",
        "dp=sample secagg=masking",
        "dp=sample secagg=plain",
    ]
    assert sum(row["setting"] == "dp=off secagg=plain" for row in rows) == 2  # two seeds


def test_timings_leave_out_the_first_round(sweep: Path) -> None:
    for row in collect(sweep):
        rounds = json.loads((sweep / row["run"] / "results.json").read_text())["rounds"]
        later = [r["seconds"]["train"] for r in rounds[1:]]
        assert row["train_s_per_round"] == pytest.approx(sum(later) / len(later))


def test_the_figure_shows_curves_baselines_and_only_phases_that_ran(sweep: Path) -> None:
    figure = draw(collect(sweep))
    (ax_acc, ax_eps, ax_tradeoff), (ax_time, _, ax_legend) = figure.axes[:3], figure.axes[3:6]
    assert len(ax_acc.lines) == 4 and all(len(line.get_xdata()) == 2 for line in ax_acc.lines)
    assert len(ax_acc.collections) == 4  # a band (one standard deviation) per setting
    assert len(ax_eps.lines) == 2 and ax_eps.get_yscale() == "log"
    assert ax_tradeoff.get_xscale() == "log"
    assert "Offset" not in type(ax_tradeoff.xaxis.get_major_formatter()).__name__
    baselines = [t.get_text() for t in ax_tradeoff.get_legend().get_texts()]
    # each baseline is numbered as its setting in the legend, with its mean accuracy
    assert [b.split(":")[0] for b in baselines] == ["no DP (1)", "no DP (2)"]
    assert all(0.0 <= float(b.split(": ")[1]) <= 1.0 for b in baselines)
    phases = [t.get_text() for t in ax_time.get_legend().get_texts()]
    # chain=none runs the round on a memory ledger: its ledger phases take time too
    assert "chain" in phases and "train" in phases
    legend = [t.get_text() for t in ax_legend.get_legend().get_texts()]
    assert "2. dp=off secagg=plain (2 seeds)" in legend
    assert "3. dp=sample secagg=masking (1 seed)" in legend
