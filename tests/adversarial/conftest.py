"""Fixtures for the attack tests: a real consortium (contract on the in-process EVM, local
artifact store) running the hardened protocol with real TenSEAL CKKS, and helpers to drive
a round phase by phase so an attacker can act between the phases."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from chain import InProcessBackend
from secagg._consortium import Consortium
from secagg._manifest import RoundManifest
from secagg._protocol import SecureRoundProtocol
from secagg._roles import ClientParty, Submission
from secagg._scheme import PlainScheme, RoundSession
from secagg._store import LocalDirectoryStore
from secagg.ckks import CKKSSchema, build_ckks_scheme, parse_blob, parse_header, wire_prime
from secagg.ckks._blob import KIND_CLIENT, encode_blob

DIM = 32
N_CLIENTS = 4


def _client_blob(scheme, like: bytes, coefficients: np.ndarray) -> bytes:  # type: ignore[no-untyped-def]
    header = parse_blob(like, scheme.params, context_digest=scheme.key_holder.context_digest)
    return encode_blob(
        kind=KIND_CLIENT,
        params=scheme.params,
        context_digest=header.header.context_digest,
        element_count=header.header.element_count,
        coefficients=coefficients,
    )


def _coefficients(scheme, blob: bytes) -> np.ndarray:  # type: ignore[no-untyped-def]
    return parse_blob(
        blob, scheme.params, context_digest=scheme.key_holder.context_digest
    ).coefficients


def negate_blob(scheme, blob: bytes) -> bytes:  # type: ignore[no-untyped-def]
    """The ciphertext -c mod q of a client blob: what an attacker submits to cancel it.

    No key is needed: CKKS is additively malleable under the public context alone."""
    prime = np.uint64(wire_prime(scheme.params))
    return _client_blob(scheme, blob, (prime - _coefficients(scheme, blob)) % prime)


def rerandomize_blob(scheme, blob: bytes) -> bytes:  # type: ignore[no-untyped-def]
    """c + Enc(0): a copy of a client blob that no byte comparison would recognise."""
    zero = scheme.client.protect(np.zeros(parse_header_count(blob)), max_abs=1.0)
    prime = np.uint64(wire_prime(scheme.params))
    total = (_coefficients(scheme, blob) + _coefficients(scheme, zero)) % prime
    return _client_blob(scheme, blob, total)


def parse_header_count(blob: bytes) -> int:
    return parse_header(blob)[0].element_count


@dataclasses.dataclass
class Federation:
    """A small federation and the parties an attack test drives by hand."""

    protocol: SecureRoundProtocol
    consortium: Consortium
    backend: InProcessBackend
    rng: np.random.Generator

    @property
    def ledger(self):  # type: ignore[no-untyped-def]
        return self.consortium.ledger

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.consortium.store

    def updates(self, clients: Sequence[int] = range(N_CLIENTS)) -> dict[int, np.ndarray]:
        return {c: self.rng.normal(0, 0.05, DIM) / N_CLIENTS for c in clients}

    def run(self, round_id: int, updates: dict[int, np.ndarray], **kwargs):  # type: ignore[no-untyped-def]
        selected = list(range(N_CLIENTS))
        return self.protocol.run_round(
            round_id,
            selected=selected,
            weights=dict.fromkeys(selected, 1.0 / N_CLIENTS),
            updates=updates,
            **kwargs,
        )

    def open(self, round_id: int) -> tuple[RoundManifest, RoundSession]:
        """The aggregator opens a round among every client; returns manifest and session."""
        selected = list(range(N_CLIENTS))
        manifest = self.protocol.manifest(
            round_id, selected=selected, weights=dict.fromkeys(selected, 1.0 / N_CLIENTS)
        )
        self.protocol.aggregator.open_round(manifest)
        session = self.protocol.scheme.start_round(round_id=round_id, client_ids=selected, dim=DIM)
        session.setup()
        return manifest, session

    def party(self, client_id: int) -> ClientParty:
        return ClientParty(client_id=client_id, consortium=self.consortium)

    def commit(
        self, round_id: int, session: RoundSession, client_id: int, update: np.ndarray
    ) -> Submission:
        return self.party(client_id).commit(round_id, session, update, None)

    def address(self, client_id: int) -> str:
        return self.consortium.address_of(client_id)


@pytest.fixture
def make_federation(tmp_path):  # type: ignore[no-untyped-def]
    def factory(
        scheme_name: str = "ckks",
        *,
        audit: bool = True,
        ledger: str = "evm",
        **consortium_kw: object,
    ) -> Federation:
        """``ledger="memory"``: the consortium on chain.MemoryLedger (chain=none)."""
        backend = InProcessBackend()
        store = LocalDirectoryStore(tmp_path / f"store-{scheme_name}-{ledger}")
        if ledger == "memory":
            consortium = Consortium.in_memory(
                n_clients=N_CLIENTS, store=store, epsilon_budget=10.0, **consortium_kw
            )
        else:
            consortium = Consortium.create(
                backend, n_clients=N_CLIENTS, store=store, epsilon_budget=10.0, **consortium_kw
            )
        if scheme_name == "plain":
            scheme, config = PlainScheme(), {"name": "plain"}
        else:
            schema = CKKSSchema()
            scheme, config = build_ckks_scheme(schema), dataclasses.asdict(schema)
        protocol = SecureRoundProtocol(
            consortium=consortium,
            scheme=scheme,
            scheme_config=config,
            dim=DIM,
            audit_each_round=audit,
        )
        return Federation(protocol, consortium, backend, np.random.default_rng(11))

    return factory
