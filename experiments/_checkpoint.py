"""Checkpoints of a run, written after every round, and resuming a run from one.

After each completed round the runner replaces ``checkpoint.pt`` in the run directory
atomically (a temporary file in the same folder, fsync, rename, fsync of the folder): a
crash leaves either the previous checkpoint or the new one, never a torn file. It holds
what the next round depends on and nothing secret:

* the round index, the global model's state, the server optimizer's moments
  (``fedadam``/``fedyogi``/``fedadagrad``) and the moving average of the model
  (``federation.ema``);
* every accountant's state (:meth:`~experiments._privacy.PrivacyLayer.state_dict`: the
  hash-linked privacy-event chains and sigma, so the next round's events, and a ledger
  manifest, extend the same chain heads) and the privacy events of every round so far;
* the round records so far and the wall seconds spent, so ``results.json`` covers every
  round;
* the run's config (``run.*`` left out, chain URL redacted) with its digest, and a digest
  of the federated data, so a run resumes only into the same federation;
* the ledger reference (backend, redacted URL, chain id, contract address, deployment
  block, artifact store, every party's ADDRESS and the on-chain status and aggregate
  digest of every round so far), or None with ``chain=none``.

Every other random stream of a round (client selection, dropouts, non-DP local training,
model initialisation) is derived from ``federation.seed`` and the round and client ids,
so nothing else is needed for a resumed run to equal an uninterrupted one. DP noise and
Poisson sampling come from the OS entropy pool by design (:mod:`experiments._privacy`):
a resumed DP run draws fresh noise, as the uninterrupted run would have.

Never written: ledger account keys (nor the seed they are derived from), RPC credentials,
any CKKS secret key, the one-run audit's canary bits. Hence what cannot resume (refused
with :class:`ConfigError`, exit 2, by :func:`experiments._config.validate_run`): a ledger
that dies with its process (``chain=inprocess``, an anvil node the run starts without a
state file), a persistent ledger without ``chain.keys_seed_file`` (each party's key is
fresh and held in one process's memory), a decryption committee (set up once per
contract, its key shares in memory) and ``dp.audit=one_run``. A ledger-backed run with a
seed resumes on the same contract after the checks of :mod:`experiments._ledger` (chain
id, code, roles, the recorded round states, the next round never opened).
``secagg=ckks`` resumes with a fresh key pair: no ciphertext outlives its round, so no
earlier key is needed, and each round's manifest names the public context it used.
The file itself is untrusted input: it is framed by a magic, a format version and a
sha256 of its body, checked before the body is parsed with ``torch.load(weights_only=True)``
(tensors and plain containers only, no code).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dp import PrivacyEvent
from experiments._errors import CheckpointError, ConfigError
from experiments._federation import RoundRecord, RoundSeconds
from experiments._strategies import ADAPTIVE

if TYPE_CHECKING:
    from experiments._config import RunConfig
    from experiments._datasets import FederatedData
    from experiments._federation import Federation
    from experiments._ledger import LedgerLayer

__all__ = [
    "CHECKPOINT_FILE",
    "Checkpoint",
    "capture",
    "checkpoint_config",
    "config_differences",
    "data_digest",
    "read_checkpoint",
    "restore",
    "write_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
MAGIC = b"SECAGG-FL-CHECKPOINT\n"
FORMAT = 1
_DIGEST_BYTES = 32
# Keys of the config that may differ between the interrupted run and its resumption:
# the round count may grow; where the seed file and the node are reached from may change
# (the ledger checks, experiments/_ledger.py, decide whether they are the same parties
# and the same ledger).
GROWABLE = ("federation.rounds",)
MAY_DIFFER = (*GROWABLE, "chain.keys_seed_file", "chain.url")


@dataclass(frozen=True)
class Checkpoint:
    """The state of a run after round ``round`` (see the module docstring)."""

    round: int
    config: dict[str, Any]
    config_digest: str
    data_digest: str
    model_state: dict[str, torch.Tensor]
    server_state: dict[str, torch.Tensor]
    privacy_state: dict[str, Any]
    privacy_events: dict[int, dict[str, str]]
    records: list[dict[str, Any]]
    wall_seconds: float
    ledger: dict[str, Any] | None = None
    # federation.ema > 0: the moving average of the global parameters (flat)
    ema_state: torch.Tensor | None = None

    def round_records(self) -> list[RoundRecord]:
        """The round records so far, as the federation returns them."""
        return [_record(entry) for entry in self.records]


def _record(entry: Mapping[str, Any]) -> RoundRecord:
    values = dict(entry)
    values["seconds"] = RoundSeconds(**values["seconds"])
    return RoundRecord(**values)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value


def checkpoint_config(cfg: RunConfig) -> dict[str, Any]:
    """The run's config as ``{dotted key: value}``, without ``run.*`` (how the process
    runs, not what it computes) and with the chain URL reduced to scheme, host and port."""
    from chain import redact_url

    tree = {
        group: dataclasses.asdict(getattr(cfg, group))
        if dataclasses.is_dataclass(getattr(cfg, group))
        else dict(getattr(cfg, group))
        for group in ("dataset", "model", "federation", "dp", "secagg", "chain")
    }
    if tree["chain"].get("url"):
        tree["chain"]["url"] = redact_url(tree["chain"]["url"])
    flat: dict[str, Any] = {}
    _flatten("", tree, flat)
    return dict(sorted(flat.items()))


def _config_digest(config: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        {k: v for k, v in config.items() if k not in MAY_DIFFER}, sort_keys=True, default=repr
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ (or exist on one side only), :data:`MAY_DIFFER` excluded."""
    keys = (set(saved) | set(current)) - set(MAY_DIFFER)
    missing = object()
    return sorted(k for k in keys if saved.get(k, missing) != current.get(k, missing))


def data_digest(data: FederatedData) -> str:
    """sha256 over every client's name and train/test tensors and the pooled test set."""
    digest = hashlib.sha256()

    def feed(dataset: Any) -> None:
        for tensor in dataset.tensors:
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())

    for client in data.clients:
        digest.update(client.name.encode() + b"\0")
        feed(client.train)
        feed(client.test)
    feed(data.pooled_test)
    return digest.hexdigest()


def capture(
    federation: Federation,
    *,
    round_id: int,
    records: list[RoundRecord],
    config: dict[str, Any],
    data_sha256: str,
    wall_seconds: float,
    ledger: LedgerLayer | None = None,
) -> Checkpoint:
    """The checkpoint of ``federation`` right after ``round_id`` (its record included)."""
    ledger_reference = None if ledger is None else ledger.reference(round_id)
    events = {
        round_number: {name: event.canonical_bytes().decode("ascii") for name, event in by.items()}
        for round_number, by in federation.privacy_events.items()
    }
    server = federation.server
    moments = (
        {"m": torch.tensor(server.m), "v": torch.tensor(server.v)}
        if server.params.strategy in ADAPTIVE
        else {}  # fedavg/fedprox keep no server state
    )
    return Checkpoint(
        round=round_id,
        config=config,
        config_digest=_config_digest(config),
        data_digest=data_sha256,
        model_state={k: v.detach().cpu().clone() for k, v in federation.model.state_dict().items()},
        server_state=moments,
        privacy_state=federation.privacy.state_dict(),
        privacy_events=events,
        records=[dataclasses.asdict(r) for r in records],
        wall_seconds=wall_seconds,
        ledger=ledger_reference,
        ema_state=None if federation.ema is None else federation.ema.detach().cpu().clone(),
    )


def write_checkpoint(checkpoint: Checkpoint, path: Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **dataclasses.asdict(checkpoint)}, buffer)
    body = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(MAGIC + hashlib.sha256(body).digest() + body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def read_checkpoint(location: Path | str) -> Checkpoint:
    """Read the checkpoint at ``location`` (a run directory or the file itself).

    Raises :class:`CheckpointError` when it is missing, truncated, corrupt or of another
    format; nothing in it is executed (``torch.load(weights_only=True)``).
    """
    path = Path(location)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CheckpointError(
            f"run.resume: no checkpoint at {path} ({error.strerror}); a run writes "
            f"{CHECKPOINT_FILE} in its directory after every round"
        ) from error
    header = len(MAGIC) + _DIGEST_BYTES
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"run.resume: {path} is not a secagg-fl checkpoint")
    if len(raw) <= header or hashlib.sha256(raw[header:]).digest() != raw[len(MAGIC) : header]:
        raise CheckpointError(
            f"run.resume: {path} is truncated or corrupt (its sha256 does not match its body)"
        )
    try:
        payload = torch.load(io.BytesIO(raw[header:]), map_location="cpu", weights_only=True)
        if payload.pop("format") != FORMAT:
            raise CheckpointError(f"run.resume: {path} has checkpoint format other than {FORMAT}")
        checkpoint = Checkpoint(**payload)
        checkpoint.round_records()
    except CheckpointError:
        raise
    except Exception as error:  # any parse failure of untrusted bytes is the same refusal
        raise CheckpointError(f"run.resume: {path} cannot be read: {error!r}") from error
    if checkpoint.round < 1 or len(checkpoint.records) != checkpoint.round:
        raise CheckpointError(
            f"run.resume: {path} claims round {checkpoint.round} but holds "
            f"{len(checkpoint.records)} round record(s)"
        )
    return checkpoint


def check_matches(checkpoint: Checkpoint, *, config: Mapping[str, Any], rounds: int) -> None:
    """Refuse (:class:`ConfigError`) a config that is not the checkpoint's, naming the keys
    that differ; ``federation.rounds`` may grow but not below the checkpoint's round."""
    differing = config_differences(checkpoint.config, config)
    if differing:
        shown = ", ".join(
            f"{key} ({checkpoint.config.get(key)!r} -> {config.get(key)!r})"
            for key in differing[:8]
        )
        more = f" and {len(differing) - 8} more" if len(differing) > 8 else ""
        raise ConfigError(
            f"run.resume: the config differs from the checkpoint's in {shown}{more}; "
            "resume with the interrupted run's config (only federation.rounds may grow)"
        )
    if rounds <= checkpoint.round:
        raise ConfigError(
            f"run.resume: the checkpoint is after round {checkpoint.round}, so "
            f"federation.rounds must be above it to continue, got {rounds}"
        )


def restore(federation: Federation, checkpoint: Checkpoint, *, data_sha256: str) -> None:
    """Load ``checkpoint`` into a freshly built ``federation`` (same config and data).

    Raises :class:`CheckpointError` if the data or the model differs, and
    :class:`ConfigError` if the accountants' state does not fit this run's DP setup
    (another sigma, e.g. ``dp.target_epsilon`` calibrated for other ``federation.rounds``).
    """
    if checkpoint.data_digest != data_sha256:
        raise CheckpointError(
            "run.resume: the federated data differs from the checkpoint's (another data "
            "file, partition or pre-processing)"
        )
    try:
        federation.model.load_state_dict(checkpoint.model_state)
    except (RuntimeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"run.resume: the checkpoint's model does not fit this run's: {error}"
        ) from error
    server = federation.server
    moments = checkpoint.server_state
    adaptive = server.params.strategy in ADAPTIVE
    if adaptive != bool(moments):
        raise CheckpointError(
            "run.resume: the checkpoint's server optimizer state does not fit "
            f"federation.strategy={server.params.strategy}"
        )
    m = moments["m"].numpy().astype(np.float64) if adaptive else np.zeros_like(server.m)
    v = moments["v"].numpy().astype(np.float64) if adaptive else np.zeros_like(server.v)
    if m.shape != server.m.shape or v.shape != server.v.shape:
        raise CheckpointError("run.resume: the checkpoint's server optimizer state does not fit")
    try:
        federation.privacy.load_state_dict(checkpoint.privacy_state)
    except ConfigError as error:
        rounds = checkpoint.config.get("federation.rounds")
        hint = (
            f" (federation.rounds was {rounds}; dp.target_epsilon calibrates sigma for the "
            "planned rounds, so they cannot grow in target-epsilon mode)"
            if checkpoint.config.get("dp.target_epsilon") is not None
            else ""
        )
        raise ConfigError(f"run.resume: {error}{hint}") from error
    records = checkpoint.round_records()
    claimed = records[-1].epsilon if records else None
    restored = federation.privacy.round_privacy().epsilon
    if claimed != restored:
        raise CheckpointError(
            f"run.resume: the checkpoint's round {checkpoint.round} record claims epsilon "
            f"{claimed}, its accountants' event chains give {restored}"
        )
    ema = checkpoint.ema_state
    if (ema is not None) != (federation.config.ema > 0) or (
        ema is not None and tuple(ema.shape) != (federation.dim,)
    ):
        raise CheckpointError(
            "run.resume: the checkpoint's moving average of the model does not fit "
            f"federation.ema={federation.config.ema}"
        )
    server.m = m
    server.v = v
    federation.ema = None if ema is None else ema.to(federation.device)
    federation.privacy_events = {
        int(round_number): {
            name: PrivacyEvent.from_bytes(raw.encode("ascii")) for name, raw in by.items()
        }
        for round_number, by in checkpoint.privacy_events.items()
    }
