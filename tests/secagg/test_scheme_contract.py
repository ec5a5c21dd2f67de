"""The contract every registered protection scheme meets (docs/extending.md, "Add a
protection scheme"), run against each scheme in the registry with its default schema:
real TenSEAL ciphertexts for CKKS, the real masking protocol, the real contract on the
in-process EVM for the round-level declarations.

A scheme added to :data:`secagg._hydra.SCHEMES` runs here without any edit to this file;
each test checks a declaration of the scheme class against what its sessions do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pytest

from chain import InProcessBackend
from secagg._consortium import Consortium
from secagg._digest import keccak256
from secagg._errors import ProtocolAbortError, SecAggError, UnknownSchemeError
from secagg._hydra import SCHEMES, build_scheme, scheme_class
from secagg._manifest import ManifestClient, RoundManifest
from secagg._protocol import SecureRoundProtocol
from secagg._recombine import aggregate_inputs, recombine
from secagg._roles import ClientParty
from secagg._scheme import ProtectionScheme
from secagg._store import ArtifactStore, LocalDirectoryStore

N_CLIENTS = 5
DIM = 16
ROUND = 3


@dataclasses.dataclass
class Setup:
    """One registered scheme, built from its default schema, with a store holding its
    public material."""

    name: str
    schema: object
    scheme: ProtectionScheme
    store: ArtifactStore

    def manifest(self, round_id: int = ROUND, n_clients: int = N_CLIENTS) -> RoundManifest:
        material = self.scheme.public_material()
        return RoundManifest(
            round_id=round_id,
            scheme=self.name,
            scheme_config=dataclasses.asdict(self.schema),  # type: ignore[call-overload]
            dim=DIM,
            clients=tuple(
                ManifestClient(client_id=c, address=f"0x{c + 1:040x}", weight=1.0 / n_clients)
                for c in range(n_clients)
            ),
            public_material=None if material is None else self.store.put(material).hex(),
        )


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    name = request.param
    schema_type, _ = SCHEMES[name]
    schema = schema_type()
    store = LocalDirectoryStore(tmp_path_factory.mktemp(f"store-{name}"))
    return Setup(name=name, schema=schema, scheme=build_scheme(schema), store=store)


def _updates(n_clients: int = N_CLIENTS, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)  # test data only
    return {c: rng.uniform(-1.0, 1.0, DIM) / n_clients for c in range(n_clients)}


def _protected(
    setup: Setup,
    updates: Mapping[int, np.ndarray],
    round_id: int = ROUND,
    n_clients: int = N_CLIENTS,
) -> tuple[object, dict[int, bytes]]:
    session = setup.scheme.start_round(
        round_id=round_id, client_ids=list(range(n_clients)), dim=DIM
    )
    session.setup()
    return session, {c: session.protect(c, update) for c, update in updates.items()}


def _error(setup: Setup, total: np.ndarray, updates: Mapping[int, np.ndarray]) -> float:
    return float(np.max(np.abs(total - np.sum(list(updates.values()), axis=0))))


def test_registry_resolves_each_name_to_its_class(setup: Setup) -> None:
    assert scheme_class(setup.name) is type(setup.scheme)
    assert type(setup.scheme).name == setup.name
    with pytest.raises(UnknownSchemeError, match="unknown scheme"):
        scheme_class(setup.name + "-nope")


def test_round_trip_reveals_the_sum_within_the_declared_tolerance(setup: Setup) -> None:
    updates = _updates()
    session, blobs = _protected(setup, updates)
    aggregate = session.combine(blobs)  # type: ignore[attr-defined]
    total = session.reveal(aggregate, survivors=list(blobs))  # type: ignore[attr-defined]
    tolerance = setup.scheme.sum_tolerance(n_clients=N_CLIENTS)
    assert 0.0 < tolerance < 1e-3
    assert session.combined == tuple(range(N_CLIENTS))  # type: ignore[attr-defined]
    assert _error(setup, total, updates) <= tolerance
    # the tolerance is not slack enough to pass a wrong sum: one update short fails
    short = dict(list(updates.items())[1:])
    assert _error(setup, total, short) > tolerance


def test_recombination_from_the_manifest_equals_the_combine(setup: Setup) -> None:
    updates = _updates(seed=1)
    session, blobs = _protected(setup, updates)
    aggregate = session.combine(blobs)  # type: ignore[attr-defined]
    manifest = setup.manifest()
    in_order = sorted(blobs.items())
    assert recombine(manifest, in_order, setup.store) == aggregate
    listed = aggregate_inputs(manifest, aggregate)
    if listed is not None:  # a scheme whose aggregates list their inputs lists these
        assert tuple(listed) == tuple(keccak256(blob) for _, blob in in_order)
    # a manifest round-tripped through its canonical bytes recombines the same
    parsed = RoundManifest.from_bytes(manifest.canonical_bytes())
    assert recombine(parsed, in_order, setup.store) == aggregate


def test_dropouts_up_to_the_declared_capability(setup: Setup) -> None:
    most = setup.scheme.max_dropouts(n_clients=N_CLIENTS)
    assert 0 <= most < N_CLIENTS
    updates = _updates(seed=2)
    survivors = {c: u for c, u in updates.items() if c >= most}
    session, blobs = _protected(setup, survivors)
    aggregate = session.combine(blobs)  # type: ignore[attr-defined]
    total = session.reveal(aggregate, survivors=list(blobs))  # type: ignore[attr-defined]
    assert session.combined == tuple(sorted(survivors))  # type: ignore[attr-defined]
    assert _error(setup, total, survivors) <= setup.scheme.sum_tolerance(n_clients=N_CLIENTS)


def test_one_dropout_more_than_declared_reveals_nothing(setup: Setup) -> None:
    most = setup.scheme.max_dropouts(n_clients=N_CLIENTS)
    updates = _updates(seed=3)
    survivors = {c: u for c, u in updates.items() if c > most}
    session, blobs = _protected(setup, survivors)
    with pytest.raises(SecAggError):
        aggregate = session.combine(blobs)  # type: ignore[attr-defined]
        session.reveal(aggregate, survivors=list(blobs))  # type: ignore[attr-defined]


def test_a_malformed_blob_is_refused_alone_with_a_named_error(setup: Setup) -> None:
    n_clients = 10  # the client refused counts as a dropout: every scheme survives one of 10
    assert setup.scheme.max_dropouts(n_clients=n_clients) >= 1
    updates = _updates(n_clients, seed=4)
    session, blobs = _protected(setup, updates, n_clients=n_clients)
    blobs[0] = blobs[0][: len(blobs[0]) // 2]  # truncated in transit
    aggregate = session.combine(blobs)  # type: ignore[attr-defined]
    others = {c: u for c, u in updates.items() if c != 0}
    assert session.combined == tuple(sorted(others))  # type: ignore[attr-defined]
    total = session.reveal(aggregate, survivors=list(others))  # type: ignore[attr-defined]
    assert _error(setup, total, others) <= setup.scheme.sum_tolerance(n_clients=n_clients)
    with pytest.raises(SecAggError) as caught:  # an auditor recombining it names it
        recombine(setup.manifest(), [(0, blobs[0])], setup.store)
    assert isinstance(caught.value, ValueError)


def test_a_blob_of_another_round_per_the_declared_binding(setup: Setup) -> None:
    updates = _updates(seed=5)
    session, blobs = _protected(setup, updates, round_id=ROUND)
    aggregate = session.combine(blobs)  # type: ignore[attr-defined]
    later = setup.manifest(round_id=ROUND + 1)
    in_order = sorted(blobs.items())
    if type(setup.scheme).binds_round:
        with pytest.raises(SecAggError):
            recombine(later, in_order, setup.store)
    else:  # only the ledger commitment binds the round: the bytes still combine
        assert recombine(later, in_order, setup.store) == aggregate


def test_equal_updates_give_equal_blobs_only_without_randomness(setup: Setup) -> None:
    update = np.full(DIM, 0.01)
    _, blobs = _protected(setup, {0: update, 1: update})
    assert (blobs[0] != blobs[1]) is type(setup.scheme).randomized_blobs


def test_public_material_and_public_sessions(setup: Setup) -> None:
    declared = type(setup.scheme)
    material = setup.scheme.public_material()
    assert declared.has_public_material is (material is not None)
    manifest = setup.manifest()
    if declared.has_public_material:
        with pytest.raises(SecAggError):
            declared.public_session(manifest, schema=setup.schema, public_material=None)
    public = declared.public_session(manifest, schema=setup.schema, public_material=material)
    if public is None:  # its rounds need more than public material (masking)
        return
    updates = _updates(seed=6)
    blobs = {c: public.protect(c, u) for c, u in updates.items()}
    aggregate = public.combine(blobs)
    assert recombine(manifest, sorted(blobs.items()), setup.store) == aggregate
    if declared.releases_via_key_holder:  # nobody holding public material only can reveal
        with pytest.raises(SecAggError):
            public.reveal(aggregate, survivors=list(blobs))
    else:
        total = public.reveal(aggregate, survivors=list(blobs))
        assert _error(setup, total, updates) <= setup.scheme.sum_tolerance(n_clients=N_CLIENTS)


def test_round_level_declarations_hold_in_the_protocol(setup: Setup, tmp_path) -> None:
    """``release_noise_refusal``, ``supports_resume`` and ``releases_via_key_holder``
    against the real round protocol on the in-process EVM."""
    declared = type(setup.scheme)
    store = LocalDirectoryStore(tmp_path / "store")
    consortium = Consortium.create(
        InProcessBackend(), n_clients=N_CLIENTS, store=store, epsilon_budget=10.0
    )
    scheme = build_scheme(setup.schema)
    protocol = SecureRoundProtocol(
        consortium=consortium,
        scheme=scheme,
        scheme_config=dataclasses.asdict(setup.schema),  # type: ignore[call-overload]
        dim=DIM,
        audit_each_round=False,
    )
    assert protocol.key_holder.attests is declared.releases_via_key_holder
    selected = list(range(N_CLIENTS))
    weights = dict.fromkeys(selected, 1.0 / N_CLIENTS)
    updates = _updates(seed=7)
    if declared.release_noise_refusal is not None:
        with pytest.raises(ProtocolAbortError, match="single releasing party"):
            protocol.run_round(
                1, selected=selected, weights=weights, updates=updates, release_noise_std=0.1
            )
        assert consortium.ledger.commitments(1) == []
    if not declared.supports_resume:
        with pytest.raises(ProtocolAbortError, match="cannot resume"):
            protocol.resume_round(1)
        return
    # a restarted aggregator finishes a round from the ledger and the store alone
    manifest = protocol.manifest(1, selected=selected, weights=weights)
    protocol.aggregator.open_round(manifest)
    session = scheme.start_round(round_id=1, client_ids=selected, dim=DIM)
    session.setup()
    parties = {c: ClientParty(client_id=c, consortium=consortium) for c in selected}
    submissions = {c: parties[c].commit(1, session, updates[c], None) for c in selected}
    for c in selected:
        parties[c].reveal(1, submissions[c])
    restarted = SecureRoundProtocol(
        consortium=consortium,
        scheme=scheme,
        scheme_config=dataclasses.asdict(setup.schema),  # type: ignore[call-overload]
        dim=DIM,
        audit_each_round=False,
    )
    outcome = restarted.resume_round(1)
    assert outcome.included == tuple(selected)
    assert outcome.total is not None
    assert _error(setup, outcome.total, updates) <= scheme.sum_tolerance(n_clients=N_CLIENTS)
    assert consortium.ledger.round_info(1).finalized
    if declared.releases_via_key_holder:
        assert consortium.ledger.round_info(1).reveal_digest is not None


def test_a_manifest_naming_no_registered_scheme_fails_to_recombine(tmp_path) -> None:
    """The manifest parses (the auditor must be able to name it at fault), but nothing
    recombines under it: the registry refuses the name with a named error."""
    manifest = RoundManifest(
        round_id=1,
        scheme="rot13",
        scheme_config={},
        dim=DIM,
        clients=(ManifestClient(client_id=0, address=f"0x{1:040x}", weight=1.0),),
    )
    store = LocalDirectoryStore(tmp_path / "store")
    with pytest.raises(UnknownSchemeError, match="rot13") as caught:
        recombine(manifest, [(0, bytes(8 * DIM))], store)
    assert isinstance(caught.value, ValueError)
