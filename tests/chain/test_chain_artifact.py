"""The committed artifact matches the contract source (digest always, bytecode with solc)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chain import ArtifactError, _build, check_artifact, compiler_available, load_artifact


@pytest.mark.parametrize("name", _build.CONTRACT_NAMES)
def test_artifact_source_digest_matches(name: str) -> None:
    check_artifact(name)
    art = load_artifact(name)
    assert art["compiler"]["version"].startswith(_build.SOLC_VERSION + "+")
    assert art["settings"]["optimizer"] == {"enabled": True, "runs": _build.OPTIMIZER_RUNS}
    assert art["bytecode"].startswith("0x60") and len(art["deployedBytecode"]) > 100


def test_stale_artifact_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "contracts").mkdir()
    (tmp_path / "artifacts").mkdir()
    src = _build.source_path("ConsortiumLedger").read_text()
    (tmp_path / "contracts" / "ConsortiumLedger.sol").write_text(src + "\n// edited\n")
    art = _build.artifact_path("ConsortiumLedger").read_text()
    (tmp_path / "artifacts" / "ConsortiumLedger.json").write_text(art)
    monkeypatch.setattr(_build, "CONTRACTS_DIR", tmp_path / "contracts")
    monkeypatch.setattr(_build, "ARTIFACTS_DIR", tmp_path / "artifacts")
    with pytest.raises(ArtifactError, match="rebuild"):
        check_artifact("ConsortiumLedger")
    (tmp_path / "artifacts" / "ConsortiumLedger.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact("ConsortiumLedger")


@pytest.mark.slow
def test_recompiled_bytecode_matches_artifact() -> None:
    if not compiler_available():
        if os.environ.get("CI"):
            pytest.fail("npm solc missing in CI: run `npm ci`")
        pytest.skip("npm solc not installed (run `npm ci`)")
    compiled = _build.compile_sources()
    for name, c in compiled.items():
        art = json.loads(_build.artifact_path(name).read_text())
        assert c.abi == art["abi"], f"{name}: ABI differs, rebuild the artifact"
        assert c.bytecode == art["bytecode"], f"{name}: bytecode differs, rebuild the artifact"
        assert c.deployed_bytecode == art["deployedBytecode"]
