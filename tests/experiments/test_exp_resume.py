"""Resuming an interrupted run from its checkpoint (``run.stop_after``, ``run.resume``).

Each equivalence test runs the same tiny federation twice, in-process, through the real
runner: four rounds straight, and two rounds that stop with a checkpoint followed by a
resumption that runs rounds 3 and 4 from it. The final models must be equal bit for
bit, the epsilons equal, and the resumed ``results.json`` must hold all four rounds.

DP noise, Poisson sampling and masking's stochastic rounding draw from the OS entropy
pool by design, so two runs never draw the same noise. To compare the two runs bit for
bit, :func:`replayable_entropy` replaces those three entropy sources (and only them) by
one deterministic stream that restarts at each run's first round and carries on across
the interruption: the resumed run then draws exactly what the uninterrupted run drew in
rounds 3 and 4, which is what a correct resumption must reproduce. The accountants, the
checkpoint, the DP-SGD training and the secure aggregation are the real ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import dp._csprng
import experiments._privacy
import secagg.masking._quantize
from experiments import load_model
from experiments._checkpoint import CHECKPOINT_FILE, MAGIC, read_checkpoint, write_checkpoint
from experiments._config import RunConfig
from experiments._errors import CheckpointError, ConfigError
from experiments._federation import RunResults
from experiments._preflight import check_command_line
from experiments._runner import run_experiment

Compose = Callable[..., DictConfig]
REPO_ROOT = Path(__file__).resolve().parents[2]

TINY = (
    "dataset=synthetic",
    "dataset.n_samples=200",
    "dataset.n_features=6",
    "dataset.n_informative=4",
    "federation.clients=4",
    "federation.batch_size=16",
    "federation.local_steps=2",
    "federation.lr=0.5",
    "federation.rounds=4",
    "chain=none",
)


class _Stream:
    """A deterministic byte stream (SHA-256 in counter mode) standing in for the OS pool."""

    def __init__(self) -> None:
        self.counter = 0

    def take(self, count: int) -> bytes:
        out = b""
        while len(out) < count:
            out += hashlib.sha256(self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:count]


@pytest.fixture
def replayable_entropy(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Patch the entropy of DP noise, Poisson sampling and masking's rounding; calling the
    returned function restarts the stream (at the start of each compared run)."""
    stream = _Stream()

    class _Secrets:
        @staticmethod
        def token_bytes(count: int) -> bytes:
            return stream.take(count)

    monkeypatch.setattr(dp._csprng, "secrets", _Secrets)
    monkeypatch.setattr(
        experiments._privacy,
        "_entropy_seed",
        lambda: int.from_bytes(stream.take(8), "big") >> 1,
    )
    monkeypatch.setattr(secagg.masking._quantize, "get_random_bytes", stream.take)

    def restart() -> None:
        stream.counter = 0

    return restart


def _run(compose: Compose, output: Path, *overrides: str) -> RunResults:
    composed = compose(*overrides)
    cfg = OmegaConf.to_object(composed)
    resolved = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, RunConfig) and isinstance(resolved, dict)
    return run_experiment(
        cfg,
        resolved_config={str(k): v for k, v in resolved.items()},
        output_dir=output,
        progress=False,
    )


def _straight_and_resumed(
    compose: Compose, tmp_path: Path, restart: Callable[[], None] | None, *overrides: str
) -> tuple[Path, Path]:
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    if restart is not None:
        restart()
    _run(compose, straight, *TINY, *overrides)
    if restart is not None:
        restart()
    stopped = _run(compose, first, *TINY, *overrides, "run.stop_after=2")
    assert stopped.meta is not None and stopped.meta["stopped_after"] == 2
    assert [r.round for r in stopped.rounds] == [1, 2]
    assert (first / CHECKPOINT_FILE).is_file() and not (first / "results.json").exists()
    _run(compose, second, *TINY, *overrides, f"run.resume={first}")
    return straight, second


def _assert_same_run(straight: Path, resumed: Path) -> tuple[dict, dict]:
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((resumed / "results.json").read_text())
    assert [r["round"] for r in b["rounds"]] == [1, 2, 3, 4]
    assert a["config"] == b["config"]
    assert b["meta"]["resumed_from"]["round"] == 2
    for key in ("accuracy", "loss", "epsilon", "epsilon_per_client", "n_clients", "dropped"):
        assert [r[key] for r in a["rounds"]] == [r[key] for r in b["rounds"]], key
    assert a["final"]["epsilon"] == b["final"]["epsilon"]
    assert a["final"]["privacy"] == b["final"]["privacy"]
    model_a = load_model(straight / "model.pt").state_dict()
    model_b = load_model(resumed / "model.pt").state_dict()
    assert model_a.keys() == model_b.keys()
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name
    return a, b


def test_plain_fedadam_without_dp_resumes_bit_for_bit_without_any_patching(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    straight, resumed = _straight_and_resumed(
        compose_cfg, tmp_path, None, "dp=off", "secagg=plain", "federation.strategy=fedadam"
    )
    a, _ = _assert_same_run(straight, resumed)
    assert a["final"]["epsilon"] is None
    # fedadam's moments carried over: a resumption with fresh moments would differ.
    checkpoint = read_checkpoint(tmp_path / "first")
    assert checkpoint.round == 2 and float(checkpoint.server_state["v"].abs().sum()) > 0


def test_the_moving_average_of_the_model_resumes_bit_for_bit(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    straight, resumed = _straight_and_resumed(
        compose_cfg, tmp_path, None, "dp=off", "secagg=plain", "federation.ema=0.5"
    )
    a, _ = _assert_same_run(straight, resumed)  # model.pt is the average: equal bit for bit
    checkpoint = read_checkpoint(tmp_path / "first")
    assert checkpoint.ema_state is not None and checkpoint.ema_state.ndim == 1
    # the average is what was evaluated: another final accuracy than the raw model's
    raw = _run(compose_cfg, tmp_path / "raw", *TINY, "dp=off", "secagg=plain")
    assert [r.accuracy for r in raw.rounds] != [r["accuracy"] for r in a["rounds"]]
    assert read_checkpoint(tmp_path / "raw").ema_state is None


@pytest.mark.parametrize("secagg", ["plain", "masking"])
def test_dp_sample_resumes_bit_for_bit_with_the_same_epsilon(
    compose_cfg: Compose,
    tmp_path: Path,
    replayable_entropy: Callable[[], None],
    secagg: str,
) -> None:
    straight, resumed = _straight_and_resumed(
        compose_cfg,
        tmp_path,
        replayable_entropy,
        "dp=sample",
        "dp.noise_multiplier=1.0",
        f"secagg={secagg}",
    )
    a, b = _assert_same_run(straight, resumed)
    assert a["final"]["epsilon"] > a["rounds"][1]["epsilon"] > 0
    # One event chain per client across the interruption: 4 rounds of 2 steps each.
    for summary in b["final"]["privacy"].values():
        assert summary["rounds"] == 4 and summary["total_steps"] == 8


@pytest.mark.parametrize("secagg", ["plain", "masking"])
def test_dp_client_resumes_bit_for_bit_with_the_same_epsilon(
    compose_cfg: Compose,
    tmp_path: Path,
    replayable_entropy: Callable[[], None],
    secagg: str,
) -> None:
    overrides = ["dp=client", "dp.noise_multiplier=1.0", f"secagg={secagg}"]
    if secagg == "masking":
        overrides.append("dp.distributed=true")  # central noise needs one releasing party
    straight, resumed = _straight_and_resumed(compose_cfg, tmp_path, replayable_entropy, *overrides)
    a, b = _assert_same_run(straight, resumed)
    assert a["final"]["epsilon"] > a["rounds"][1]["epsilon"] > 0
    assert b["final"]["privacy"]["federation"]["rounds"] == 4


def test_a_resumed_dp_run_without_replayed_entropy_still_accounts_every_round(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    """Real OS entropy: the noise differs, but the accounting is that of one run."""
    straight, resumed = _straight_and_resumed(
        compose_cfg, tmp_path, None, "dp=sample", "dp.noise_multiplier=1.0", "secagg=plain"
    )
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((resumed / "results.json").read_text())
    assert [r["epsilon"] for r in a["rounds"]] == [r["epsilon"] for r in b["rounds"]]
    assert a["final"]["epsilon"] == b["final"]["epsilon"]
    assert a["final"]["privacy"] == b["final"]["privacy"]
    first_events = read_checkpoint(tmp_path / "first").privacy_events
    assert sorted(first_events) == [1, 2]


def test_rounds_may_grow_on_resume(compose_cfg: Compose, tmp_path: Path) -> None:
    base = (*TINY, "dp=off", "secagg=plain")
    _run(compose_cfg, tmp_path / "a", *base)
    results = _run(
        compose_cfg, tmp_path / "b", *base, "federation.rounds=6", f"run.resume={tmp_path / 'a'}"
    )
    assert [r.round for r in results.rounds] == [1, 2, 3, 4, 5, 6]
    assert read_checkpoint(tmp_path / "b").round == 6


def test_a_config_mismatch_is_refused_naming_the_keys(compose_cfg: Compose, tmp_path: Path) -> None:
    base = (*TINY, "dp=off", "secagg=plain", "run.stop_after=1")
    _run(compose_cfg, tmp_path / "a", *base)
    with pytest.raises(ConfigError, match=r"federation\.lr \(0\.5 -> 0\.1\).*federation\.seed"):
        _run(
            compose_cfg,
            tmp_path / "b",
            *TINY,
            "dp=off",
            "secagg=plain",
            "federation.lr=0.1",
            "federation.seed=3",
            f"run.resume={tmp_path / 'a'}",
        )
    with pytest.raises(ConfigError, match=r"federation\.rounds must be above it"):
        _run(
            compose_cfg,
            tmp_path / "c",
            *TINY,
            "dp=off",
            "secagg=plain",
            "federation.rounds=1",
            f"run.resume={tmp_path / 'a'}",
        )
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_grown_round_count_is_refused_when_sigma_was_calibrated_for_it(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    base = (*TINY, "dp=client", "dp.target_epsilon=5.0", "secagg=plain")
    _run(compose_cfg, tmp_path / "a", *base, "run.stop_after=1")
    with pytest.raises(ConfigError, match=r"noise_multiplier differs.*target_epsilon"):
        _run(
            compose_cfg,
            tmp_path / "b",
            *base,
            "federation.rounds=8",
            f"run.resume={tmp_path / 'a'}",
        )


def test_a_ledger_run_stops_and_resumes_only_on_a_persistent_ledger_with_a_seed(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    seed = f"chain.keys_seed_file={tmp_path / 'party.seed'}"
    for chain, extra, reason in (
        ("inprocess", (), "needs a ledger that outlives the process.*in-process EVM"),
        ("anvil", (), "needs a ledger that outlives the process.*anvil node this run starts"),
        ("anvil", (seed,), "needs a ledger that outlives the process.*chain.state_file"),
        ("rpc", (), "needs chain.keys_seed_file.*never written.*to enable it"),
    ):
        overrides = (*TINY[:-1], f"chain={chain}", *extra, "dp=off", "secagg=plain")
        for key in (f"run.resume={tmp_path}", "run.stop_after=2"):
            with pytest.raises(ConfigError, match=reason):
                check_command_line([*overrides, key])  # before torch loads
            with pytest.raises(ConfigError, match=reason):
                _run(compose_cfg, tmp_path / chain, *overrides, key)  # and in-process
    assert not any((tmp_path / chain).exists() for chain in ("inprocess", "anvil", "rpc"))
    committee = (*TINY[:-1], "chain=rpc", seed, "dp=off", "secagg=ckks", "run.stop_after=2")
    with pytest.raises(ConfigError, match=r"committee_size=3: a contract sets its decryption"):
        _run(compose_cfg, tmp_path / "committee", *committee)
    with pytest.raises(ConfigError, match=r"committee_size=3: a contract sets its decryption"):
        check_command_line([*committee, "secagg.committee_size=3"])


def test_the_one_run_audit_cannot_stop_or_resume(compose_cfg: Compose, tmp_path: Path) -> None:
    overrides = (*TINY, "dp=client", "dp.noise_multiplier=1.0", "dp.audit=one_run")
    with pytest.raises(ConfigError, match="canaries"):
        _run(compose_cfg, tmp_path, *overrides, "secagg=plain", "run.stop_after=1")


def test_a_corrupt_truncated_or_missing_checkpoint_is_refused_with_a_named_error(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    base = (*TINY, "dp=off", "secagg=plain")
    _run(compose_cfg, tmp_path / "a", *base, "run.stop_after=1")
    path = tmp_path / "a" / CHECKPOINT_FILE
    raw = path.read_bytes()
    assert raw.startswith(MAGIC)
    flipped = bytearray(raw)
    flipped[-100] ^= 0x01
    cases = {
        "truncated": raw[: len(raw) // 2],
        "corrupt": bytes(flipped),
        "not a secagg-fl checkpoint": b"PK\x03\x04" + raw[4:],
    }
    for match, content in cases.items():
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=match):
            _run(compose_cfg, tmp_path / "b", *base, f"run.resume={tmp_path / 'a'}")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _run(compose_cfg, tmp_path / "b", *base, f"run.resume={tmp_path / 'nowhere'}")
    assert not (tmp_path / "b").exists()
    assert issubclass(CheckpointError, ValueError)


def test_the_checkpoint_holds_no_secret_and_no_credentials(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    """CKKS without a ledger: the key holder's secret key never reaches the checkpoint;
    the resumed run uses a fresh key pair (no ciphertext outlives its round)."""
    base = (*TINY, "dp=off", "secagg=ckks")
    _run(compose_cfg, tmp_path / "a", *base, "run.stop_after=2")
    checkpoint = read_checkpoint(tmp_path / "a")
    assert checkpoint.ledger is None and checkpoint.privacy_state == {"mode": "off"}
    assert set(checkpoint.model_state) == {"linear.weight", "linear.bias"}
    # A serialized CKKS context (public or secret) is hundreds of KiB; the checkpoint of
    # this 14-parameter model and its records is a few KiB.
    assert (tmp_path / "a" / CHECKPOINT_FILE).stat().st_size < 32 * 1024
    resumed = _run(compose_cfg, tmp_path / "b", *base, f"run.resume={tmp_path / 'a'}")
    assert [r.round for r in resumed.rounds] == [1, 2, 3, 4]
    assert all(r.n_clients == 4 for r in resumed.rounds)


def test_checkpoints_are_replaced_atomically_each_round(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    _run(compose_cfg, tmp_path, *TINY, "dp=off", "secagg=plain")
    assert read_checkpoint(tmp_path / CHECKPOINT_FILE).round == 4
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == [CHECKPOINT_FILE]


def test_a_checkpoint_whose_accountants_lost_events_is_refused(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    """Rewritten with a valid frame but a shortened event chain: epsilon would restart low."""
    base = (*TINY, "dp=client", "dp.noise_multiplier=1.0", "secagg=plain")
    _run(compose_cfg, tmp_path / "a", *base, "run.stop_after=2")
    checkpoint = read_checkpoint(tmp_path / "a")
    accountant = dict(checkpoint.privacy_state["accountant"])
    assert len(accountant["events"]) == 2
    accountant["events"] = accountant["events"][:1]
    forged = dataclasses.replace(
        checkpoint, privacy_state={**checkpoint.privacy_state, "accountant": accountant}
    )
    write_checkpoint(forged, tmp_path / "a" / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="record claims epsilon"):
        _run(compose_cfg, tmp_path / "b", *base, f"run.resume={tmp_path / 'a'}")


def _command(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_the_command_line_stops_and_resumes_in_the_same_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*TINY, "dp=off", "secagg=plain", f"hydra.run.dir={out}"]
    stopped = _command([*args, "run.stop_after=2"], cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped after round 2; continue with run.resume={out}" in stopped.stdout
    assert not (out / "results.json").exists()
    default_chain = [a for a in args if a != "chain=none"]  # the default: chain=inprocess
    refused = _command([*default_chain, f"run.resume={out}"], cwd=tmp_path)
    assert refused.returncode == 2
    assert "ConfigError: run.resume needs a ledger that outlives the process" in refused.stderr
    resumed = _command([*args, f"run.resume={out}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    results = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3, 4]
    assert "run" not in results["config"]
    mismatch = _command([*args, "federation.lr=0.2", f"run.resume={out}"], cwd=tmp_path)
    assert mismatch.returncode == 2
    assert "federation.lr (0.5 -> 0.2)" in mismatch.stderr


def test_a_crash_while_writing_keeps_the_previous_checkpoint(
    compose_cfg: Compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(compose_cfg, tmp_path, *TINY, "dp=off", "secagg=plain", "run.stop_after=1")
    path = tmp_path / CHECKPOINT_FILE
    before = path.read_bytes()
    later = dataclasses.replace(read_checkpoint(path), wall_seconds=123.0)

    def crash(source: object, target: object) -> None:
        raise OSError("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_checkpoint(later, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if "checkpoint" in p.name] == [CHECKPOINT_FILE]
