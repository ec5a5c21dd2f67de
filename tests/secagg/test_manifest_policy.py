"""The round manifest's privacy policy: canonical encoding, validation, and an auditor
import path free of torch and Opacus."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from secagg import ManifestClient, ManifestError, PrivacyPolicy, RoundManifest

ADDRESS = "0x" + "ab" * 20


def _policy(**changes: object) -> PrivacyPolicy:
    fields: dict[str, object] = {
        "mechanism": "dpsgd-sample",
        "sample_rate": 0.05,
        "noise_multiplier": 1.1,
        "max_grad_norm": 1.0,
        "delta": 1e-5,
        "accountant": "rdp",
        "poisson_sampling": True,
        "steps": 10,
        "target_epsilon": 1.0,
        "planned_steps": 200,
        **changes,
    }
    return PrivacyPolicy(**fields)  # type: ignore[arg-type]


def _manifest(policy: PrivacyPolicy | None) -> RoundManifest:
    return RoundManifest(
        round_id=3,
        scheme="plain",
        scheme_config={"name": "plain"},
        dim=8,
        clients=(ManifestClient(0, ADDRESS, 1.0, 10, policy),),
        dp_mode="off" if policy is None else "sample",
    )


def test_a_policy_round_trips_through_canonical_bytes_and_changes_the_digest() -> None:
    manifest = _manifest(_policy())
    data = manifest.canonical_bytes()
    assert b'"policy":{"accountant":"rdp","delta":"1e-05"' in data
    assert RoundManifest.from_bytes(data) == manifest
    other = _manifest(_policy(delta=1e-4))
    assert other.digest() != manifest.digest()


def test_a_manifest_without_policy_encodes_as_before() -> None:
    manifest = _manifest(None)
    data = manifest.canonical_bytes()
    assert b"policy" not in data
    assert RoundManifest.from_bytes(data) == manifest


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"accountant": "gdp"}, "accountant"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier"),
        ({"steps": 0}, "steps"),
        ({"poisson_sampling": 1}, "poisson_sampling"),
        ({"mechanism": "laplace"}, "mechanism"),
    ],
)
def test_an_invalid_policy_is_a_named_manifest_error(changes: dict, words: str) -> None:
    with pytest.raises(ManifestError, match=words):
        _policy(**changes)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"delta":"1e-05"', b'"delta":1e-05'),
        (b'"steps":10,"target', b'"steps":"10","target'),
        (b'"planned_steps":200,', b""),
        (b'"accountant":"rdp"', b'"accountant":"gdp"'),
    ],
)
def test_a_stored_manifest_with_a_bad_policy_is_a_manifest_error(old: bytes, new: bytes) -> None:
    data = _manifest(_policy()).canonical_bytes()
    assert old in data
    with pytest.raises(ManifestError):
        RoundManifest.from_bytes(data.replace(old, new))


def test_a_manifest_client_refuses_a_policy_of_the_wrong_type() -> None:
    policy = dataclasses.asdict(_policy())
    with pytest.raises(ManifestError, match="policy"):
        _manifest(policy)  # type: ignore[arg-type]


def test_the_auditor_imports_neither_torch_nor_opacus() -> None:
    code = (
        "import sys, secagg._auditor, secagg\n"
        "from dp import Segment\n"
        "from dp._independent import independent_compose_epsilon\n"
        "segment = Segment(sample_rate=0.05, noise_multiplier=1.1, steps=10)\n"
        "assert independent_compose_epsilon([segment], delta=1e-5, accountant='prv') > 0\n"
        "print(sorted(m for m in ('torch', 'opacus') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
