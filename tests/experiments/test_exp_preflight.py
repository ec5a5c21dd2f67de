"""Strict, fast configuration: unknown and misplaced keys, infeasible federations and
devices fail before training (most before torch loads), with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from experiments._catalog import build_catalog
from experiments._config import RunConfig
from experiments._errors import ConfigError
from experiments._preflight import check_command_line, check_cuda_build
from experiments._runner import build_federation, check_supported
from experiments.run import to_run_config

REPO_ROOT = Path(__file__).resolve().parents[2]
Compose = Callable[..., DictConfig]
ToRun = Callable[..., RunConfig]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def test_the_committed_catalogue_matches_the_registered_schemas() -> None:
    from experiments._schema_catalog import CATALOG, SOURCES

    catalog, sources = build_catalog()
    assert (catalog, sources) == (CATALOG, SOURCES), (
        "experiments/_schema_catalog.py is stale: run python -m experiments._catalog"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["federation.round=3"],
            "unknown key federation.round for federation=default; did you mean federation.rounds?",
        ),
        (["+federation.round=3"], "did you mean federation.rounds?"),
        (["dp=off", "+dp.target_epsilon=1.0"], "dp.target_epsilon is not used by dp=off"),
        (["secagg=plain", "secagg.min_clients=3"], "secagg.min_clients is not used by"),
        (["dp=of"], "did you mean off?"),
        (["federaton.rounds=3"], "unknown key federaton; did you mean federation?"),
        (["federation.rounds=0"], "federation.rounds must be an integer >= 1, got 0"),
        (["-m", "federation.rounds=2,0"], "federation.rounds must be an integer >= 1, got 0"),
        (["federation.clients=1"], "secagg.min_clients=2 or more"),
        (["dataset=heart_disease"], "federation.clients must be 4 for dataset=heart_disease"),
    ],
)
def test_bad_command_lines_are_refused_before_composition(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_command_line(argv)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-m", "federation.clients=3,5", "dataset=synthetic", "dataset.n_samples=200"],
        ["dataset=heart_disease", "federation=heart_disease", "dp=off", "secagg=plain"],
        ["dp=off", "secagg=plain", "chain=none", "federation.clients=1"],
        ["dp=sample", "dp.target_epsilon=3", "secagg=masking", "secagg.graph=complete"],
        ["model=mlp", "model.hidden=[32,16]", "hydra.run.dir=/tmp/x", "~chain.store_dir"],
        ["--help"],
    ],
)
def test_valid_command_lines_pass(argv: list[str]) -> None:
    check_command_line(argv)


def test_a_cuda_device_on_a_build_without_cuda_is_refused() -> None:
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        with pytest.raises(ConfigError, match="has no CUDA support"):
            check_command_line(["federation.device=cuda"])
    else:
        check_cuda_build()  # a CUDA (or ROCm) build passes the cheap probe


def test_a_bad_command_line_exits_2_with_one_line_without_loading_torch(tmp_path: Path) -> None:
    completed = _run(["-m", "experiments.run", "federation.round=3"], cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "ConfigError: unknown key federation.round for federation=default; "
        "did you mean federation.rounds?"
    ]
    assert not (tmp_path / "outputs").exists()
    probe = (
        "import sys; from experiments.run import check_command_line\n"
        "try:\n    check_command_line(['dp=off', '+dp.target_epsilon=1'])\n"
        "except Exception as e:\n    print(type(e).__name__)\n"
        "print(sorted(m for m in ('torch', 'opacus', 'tenseal', 'web3') if m in sys.modules))"
    )
    loaded = _run(["-c", probe], cwd=tmp_path)
    assert loaded.stdout.split() == ["ConfigError", "[]"], loaded.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+federation.round=3"], "did you mean federation.rounds?"),
        (["dp=off", "+dp.target_epsilon=1.0"], "unknown key dp.target_epsilon for dp=off"),
        (["+extra=1"], "unknown key extra"),
    ],
)
def test_the_composed_config_is_strict(
    compose_cfg: Compose, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        to_run_config(compose_cfg(*overrides))
    assert message in str(caught.value)


def test_masking_is_planned_at_start_and_names_the_largest_dropout(run_cfg: ToRun) -> None:
    cfg = run_cfg("secagg=masking", "federation.dropout=0.5", "secagg.max_dropout_fraction=0.5")
    with pytest.raises(ConfigError) as caught:
        check_supported(cfg)
    assert "the most it allows for n=5 is 0.2 (1 of 5 clients may drop)" in str(caught.value)
    check_supported(
        run_cfg("secagg=masking", "federation.dropout=0.2", "secagg.max_dropout_fraction=0.2")
    )


def test_too_few_clients_for_the_scheme_is_refused_at_start(run_cfg: ToRun) -> None:
    with pytest.raises(ConfigError, match=r"secagg\.min_clients=2"):
        check_supported(run_cfg("federation.clients=1"))
    with pytest.raises(ConfigError, match="pairwise masking needs at least 3 clients"):
        check_supported(run_cfg("secagg=masking", "federation.clients=2"))


def test_a_stale_catalogue_defers_the_external_groups_instead_of_refusing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import experiments._catalog as catalog

    monkeypatch.setattr(catalog, "load_catalog", lambda: None)
    check_command_line(["dp=off", "+dp.target_epsilon=1.0"])  # left to check_composed
    check_command_line(["secagg=plain", "secagg.new_field=1"])
    with pytest.raises(ConfigError, match=r"did you mean federation\.rounds"):
        check_command_line(["federation.round=3"])


def test_a_changed_schema_source_makes_the_catalogue_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import experiments._catalog as catalog
    from experiments._schema_catalog import SOURCES

    assert catalog.load_catalog() is not None
    relative = sorted(SOURCES)[0]
    monkeypatch.setitem(SOURCES, relative, "0" * 64)
    assert catalog.load_catalog() is None


def test_a_dirichlet_client_smaller_than_a_batch_is_named_with_the_fixes(
    run_cfg: ToRun,
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_federation(run_cfg("federation.partition=dirichlet", "chain=none"))
    message = str(caught.value)
    assert "fewer training records than federation.batch_size=32" in message
    assert "raise federation.alpha" in message and "federation.partition=iid" in message
    build_federation(run_cfg("federation.partition=dirichlet", "chain=none", "dp=off"))
