"""What every site of a deployment shares: its run config, its view of the consortium,
and the round sessions built from public material only.

A site composes the run's Hydra config from the overrides the driver sends (the same
``conf/`` everywhere), opens the ledger over JSON-RPC with its *own* account, and keeps
its own artifact store. :class:`SiteView` is one site's view of the consortium: the
ledger, its store, the clients' addresses from the round manifest, and only the accounts
this site holds, so the existing parties (:class:`secagg.ClientParty`,
:class:`secagg.AggregatorParty`, :class:`secagg.KeyHolderParty`) run unchanged on it; asking
it for an account the site does not hold is a :class:`DeploymentError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from eth_account.signers.local import LocalAccount

from chain import COMMIT_MODES, DEFAULT_CHALLENGE_WINDOW, Ledger
from deploy._errors import DeploymentError, SettingsError
from deploy._wire import WireMessage
from secagg import (
    ArtifactStore,
    Consortium,
    RoundManifest,
    RoundSession,
)
from secagg._hydra import SCHEMES, scheme_class
from secagg.ckks import PublicCKKSSession

log = logging.getLogger("deploy")


def compose_run_config(overrides: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """``(RunConfig, resolved config as plain containers)`` for Hydra ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from experiments import ExperimentError
    from experiments._config import register_configs
    from experiments.run import CONFIG_DIR, resolved_container, to_run_config

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            composed = compose(config_name="config", overrides=list(overrides))
        return to_run_config(composed), resolved_container(composed)
    except (HydraException, OmegaConfBaseException, ExperimentError) as error:
        raise SettingsError(f"run config {list(overrides)}: {error}") from error


def load_key_file(path: str | Path) -> LocalAccount:
    """The ledger account whose private key (hex) is the content of the file at ``path``.

    The key is never echoed: an unreadable file or one without a key is a
    :class:`SettingsError` naming only the path. A file that others can read is used, with
    a warning (``chmod 600``)."""
    from eth_account import Account

    file = Path(path)
    try:
        text = file.read_text().strip()
        mode = file.stat().st_mode
    except OSError as error:
        raise SettingsError(f"cannot read key file {file}: {error.strerror}") from None
    if mode & 0o077:
        log.warning("key file %s is readable by others: chmod 600 %s", file, file)
    try:
        return Account.from_key(text)
    except Exception:  # never echo the file's content
        raise SettingsError(f"key file {file} does not hold a private key") from None


def attach_ledger(url: str, address: str, *, start_block: int = 0) -> Ledger:
    """This site's client of the consortium's ledger at ``url`` (JSON-RPC)."""
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
    return Ledger.attach(w3, address, start_block=start_block)


@dataclass
class SiteAccounts:
    """The ledger accounts one site holds (None: held by another site)."""

    admin: LocalAccount | None = None
    aggregator: LocalAccount | None = None
    key_holder: LocalAccount | None = None
    auditor: LocalAccount | None = None
    clients: dict[int, LocalAccount] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the keys
        return f"SiteAccounts(clients={sorted(self.clients)})"


@dataclass
class SiteView:
    """One site's consortium: duck-compatible with :class:`secagg.Consortium`."""

    ledger: Ledger
    store: ArtifactStore
    parties: SiteAccounts
    addresses: dict[int, str] = field(default_factory=dict)
    deadline_blocks: int = 50
    batch_commits: bool = False
    reputation_threshold: float = 0.0
    commit_mode: str = "direct"
    challenge_window: int = DEFAULT_CHALLENGE_WINDOW

    @property
    def signs_commits(self) -> bool:
        """Whether clients sign their commitments for the aggregator (batched, merkle)."""
        return self.commit_mode != "direct"

    @classmethod
    def for_manifest(
        cls, ledger: Ledger, store: ArtifactStore, manifest: RoundManifest, **kwargs: Any
    ) -> SiteView:
        addresses = {c.client_id: c.address for c in manifest.clients}
        return cls(ledger=ledger, store=store, addresses=addresses, **kwargs)

    def as_consortium(self) -> Consortium:
        """This view where the parties expect a consortium (the attributes they use)."""
        return cast(Consortium, self)

    def address_of(self, client_id: int) -> str:
        if client_id not in self.addresses:
            raise DeploymentError(f"client {client_id} is not in this site's view")
        return self.addresses[client_id]

    def account_of(self, client_id: int) -> LocalAccount:
        account = self.parties.clients.get(client_id)
        if account is None:
            raise DeploymentError(f"this site does not hold client {client_id}'s account")
        return account

    def client_id_of(self, address: str) -> int:
        for client_id, known in self.addresses.items():
            if known.lower() == address.lower():
                return client_id
        raise KeyError(address)

    def addresses_of(self, client_ids: Sequence[int]) -> list[str]:
        return [self.address_of(c) for c in client_ids]


def public_session(
    manifest: RoundManifest, *, scheme_schema: Any, public_context: bytes | None
) -> RoundSession:
    """The round session of ``manifest``'s scheme built from public material only."""
    declared = scheme_class(manifest.scheme)
    if declared.has_public_material and public_context is None:
        raise DeploymentError(f"a {manifest.scheme} round needs the key holder's public context")
    session = declared.public_session(
        manifest, schema=scheme_schema, public_material=public_context
    )
    if session is None:
        raise SettingsError(f"secagg={manifest.scheme} is not deployed on Flower yet (plain, ckks)")
    return session


class SitePolicyError(DeploymentError):
    """A request that breaks what this site accepts (its own node config): another ledger
    than the one it serves, a scheme that does not protect its update, too few clients in
    a round, or no DP where the site requires it."""


DEFAULT_SCHEMES = ("ckks", "masking")


@dataclass(frozen=True)
class SitePolicy:
    """What one site accepts, set by its operator in its own node config, never by the
    driver (the aggregator's side may lie: docs/threat-model.md, "Deployment").

    ``ledger_url``: the JSON-RPC endpoint this site reads and writes the ledger through
    (its own node); None takes the driver's. ``ledger_address``: the consortium contract
    this site serves; a request naming another is refused. None pins the first contract
    the site joins for the rest of the run (trust on first use: the first join must then
    come from an honest driver). ``schemes``: the protection schemes a hospital hands an
    update to (default CKKS and masking; ``plain`` sends the update in the clear and
    must be allowed explicitly). ``min_clients``: a hospital refuses a round whose
    manifest selects fewer clients (a sum of one is that client's update).
    ``require_dp``: a hospital refuses runs without sample-level DP (``dp=off``, and
    ``dp=client``, whose clipping bounds what one hospital moves, not what one record does).
    ``commit_modes``: the ``chain.commit_mode`` values a hospital joins a run with (default
    every mode: in each, the hospital checks its own commitment on chain before it reveals,
    and a merkle hospital left out of the root proves it on chain itself).
    """

    ledger_url: str | None = None
    ledger_address: str | None = None
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    min_clients: int = 2
    require_dp: bool = False
    commit_modes: tuple[str, ...] = COMMIT_MODES

    def __post_init__(self) -> None:
        if self.ledger_url is not None and not self.ledger_url.startswith(("http://", "https://")):
            raise SettingsError(f"ledger-url must be an http(s) URL, got {self.ledger_url!r:.80}")
        if self.ledger_address is not None and not _is_address(self.ledger_address):
            raise SettingsError(
                f"ledger-address must be a 0x address, got {self.ledger_address!r:.80}"
            )
        unknown = set(self.schemes) - set(SCHEMES)
        if not self.schemes or unknown:
            raise SettingsError(f"schemes must name {', '.join(SCHEMES)}, got {self.schemes!r}")
        if not self.commit_modes or set(self.commit_modes) - set(COMMIT_MODES):
            raise SettingsError(
                f"commit-modes must name {', '.join(COMMIT_MODES)}, got {self.commit_modes!r}"
            )
        if not isinstance(self.min_clients, int) or self.min_clients < 1:
            raise SettingsError(f"min-clients must be an integer >= 1, got {self.min_clients!r}")

    @classmethod
    def permissive(cls) -> SitePolicy:
        """Every scheme, TOFU ledger: for simulations, where one operator runs every site."""
        return cls(schemes=tuple(SCHEMES))

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> SitePolicy:
        """The policy in a SuperNode's ``--node-config`` (``ledger-url``,
        ``ledger-address``, ``schemes`` and ``commit-modes`` as comma-separated lists,
        ``min-clients``, ``require-dp``)."""
        schemes = config.get("schemes")
        modes = config.get("commit-modes")
        require_dp = config.get("require-dp", False)
        if isinstance(require_dp, str):
            require_dp = require_dp.strip().lower() in ("1", "true", "yes")
        return cls(
            ledger_url=str(config["ledger-url"]) if config.get("ledger-url") else None,
            ledger_address=str(config["ledger-address"]) if config.get("ledger-address") else None,
            schemes=(
                tuple(s.strip() for s in str(schemes).split(",") if s.strip())
                if schemes
                else DEFAULT_SCHEMES
            ),
            min_clients=int(config.get("min-clients", 2)),
            require_dp=bool(require_dp),
            commit_modes=(
                tuple(m.strip() for m in str(modes).split(",") if m.strip())
                if modes
                else COMMIT_MODES
            ),
        )

    def ledger(
        self,
        current: Ledger | None,
        *,
        url: str,
        address: str,
        start_block: int,
        pinned: str | None = None,
    ) -> Ledger:
        """The ledger a request names, if this site serves it: its own URL when set, the
        pinned address (node config, else the first contract joined) enforced."""
        if self.ledger_address is not None and address.lower() != self.ledger_address.lower():
            raise SitePolicyError(
                f"the request names ledger {address:.42}; this site serves {self.ledger_address}"
            )
        joined = current.address if current is not None else pinned
        if joined is not None and joined.lower() != address.lower():
            raise SitePolicyError(
                f"the request names ledger {address:.42}; this site joined {joined} for this run"
            )
        if current is not None:
            return current
        return attach_ledger(self.ledger_url or url, address, start_block=start_block)

    def ledger_of(
        self, current: Ledger | None, message: WireMessage, *, pinned: str | None = None
    ) -> Ledger:
        """:meth:`ledger` for the ``ledger_url``, ``ledger_address`` and ``start_block``
        fields of a driver's request."""
        return self.ledger(
            current,
            url=message.text("ledger_url"),
            address=message.text("ledger_address"),
            start_block=message.integer("start_block"),
            pinned=pinned,
        )

    def check_round(self, manifest: RoundManifest, *, dp_mode: str | None = None) -> None:
        """A hospital's check of a round manifest before it trains or hands anything over."""
        if manifest.scheme not in self.schemes:
            raise SitePolicyError(
                f"round {manifest.round_id}: secagg={manifest.scheme} is not accepted by this "
                f"site (node config schemes: {','.join(self.schemes)})"
            )
        if len(manifest.clients) < self.min_clients:
            raise SitePolicyError(
                f"round {manifest.round_id}: {len(manifest.clients)} selected clients, this "
                f"site needs at least {self.min_clients} (a sum of one is its update)"
            )
        mode = dp_mode if dp_mode is not None else manifest.dp_mode
        if self.require_dp and mode != "sample":
            raise SitePolicyError(
                f"round {manifest.round_id}: dp={mode}; this site requires sample-level DP"
            )

    def check_scheme(self, scheme: str, *, dp_mode: str) -> None:
        """A hospital's check of the run config at join (before it loads any data)."""
        if scheme not in self.schemes:
            raise SitePolicyError(
                f"secagg={scheme} is not accepted by this site (node config schemes: "
                f"{','.join(self.schemes)})"
            )
        if self.require_dp and dp_mode != "sample":
            raise SitePolicyError(f"dp={dp_mode}; this site requires sample-level DP")

    def check_commit_mode(self, commit_mode: str) -> None:
        """A hospital's check of the run's ``chain.commit_mode`` at join."""
        if commit_mode not in self.commit_modes:
            raise SitePolicyError(
                f"chain.commit_mode={commit_mode} is not accepted by this site (node config "
                f"commit-modes: {','.join(self.commit_modes)})"
            )


def _is_address(text: str) -> bool:
    return (
        len(text) == 42
        and text[:2] in ("0x", "0X")
        and all(c in "0123456789abcdefABCDEF" for c in text[2:])
    )


class Stopwatch:
    """Seconds since construction (for the ``seconds`` a reply reports)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


__all__ = [
    "DEFAULT_SCHEMES",
    "PublicCKKSSession",
    "SiteAccounts",
    "SitePolicy",
    "SitePolicyError",
    "SiteView",
    "attach_ledger",
    "compose_run_config",
    "public_session",
]
