"""A whole deployment on 127.0.0.1: anvil, a SuperLink, one SuperNode per site.

:class:`Loopback` starts the processes on free ports (each hospital's SuperNode gets only
its own node config: partition, data folder, key file), writes a Flower config with a
``loopback`` SuperLink connection into its own ``FLWR_HOME``, and stops every process it
started on exit (SIGTERM, then SIGKILL). ``scripts/loopback.py`` is its command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

from deploy._errors import DeploymentError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeploymentError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise DeploymentError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _binary(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        raise DeploymentError(f"{name} not found (install flwr[simulation]==1.42.*)")
    return found


@dataclass
class Loopback:
    """The processes of a loopback deployment (see the module docstring)."""

    workdir: Path
    hospital_data_dirs: Sequence[str | None]
    key_holder: bool = True
    #: K > 0: K committee members (``role='committee' member=j``) instead of a key holder
    committee: int = 0
    startup_timeout_s: float = 60.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ledger_url: str = ""
    control_address: str = ""

    def start(self) -> Loopback:
        from chain import find_anvil

        if self.committee < 0 or self.committee == 1:
            raise DeploymentError(f"a committee has K >= 2 members, got {self.committee}")
        if self.committee and self.key_holder:
            raise DeploymentError("a committee replaces the key holder (key_holder=False)")

        self.workdir.mkdir(parents=True, exist_ok=True)
        anvil = find_anvil()
        if anvil is None:
            raise DeploymentError("anvil not found: run `npm ci`")
        anvil_port = free_port()
        self._spawn(
            "anvil",
            [str(anvil), "--host", "127.0.0.1", "--port", str(anvil_port), "--silent"],
        )
        _wait_for_port(anvil_port, self.processes["anvil"], self.startup_timeout_s)
        self.ledger_url = f"http://127.0.0.1:{anvil_port}"
        fleet = free_port()  # 1.42: Fleet, Control and Runtime APIs on one HTTP port
        self._spawn(
            "superlink",
            [
                _binary("flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(fleet),
                "--disable-runtime-dependency-installation",
            ],
        )
        _wait_for_port(fleet, self.processes["superlink"], self.startup_timeout_s)
        self.control_address = f"127.0.0.1:{fleet}"
        for partition, data_dir in enumerate(self.hospital_data_dirs):
            key_file = self._key_file(f"hospital-{partition}")
            # each site reaches the ledger through the endpoint of its own node config
            config = (
                f"role='hospital' partition-id={partition} key-file='{key_file}' "
                f"ledger-url='{self.ledger_url}'"
            )
            if data_dir:
                config += f" data-dir='{data_dir}'"
            self._supernode(f"hospital-{partition}", fleet, config)
        if self.key_holder:
            key_file = self._key_file("keyholder")
            self._supernode(
                "keyholder",
                fleet,
                f"role='keyholder' key-file='{key_file}' ledger-url='{self.ledger_url}'",
            )
        for member in range(1, self.committee + 1):
            key_file = self._key_file(f"committee-{member}")
            self._supernode(
                f"committee-{member}",
                fleet,
                f"role='committee' member={member} key-file='{key_file}' "
                f"ledger-url='{self.ledger_url}'",
            )
        self._write_flower_config()
        return self

    def _key_file(self, name: str) -> Path:
        """A fresh ledger key for one site, readable by its owner only."""
        path = self.workdir / "keys" / f"{name}.key"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.write_text(Account.create().key.hex())
        return path

    def _supernode(self, name: str, fleet: int, node_config: str) -> None:
        self._spawn(
            name,
            [
                _binary("flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{fleet}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                node_config,
            ],
        )

    def _write_flower_config(self) -> None:
        home = self.flwr_home
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "loopback"\n\n'
            f'[superlink.loopback]\naddress = "{self.control_address}"\ninsecure = true\n'
        )

    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    def env(self) -> dict[str, str]:
        """The environment of a process that talks to this deployment (``flwr run``).

        The interpreter's own bin folder leads PATH: the SuperLink and the SuperNodes start
        their helpers (``flower-superexec``, ``flwr-clientapp``) by name, and a virtual
        environment used without activating it (``make test``) is not on PATH otherwise."""
        bin_dir = str(Path(sys.executable).parent)
        path = os.environ.get("PATH", "")
        return {
            **os.environ,
            "FLWR_HOME": str(self.flwr_home),
            "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir,
        }

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
        )
        log.close()

    def kill(self, name: str) -> None:
        """Kill one process (and its ClientApp children) at once: a site that crashes."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def __enter__(self) -> Loopback:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Loopback", "free_port"]
