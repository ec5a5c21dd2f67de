"""EVM backends of the ledger: in-process py-evm, a local anvil node, any JSON-RPC URL.

Every backend exposes a connected ``w3``, a funded ``faucet`` LocalAccount, ``fund`` and
``mine``; transactions are always signed locally (``Ledger``), so all three share one code
path. Secrets: the ``rpc`` key is read from an environment variable and never appears in a
repr, a log line or ``public_url`` (which drops credentials, paths and queries from URLs).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, Web3
from web3.providers.rpc import HTTPProvider

from chain._errors import BackendError, ChainConfigError
from chain._ledger import send_signed

ANVIL_ENV = "SECAGG_ANVIL"
DEFAULT_KEY_ENV = "SECAGG_LEDGER_KEY"
# anvil's first development account (public, from the "test test ... junk" mnemonic).
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def redact_url(url: str | None) -> str | None:
    """``scheme://host[:port]`` of ``url``; credentials, path and query are dropped."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    tail = "/..." if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{tail}"


class _BaseBackend:
    """Shared behaviour: funding from the faucet, mining, context management."""

    name = "base"
    public_url: str | None = None

    def __init__(self, w3: Web3, faucet: LocalAccount) -> None:
        self._w3 = w3
        self._faucet = faucet

    @property
    def w3(self) -> Web3:
        """The connected Web3 instance."""
        return self._w3

    @property
    def faucet(self) -> LocalAccount:
        """A funded account that pays for funding and deployments."""
        return self._faucet

    @property
    def chain_id(self) -> int:
        """The chain id reported by the node."""
        return int(self._w3.eth.chain_id)

    def fund(self, addresses: Sequence[str], wei: int) -> None:
        """Send ``wei`` from the faucet to every address (locally signed transfers)."""
        if wei <= 0:
            raise ChainConfigError(f"wei must be > 0, got {wei}")
        for address in addresses:
            receipt = send_signed(
                self._w3,
                self._faucet,
                {"to": Web3.to_checksum_address(address), "value": wei, "gas": 21_000},
            )
            if receipt["status"] != 1:
                raise BackendError(f"funding {address} failed")

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks."""
        for _ in range(blocks):
            self._w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def close(self) -> None:
        """Release the backend (stops a node this backend started)."""

    def __enter__(self) -> _BaseBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.public_url!r}, chain_id={self.chain_id})"


class InProcessBackend(_BaseBackend):
    """web3's ``EthereumTesterProvider`` on py-evm: nothing to start, state lives in memory."""

    name = "inprocess"

    def __init__(self) -> None:
        provider = EthereumTesterProvider()
        tester = provider.ethereum_tester
        if tester is None:
            raise BackendError("eth-tester did not start")
        key = tester.backend.account_keys[0]
        super().__init__(Web3(provider), Account.from_key(bytes(key.to_bytes())))
        self._tester = tester

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks."""
        if blocks > 0:
            self._tester.mine_blocks(blocks)


def find_anvil() -> Path | None:
    """The anvil binary: ``$SECAGG_ANVIL``, else the project's ``node_modules/.bin/anvil``."""
    env = os.environ.get(ANVIL_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(_PROJECT_ROOT / "node_modules" / ".bin" / "anvil")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def _stat_key(path: Path | None) -> tuple[int, int] | None:
    """(modification time, size) of ``path``, or None when it does not exist."""
    if path is None:
        return None
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return (status.st_mtime_ns, status.st_size)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilBackend(_BaseBackend):
    """A real anvil node: started on a free loopback port (and stopped on ``close``), or
    attached at ``url``. ``state_file`` is loaded at start and written on stop (anvil's
    own dump, or the state read over RPC just before when anvil did not write it), so a
    restarted node keeps every round."""

    name = "anvil"

    def __init__(
        self,
        *,
        url: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        chain_id: int | None = None,
        startup_timeout_s: float = 30.0,
        port: int | None = None,
    ) -> None:
        self._port = port  # None: a free loopback port
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self.state_file = Path(state_file) if state_file is not None else None
        if url is not None:
            if state_file is not None:
                raise ChainConfigError("state_file applies only to a node we start (url=None)")
            w3 = Web3(HTTPProvider(url))
            if not w3.is_connected():
                raise BackendError(f"no node answers at {redact_url(url)}")
            self.public_url = redact_url(url)
        else:
            w3 = self._start(chain_id, startup_timeout_s)
        super().__init__(w3, Account.from_key(ANVIL_DEV_KEY))

    def _start(self, chain_id: int | None, timeout_s: float) -> Web3:
        binary = find_anvil()
        if binary is None:
            raise BackendError(f"anvil not found: run `npm ci` or set {ANVIL_ENV}")
        last_error = ""
        for _attempt in range(3 if self._port is None else 1):
            port = _free_port() if self._port is None else self._port
            cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent"]
            if chain_id is not None:
                cmd += ["--chain-id", str(chain_id)]
            if self.state_file is not None:
                cmd += ["--state", str(self.state_file)]
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _stop_process)
            self._proc = subprocess.Popen(  # anvil prints dev keys on stdout: discard it
                cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, stdin=subprocess.DEVNULL
            )
            url = f"http://127.0.0.1:{port}"
            w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                with contextlib.suppress(Exception):
                    if w3.is_connected():
                        self.public_url = url
                        return w3
                time.sleep(0.05)
            self._stderr.seek(0)
            last_error = self._stderr.read().decode(errors="replace")[-500:]
            self._stop_process()
        raise BackendError(f"anvil did not start: {last_error}")

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks in one call."""
        if blocks > 0:
            self._w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    def _dump_state(self) -> bytes | None:
        """The node's whole state as anvil's ``--state`` file holds it, read over RPC."""
        with contextlib.suppress(Exception):
            reply = self._w3.provider.make_request("anvil_dumpState", [])  # type: ignore[arg-type]
            raw = bytes.fromhex(str(reply["result"]).removeprefix("0x"))
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        return None

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # anvil dumps --state itself on SIGINT, but not reliably: on a loaded machine it
            # can die of the signal before its handler is in place (measured: 3 stops in 40
            # under 6 busy processes). So the state is read first, and written here when
            # anvil did not write the file itself.
            state = self._dump_state() if self.state_file is not None else None
            before = _stat_key(self.state_file)
            killed = False
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                killed = True
            written = not killed and _stat_key(self.state_file) not in (before, None)
            if state is not None and self.state_file is not None and not written:
                partial = self.state_file.with_name(self.state_file.name + ".partial")
                partial.write_bytes(state)
                os.replace(partial, self.state_file)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """Stop the node if this backend started it (state is dumped to ``state_file``)."""
        self._stop_process()


class RpcBackend(_BaseBackend):
    """Any JSON-RPC node; the funded signing key comes from the environment variable
    ``key_env`` (never logged, never in repr)."""

    name = "rpc"

    def __init__(self, url: str, *, key_env: str = DEFAULT_KEY_ENV) -> None:
        key = os.environ.get(key_env)
        if not key:
            raise ChainConfigError(f"key_env: environment variable {key_env} is not set")
        try:
            account = Account.from_key(key)
        except Exception:
            raise ChainConfigError(f"key_env: {key_env} does not hold a private key") from None
        w3 = Web3(HTTPProvider(url))
        if not w3.is_connected():
            raise BackendError(f"no node answers at {redact_url(url)}")
        self.public_url = redact_url(url)
        super().__init__(w3, account)


Backend = InProcessBackend | AnvilBackend | RpcBackend
