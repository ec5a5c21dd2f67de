"""Compile the ledger contracts with the pinned npm ``solc`` and write/check the artifacts.

The artifacts in ``chain/artifacts/`` ship with the package so users need no compiler.
Each artifact records the ABI, creation and runtime bytecode, the compiler version, the
optimizer settings and the sha256 and keccak256 of the exact source it was built from.
``check_artifact`` compares source digests cheaply; ``compile_sources`` recompiles with the
node ``solc`` package (pinned in package.json) so a test can compare the bytecode too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak

from chain._errors import ArtifactError

PACKAGE_DIR = Path(__file__).resolve().parent
CONTRACTS_DIR = PACKAGE_DIR / "contracts"
ARTIFACTS_DIR = PACKAGE_DIR / "artifacts"
PROJECT_ROOT = PACKAGE_DIR.parent
SOLC_VERSION = "0.8.28"
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 10_000
CONTRACT_NAMES = ("ConsortiumLedger", "PlainCommitBaseline")

_NODE_SCRIPT = r"""
const solc = require('solc');
let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const out = solc.compile(input);
  process.stdout.write(JSON.stringify({version: solc.version(), output: JSON.parse(out)}));
});
"""


@dataclass(frozen=True)
class CompiledContract:
    """One contract as compiled from source (what an artifact stores)."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str


def source_path(name: str) -> Path:
    """Path of the Solidity source of contract ``name``."""
    return CONTRACTS_DIR / f"{name}.sol"


def artifact_path(name: str) -> Path:
    """Path of the committed JSON artifact of contract ``name``."""
    return ARTIFACTS_DIR / f"{name}.json"


def source_digests(source: bytes) -> dict[str, str]:
    """sha256 and keccak256 (hex) of a contract's source bytes."""
    return {
        "sha256": hashlib.sha256(source).hexdigest(),
        "keccak256": keccak(source).hex(),
    }


def _settings() -> dict[str, Any]:
    return {
        "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
        "evmVersion": EVM_VERSION,
        "viaIR": True,
        "metadata": {"bytecodeHash": "none", "appendCBOR": False},
        "outputSelection": {
            "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
        },
    }


def node_modules_dir() -> Path:
    """The project's ``node_modules`` (override with ``SECAGG_NODE_MODULES``)."""
    return Path(os.environ.get("SECAGG_NODE_MODULES", PROJECT_ROOT / "node_modules"))


def compiler_available() -> bool:
    """Whether node and the pinned npm solc package are installed."""
    return shutil.which("node") is not None and (node_modules_dir() / "solc").is_dir()


def compile_sources(names: tuple[str, ...] = CONTRACT_NAMES) -> dict[str, CompiledContract]:
    """Compile ``names`` with the npm solc (standard JSON, optimizer on)."""
    if not compiler_available():
        raise ArtifactError(f"npm solc not found under {node_modules_dir()} (run `npm ci`)")
    sources = {f"{n}.sol": {"content": source_path(n).read_text()} for n in names}
    request = json.dumps({"language": "Solidity", "sources": sources, "settings": _settings()})
    env = dict(os.environ, NODE_PATH=str(node_modules_dir()))
    proc = subprocess.run(
        ["node", "-e", _NODE_SCRIPT],
        input=request,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise ArtifactError(f"solc failed: {proc.stderr.strip()[:2000]}")
    result = json.loads(proc.stdout)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ArtifactError("solc errors:\n" + "\n".join(e["formattedMessage"] for e in errors))
    version = str(result["version"])
    if not version.startswith(SOLC_VERSION + "+"):
        raise ArtifactError(f"solc {version} found, {SOLC_VERSION} pinned")
    compiled = {}
    for n in names:
        c = output["contracts"][f"{n}.sol"][n]
        compiled[n] = CompiledContract(
            name=n,
            abi=c["abi"],
            bytecode="0x" + c["evm"]["bytecode"]["object"],
            deployed_bytecode="0x" + c["evm"]["deployedBytecode"]["object"],
            compiler_version=version,
        )
    return compiled


def build_artifacts(names: tuple[str, ...] = CONTRACT_NAMES) -> list[Path]:
    """Recompile and (re)write the artifacts; returns the paths written."""
    written = []
    for name, c in compile_sources(names).items():
        doc = {
            "contractName": name,
            "sourcePath": f"chain/contracts/{name}.sol",
            "source": source_digests(source_path(name).read_bytes()),
            "compiler": {"name": "solc (npm)", "version": c.compiler_version},
            "settings": {k: v for k, v in _settings().items() if k != "outputSelection"},
            "abi": c.abi,
            "bytecode": c.bytecode,
            "deployedBytecode": c.deployed_bytecode,
        }
        path = artifact_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


def load_artifact(name: str = "ConsortiumLedger") -> dict[str, Any]:
    """The committed artifact of ``name`` (raises ``ArtifactError`` when it is missing)."""
    path = artifact_path(name)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} missing: run scripts/build_contracts.py")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def check_artifact(name: str = "ConsortiumLedger") -> None:
    """Raise ``ArtifactError`` if the artifact was not built from the current source."""
    art = load_artifact(name)
    src = source_path(name)
    if src.is_file():
        digests = source_digests(src.read_bytes())
        if art["source"] != digests:
            raise ArtifactError(
                f"{name}: artifact built from another source "
                f"(artifact sha256 {art['source']['sha256']}, source {digests['sha256']}); "
                "rebuild with scripts/build_contracts.py"
            )
