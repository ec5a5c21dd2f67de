"""Hostile files and inputs to the parties, the auditor and ``secagg audit`` (issue 10, item 8).

Each test mounts the input an attacker controls (a privacy event a client commits, the
manifest an aggregator declares, what sits in the artifact store, a ``results.json``)
against the real protocol on the in-process EVM, and asserts that nothing crashes, hangs
or blames an honest party: bad input is a finding naming its author, or "cannot audit"
(exit 2). The parsers, the store, the auditor and the command line are also fuzzed with
hypothesis (few examples, so the suite stays fast).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain import InProcessBackend
from dp import PrivacyEvent, compose_epsilon
from dp._accounting import Segment
from dp._errors import EventChainError
from secagg._audit_report import CANNOT_AUDIT_CHECK, AuditReport
from secagg._auditor import audit, round_ids
from secagg._consortium import Consortium
from secagg._errors import BlobFormatError
from secagg._manifest import ManifestClient, ManifestError, RoundManifest
from secagg._protocol import SecureRoundProtocol
from secagg._safejson import UntrustedJSONError, loads_untrusted, nesting_depth
from secagg._scheme import PlainScheme
from secagg._store import LocalDirectoryStore
from secagg.cli import main
from secagg.masking import MaskingSchema, build_masking_scheme

DIM = 16
N_CLIENTS = 4
HOSTILE = 1
# Deep enough to overflow the C stack once py-evm has raised the recursion limit (the
# process dies with SIGSEGV when this reaches json.loads).
STACK_SMASHING_NESTING = 300_000
_FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclasses.dataclass(frozen=True)
class _HostileEvent:
    """What a lying client hands the protocol as its privacy event: arbitrary bytes."""

    payload: bytes
    cumulative_epsilon: float = 0.5

    def canonical_bytes(self) -> bytes:
        return self.payload


def _honest_event(client: int, round_id: int) -> PrivacyEvent:
    epsilon = compose_epsilon(
        [Segment(sample_rate=0.05, noise_multiplier=1.2, steps=5)], delta=1e-5, accountant="rdp"
    )
    return PrivacyEvent(
        client_id=f"client-{client}",
        round_id=round_id,
        mechanism="dpsgd-sample",
        sample_rate=0.05,
        noise_multiplier=1.2,
        steps=5,
        max_grad_norm=1.0,
        delta=1e-5,
        accountant="rdp",
        poisson_sampling=True,
        cumulative_steps=5,
        cumulative_epsilon=epsilon,
    )


def _protocol(
    root: Path,
    *,
    scheme: str = "plain",
    dp_mode: str = "off",
    audit_each_round: bool = True,
    protocol_class: type[SecureRoundProtocol] = SecureRoundProtocol,
    scheme_config: dict[str, object] | None = None,
) -> SecureRoundProtocol:
    consortium = Consortium.create(
        InProcessBackend(),
        n_clients=N_CLIENTS,
        store=LocalDirectoryStore(root / "store"),
        epsilon_budget=10.0,
    )
    if scheme == "plain":
        protection, config = PlainScheme(), {"name": "plain"}
    else:
        schema = MaskingSchema(max_dropout_fraction=0.3)
        protection, config = build_masking_scheme(schema), dataclasses.asdict(schema)
    return protocol_class(
        consortium=consortium,
        scheme=protection,
        scheme_config=config if scheme_config is None else scheme_config,
        dim=DIM,
        dp_mode=dp_mode,
        audit_each_round=audit_each_round,
    )


def _run(protocol: SecureRoundProtocol, round_id: int, events=None):
    rng = np.random.default_rng(round_id)
    selected = list(range(N_CLIENTS))
    return protocol.run_round(
        round_id,
        selected=selected,
        weights=dict.fromkeys(selected, 1 / N_CLIENTS),
        updates={c: rng.normal(0, 0.05, DIM) / N_CLIENTS for c in selected},
        events=events,
    )


def _audit_promptly(protocol: SecureRoundProtocol, **kwargs) -> AuditReport:
    """``audit()`` in a thread: a read that blocks fails the test instead of hanging it."""
    reports: list[AuditReport] = []
    worker = threading.Thread(
        target=lambda: reports.append(
            audit(protocol.consortium.ledger, protocol.consortium.store, **kwargs)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the audit blocked on the artifact store"
    return reports[0]


def _named(report_findings) -> set[str]:
    return {f.client.lower() for f in report_findings if f.client is not None}


# ----------------------------------------------------------------- deeply nested JSON
def test_a_deeply_nested_privacy_event_is_the_clients_finding_not_a_crash(tmp_path):
    """Before the caps, the in-round audit parsed this event and the process died (SIGSEGV)."""
    protocol = _protocol(tmp_path)
    bomb = b"[" * STACK_SMASHING_NESTING + b"]" * STACK_SMASHING_NESTING
    outcome = _run(protocol, 1, events={HOSTILE: _HostileEvent(bomb)})
    assert sorted(outcome.included) == list(range(N_CLIENTS))
    culprit = protocol.consortium.address_of(HOSTILE)
    assert [(f.check, f.client) for f in outcome.findings] == [("privacy", culprit)]
    assert set(outcome.flagged) == {HOSTILE}


def test_nesting_under_the_size_cap_is_refused_before_parsing():
    flat_cap = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    with pytest.raises(EventChainError, match="flat"):
        PrivacyEvent.from_bytes(flat_cap)
    manifest_bomb = b"[" * 1_000_000 + b"]" * 1_000_000  # under the manifest's size cap
    with pytest.raises(ManifestError, match="nests deeper"):
        RoundManifest.from_bytes(manifest_bomb)


# ----------------------------------------------------------------- malformed manifests
def test_a_masking_manifest_missing_parameters_is_refused_before_the_round_opens(tmp_path):
    protocol = _protocol(tmp_path, scheme="masking", scheme_config={"name": "masking"})
    with pytest.raises(ManifestError, match="lacks masking parameter"):
        _run(protocol, 1)
    assert round_ids(protocol.consortium.ledger) == []


class _SloppyManifestProtocol(SecureRoundProtocol):
    """An aggregator that declares a masking manifest without its parameters (the scheme it
    runs is fine; only the declaration every auditor relies on is broken)."""

    def manifest(self, round_id, **kwargs):
        manifest = super().manifest(round_id, **kwargs)
        object.__setattr__(manifest, "scheme_config", {"name": "masking"})
        return manifest


def test_a_stored_masking_manifest_missing_parameters_blames_no_client(tmp_path):
    protocol = _protocol(tmp_path, scheme="masking", protocol_class=_SloppyManifestProtocol)
    outcome = _run(protocol, 1)
    assert outcome.flagged == {}
    assert {f.check for f in outcome.findings} == {"manifest"}
    assert _named(outcome.findings) == set()
    report = _audit_promptly(protocol)
    assert report.exit_code == 1, report.to_table()
    assert {f.check for f in report.findings} == {"manifest"}
    assert "lacks masking parameter" in report.findings[0].detail
    assert _named(report.findings) == set()


# ----------------------------------------------------------------- hostile store contents
def _blob_path(protocol: SecureRoundProtocol, round_id: int, client_id: int) -> Path:
    address = protocol.consortium.address_of(client_id)
    ledger = protocol.consortium.ledger
    commitment = next(c for c in ledger.commitments(round_id) if c.client == address)
    return protocol.consortium.store.root / bytes(commitment.blob_digest).hex()


def test_a_fifo_in_the_store_does_not_block_the_audit(tmp_path):
    protocol = _protocol(tmp_path, audit_each_round=False)
    _run(protocol, 1)
    path = _blob_path(protocol, 1, 2)
    path.unlink()
    os.mkfifo(path)
    report = _audit_promptly(protocol)
    assert report.exit_code == 1, report.to_table()
    assert _named(report.findings) == {protocol.consortium.address_of(2).lower()}
    assert any("not a regular file" in f.detail for f in report.findings)


def test_a_huge_manifest_file_is_refused_without_reading_it(tmp_path):
    protocol = _protocol(tmp_path, audit_each_round=False)
    _run(protocol, 1)
    info = protocol.consortium.ledger.round_info(1)
    path = protocol.consortium.store.root / bytes(info.config_digest).hex()
    with path.open("wb") as handle:
        handle.truncate(2**40)  # sparse
    report = _audit_promptly(protocol)
    assert report.exit_code == 1, report.to_table()
    assert [f.check for f in report.findings] == ["manifest"]
    assert "more than the cap" in report.findings[0].detail


@pytest.mark.parametrize("contents", ["empty", "wrong"])
def test_an_empty_or_wrong_store_cannot_be_audited_and_names_no_one(tmp_path, contents):
    protocol = _protocol(tmp_path, audit_each_round=False)
    _run(protocol, 1)
    other = LocalDirectoryStore(tmp_path / contents)
    if contents == "wrong":
        other.put(b"an artifact of some other federation")
    report = audit(protocol.consortium.ledger, other)
    assert report.exit_code == 2
    assert report.findings == ()
    assert "holds no manifest" in (report.cannot_audit or "")


class _FaultyStore(LocalDirectoryStore):
    """A store backend that fails in a way nobody planned for, for one artifact."""

    poisoned: bytes = b""

    def get_unchecked(self, digest, *, max_bytes=None):
        if bytes(digest) == self.poisoned:
            raise RuntimeError("backend fault")
        return super().get_unchecked(digest, max_bytes=max_bytes)


def test_an_unexpected_failure_in_one_check_is_cannot_audit_and_blames_no_one(tmp_path):
    protocol = _protocol(tmp_path, audit_each_round=False, dp_mode="sample")
    _run(protocol, 1, events={c: _honest_event(c, 1) for c in range(N_CLIENTS)})
    store = _FaultyStore(protocol.consortium.store.root)
    commitment = protocol.consortium.ledger.commitments(1)[0]
    store.poisoned = bytes(commitment.event_digest)
    report = audit(protocol.consortium.ledger, store)
    assert report.exit_code == 2, report.to_table()
    (finding,) = report.findings
    assert (finding.check, finding.client) == (CANNOT_AUDIT_CHECK, None)
    assert "privacy check could not run: RuntimeError" in finding.detail
    (round_audit,) = report.rounds
    assert round_audit.checks["privacy"] is False and round_audit.checks["blobs"] is True


# ----------------------------------------------------------------- the command line
def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["audit", *args])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    return code, output


def _results(path: Path, ledger: object) -> str:
    path.write_text(json.dumps({"ledger": ledger}))
    return str(path)


def test_results_json_with_a_number_for_the_store_cannot_be_audited(tmp_path, capsys):
    results = _results(tmp_path / "results.json", {"url": "http://127.0.0.1:9", "store": 5})
    code, output = _cli(capsys, "--results", results, "--address", "0x" + "11" * 20)
    assert code == 2
    assert "ledger.store must be a string" in output


@pytest.mark.parametrize("kind", ["fifo", "nested", "not-json", "huge", "directory", "list"])
def test_hostile_results_files_cannot_be_audited(tmp_path, capsys, kind):
    path = tmp_path / "results.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "nested":
        path.write_bytes(b"[" * STACK_SMASHING_NESTING + b"]" * STACK_SMASHING_NESTING)
    elif kind == "not-json":
        path.write_bytes(b"\xff\xfe not json")
    elif kind == "huge":
        with path.open("wb") as handle:
            handle.truncate(2**40)
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text("[1, 2, 3]")
    code, output = _cli(capsys, "--results", str(path))
    assert code == 2
    assert "CANNOT AUDIT" in output


def test_a_bad_tolerance_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["audit", "--tolerance", "nan"])
    assert raised.value.code == 2
    assert "finite" in capsys.readouterr().err


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@_FUZZ
@given(
    ledger=_JSON
    | st.fixed_dictionaries(
        {},
        optional={"url": _JSON, "address": _JSON, "store": _JSON | st.just(".")},
    ),
    raw=st.none() | st.binary(max_size=64),
)
def test_fuzzed_results_json_never_crashes_the_command(ledger, raw):
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "results.json"
        if raw is None:
            path.write_text(json.dumps({"ledger": ledger}))
        else:
            path.write_bytes(raw)
        # The only ledger it may reach is a closed local port: nothing leaves the machine.
        code = main(["audit", "--results", str(path), "--rpc", "http://127.0.0.1:9"])
    assert code == 2


# ----------------------------------------------------------------- parsers
@_FUZZ
@given(value=_JSON)
def test_capped_parse_agrees_with_json_within_the_caps(value):
    data = json.dumps(value).encode()
    depth = nesting_depth(data)
    assert depth == _depth(value)
    parsed = loads_untrusted(data, max_bytes=len(data), max_depth=depth, what="doc")
    assert parsed == json.loads(data)
    if depth:
        with pytest.raises(UntrustedJSONError, match="nests deeper"):
            loads_untrusted(data, max_bytes=len(data), max_depth=depth - 1, what="doc")
    with pytest.raises(UntrustedJSONError, match="more than the cap"):
        loads_untrusted(data + b" ", max_bytes=len(data), max_depth=depth, what="doc")


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@_FUZZ
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_fail_to_parse_only_with_named_errors(data):
    with pytest.raises(BlobFormatError):
        RoundManifest.from_bytes(data)
    with pytest.raises(EventChainError):
        PrivacyEvent.from_bytes(data)


def _manifest_payload() -> dict:
    manifest = RoundManifest(
        round_id=3,
        scheme="masking",
        scheme_config=dataclasses.asdict(MaskingSchema()),
        dim=DIM,
        clients=tuple(
            ManifestClient(client_id=c, address="0x" + f"{c + 1:040x}", weight=0.25)
            for c in range(N_CLIENTS)
        ),
    )
    return json.loads(manifest.canonical_bytes())


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


@_FUZZ
@given(data=st.data(), replacement=_JSON, delete=st.booleans())
def test_mutated_manifests_parse_or_fail_with_a_manifest_error(data, replacement, delete):
    payload = _manifest_payload()
    path = data.draw(st.sampled_from(_paths(payload)[1:]))
    parent = payload
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    try:
        manifest = RoundManifest.from_bytes(encoded)
    except BlobFormatError:
        return
    assert isinstance(manifest, RoundManifest)
    manifest.canonical_bytes()  # a manifest that parses is usable as one


@_FUZZ
@given(data=st.data(), replacement=_JSON)
def test_mutated_privacy_events_parse_or_fail_with_an_event_error(data, replacement):
    raw = json.loads(_honest_event(0, 1).canonical_bytes())
    key = data.draw(st.sampled_from(sorted(raw)))
    raw[key] = replacement
    encoded = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    try:
        PrivacyEvent.from_bytes(encoded)
    except EventChainError:
        return


# ----------------------------------------------------------------- the auditor, fuzzed
_EVENT_PAYLOADS = (
    st.binary(max_size=512)
    | st.integers(1, STACK_SMASHING_NESTING).map(lambda n: b"[" * n + b"]" * n)
    | _JSON.map(lambda v: json.dumps(v).encode())
)


@pytest.mark.slow
def test_fuzzed_privacy_events_in_real_rounds_name_only_their_client(tmp_path):
    protocol = _protocol(tmp_path)
    culprit = protocol.consortium.address_of(HOSTILE).lower()
    round_counter = itertools.count(1)

    @settings(max_examples=4, deadline=None, database=None)
    @given(payload=_EVENT_PAYLOADS)
    def one_round(payload):
        round_id = next(round_counter)
        outcome = _run(protocol, round_id, events={HOSTILE: _HostileEvent(payload)})
        assert sorted(outcome.included) == list(range(N_CLIENTS))
        assert {f.check for f in outcome.findings} == {"privacy"}
        assert _named(outcome.findings) == {culprit}

    one_round()


_MUTATIONS = st.sampled_from(["garbage", "fifo", "directory", "symlink", "huge", "delete"])


@pytest.mark.slow
def test_fuzzed_store_contents_never_crash_or_hang_the_audit(tmp_path):
    protocol = _protocol(tmp_path, audit_each_round=False, dp_mode="sample")
    _run(protocol, 1, events={c: _honest_event(c, 1) for c in range(N_CLIENTS)})
    store = protocol.consortium.store
    ledger = protocol.consortium.ledger
    targets = [("manifest", None, bytes(ledger.round_info(1).config_digest))]
    for commitment in ledger.commitments(1):
        targets.append(("blob", commitment.client.lower(), bytes(commitment.blob_digest)))
        targets.append(("event", commitment.client.lower(), bytes(commitment.event_digest)))
    outside = tmp_path / "outside"
    outside.write_bytes(b"outside the store")

    @settings(max_examples=15, deadline=None, database=None)
    @given(target=st.sampled_from(targets), mutation=_MUTATIONS, garbage=st.binary(max_size=64))
    def one_mutation(target, mutation, garbage):
        kind, client, digest = target
        path = store.root / digest.hex()
        original = path.read_bytes()
        path.unlink()
        try:
            if mutation == "garbage":
                path.write_bytes(garbage if garbage != original else garbage + b"!")
            elif mutation == "fifo":
                os.mkfifo(path)
            elif mutation == "directory":
                path.mkdir()
            elif mutation == "symlink":
                path.symlink_to(outside)
            elif mutation == "huge":
                with path.open("wb") as handle:
                    handle.truncate(2**40)
            report = _audit_promptly(protocol)
            assert not [f for f in report.findings if f.check == CANNOT_AUDIT_CHECK]
            if kind == "manifest":
                assert report.exit_code == (2 if mutation == "delete" else 1), report.to_table()
                assert _named(report.findings) == set()
            else:
                assert report.exit_code == 1, report.to_table()
                assert _named(report.findings) == {client}
        finally:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            elif os.path.lexists(path):
                path.unlink()
            path.write_bytes(original)

    one_mutation()
    assert audit(ledger, store).exit_code == 0
