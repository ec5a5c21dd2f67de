"""``secagg node``: ``--port``, stops its anvil on SIGTERM, exits when anvil dies; and
``secagg audit`` names the URL it could not reach and suggests ``--rpc``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chain import find_anvil

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anvil


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest first (anvil may run behind a node.js shim)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        pytest.skip("needs /proc to find the node's anvil process")
    found: list[int] = []
    for child in (int(p) for p in path.read_text().split()):
        found += [*_descendants(child), child]
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (an exited one waiting to be reaped is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _start_node(port: int) -> subprocess.Popen[str]:
    if find_anvil() is None:
        pytest.skip("anvil binary missing (run `npm ci`)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    node = subprocess.Popen(
        [sys.executable, "-m", "secagg", "node", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert node.stdout is not None
    url = node.stdout.readline().strip()
    assert url == f"http://127.0.0.1:{port}", node.stderr.read() if node.stderr else ""
    return node


def test_node_listens_on_the_port_and_stops_anvil_on_sigterm() -> None:
    port = _free_port()
    node = _start_node(port)
    try:
        assert _answers(port)
        anvil = _descendants(node.pid)
        assert anvil
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while _answers(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _answers(port)
        while any(_alive(pid) for pid in anvil) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in anvil)
    finally:
        if node.poll() is None:
            node.kill()


def test_node_exits_when_its_anvil_dies() -> None:
    port = _free_port()
    node = _start_node(port)
    try:
        for pid in _descendants(node.pid):
            os.kill(pid, signal.SIGKILL)
        assert node.wait(timeout=30) == 1
        assert node.stderr is not None
        assert f"anvil at http://127.0.0.1:{port} stopped answering" in node.stderr.read()
    finally:
        if node.poll() is None:
            node.kill()


def test_audit_names_the_url_it_cannot_reach(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "secagg", "audit", "--rpc", f"http://127.0.0.1:{port}"),
            *("--address", "0x" + "22" * 20, "--store", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"http://127.0.0.1:{port}" in result.stdout and "--rpc" in result.stdout


@pytest.mark.parametrize("module", ["secagg", "experiments.report"])
def test_command_line_help_has_no_rst_markup(module: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and "usage:" in result.stdout
    assert "``" not in result.stdout and ":class:" not in result.stdout
