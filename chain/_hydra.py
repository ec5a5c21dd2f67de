"""Hydra schemas of the ``chain`` config group (registered in Hydra's ConfigStore).

``chain=none|inprocess|anvil|rpc``; ``chain.commit_mode=direct|batched|merkle`` and
``chain.challenge_window`` (blocks, merkle rounds) choose how commitments reach the ledger.
``open_backend`` turns a schema instance into a backend inside a context manager that stops
any node it started. Secrets: the ``rpc`` option holds only the NAME of the environment
variable with the key (``key_env``), never the key, and
``keys_seed_file`` only the PATH of the parties' key seed, never the seed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from chain._backends import DEFAULT_KEY_ENV, AnvilBackend, Backend, InProcessBackend, RpcBackend
from chain._errors import ChainConfigError
from chain._ledger import DEFAULT_CHALLENGE_WINDOW, MAX_CHALLENGE_WINDOW
from chain._types import COMMIT_MODES


@dataclass
class ChainNoneSchema:
    """``chain=none``: no ledger."""

    name: str = "none"


@dataclass
class _LedgerOptions:
    """Options shared by every ledger backend."""

    name: str = "inprocess"
    deadline_blocks: int = 50
    epsilon_budget: float = 10.0
    reputation_threshold: float = 0.0
    batch_commits: bool = False
    # direct | batched | merkle; null: from batch_commits (batched if true, else direct).
    commit_mode: str | None = None
    # merkle rounds: blocks after the reveal deadline during which anyone may prove an
    # omission, an over-budget leaf or an equivocation on chain; reputation is settled after.
    challenge_window: int = DEFAULT_CHALLENGE_WINDOW
    # Artifact store directory (blobs, events, manifests); null: ``artifacts/`` in the
    # run's output directory. Read by the round protocol, not by this package.
    store_dir: str | None = None
    # A file holding the seed every party's ledger key is derived from (secagg._party_keys);
    # null: fresh keys per run. Read by the consortium, never copied; only its path is here.
    keys_seed_file: str | None = None


@dataclass
class ChainInProcessSchema(_LedgerOptions):
    """``chain=inprocess``: py-evm inside the process (default ledger, nothing to start)."""

    name: str = "inprocess"


@dataclass
class ChainAnvilSchema(_LedgerOptions):
    """``chain=anvil``: start the project's anvil (``url: null``) or attach at ``url``.

    ``state_file``: anvil state loaded at start and dumped at stop (keeps every round)."""

    name: str = "anvil"
    url: str | None = None
    state_file: str | None = None


@dataclass
class ChainRpcSchema(_LedgerOptions):
    """``chain=rpc``: any JSON-RPC node; the signing key is read from ``$key_env``."""

    name: str = "rpc"
    url: str = "http://127.0.0.1:8545"
    key_env: str = DEFAULT_KEY_ENV


LedgerSchema = ChainInProcessSchema | ChainAnvilSchema | ChainRpcSchema


def validate_options(cfg: _LedgerOptions) -> None:
    """Raise ``ChainConfigError`` naming the field and allowed range of a bad option."""
    if cfg.deadline_blocks < 1:
        raise ChainConfigError(f"deadline_blocks must be >= 1, got {cfg.deadline_blocks}")
    if not (math.isfinite(cfg.epsilon_budget) and cfg.epsilon_budget > 0):
        raise ChainConfigError(
            f"epsilon_budget must be a finite number > 0, got {cfg.epsilon_budget}"
        )
    if cfg.commit_mode is not None and cfg.commit_mode not in COMMIT_MODES:
        raise ChainConfigError(
            f"commit_mode must be one of {', '.join(COMMIT_MODES)}, got {cfg.commit_mode!r}"
        )
    if cfg.commit_mode not in (None, "batched") and cfg.batch_commits:
        raise ChainConfigError(
            f"batch_commits=true contradicts commit_mode={cfg.commit_mode} (set one of them)"
        )
    if not 1 <= cfg.challenge_window <= MAX_CHALLENGE_WINDOW:
        raise ChainConfigError(
            f"challenge_window must be in [1, {MAX_CHALLENGE_WINDOW}] blocks, "
            f"got {cfg.challenge_window}"
        )
    if not 0.0 <= cfg.reputation_threshold <= 1.0:
        raise ChainConfigError(
            f"reputation_threshold must be in [0, 1], got {cfg.reputation_threshold}"
        )


def commit_mode_of(cfg: _LedgerOptions) -> str:
    """The commit mode ``cfg`` selects (``commit_mode``, else from ``batch_commits``)."""
    return cfg.commit_mode or ("batched" if cfg.batch_commits else "direct")


@contextlib.contextmanager
def open_backend(cfg: LedgerSchema) -> Iterator[Backend]:
    """Open the backend ``cfg`` describes; a node started here is stopped on exit."""
    validate_options(cfg)
    backend: Backend
    if isinstance(cfg, ChainAnvilSchema):
        backend = AnvilBackend(url=cfg.url, state_file=cfg.state_file)
    elif isinstance(cfg, ChainRpcSchema):
        backend = RpcBackend(cfg.url, key_env=cfg.key_env)
    elif isinstance(cfg, ChainInProcessSchema):
        backend = InProcessBackend()
    else:
        raise ChainConfigError(
            f"chain: no backend for {type(cfg).__name__} (use none/inprocess/anvil/rpc)"
        )
    try:
        yield backend
    finally:
        backend.close()


def register_configs(store: ConfigStore | None = None) -> None:
    """Register every ``chain`` option in Hydra's ConfigStore."""
    store = store or ConfigStore.instance()
    store.store(group="chain", name="none", node=ChainNoneSchema)
    store.store(group="chain", name="inprocess", node=ChainInProcessSchema)
    store.store(group="chain", name="anvil", node=ChainAnvilSchema)
    store.store(group="chain", name="rpc", node=ChainRpcSchema)
