"""Shared fixtures for the round-protocol and auditor tests: a consortium on the in-process
EVM with a local artifact store, and honest privacy events made with the dp accountant."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chain import InProcessBackend
from dp import PrivacyEvent, compose_epsilon
from dp._accounting import Segment
from secagg._consortium import Consortium
from secagg._protocol import SecureRoundProtocol
from secagg._scheme import PlainScheme
from secagg._store import LocalDirectoryStore
from secagg.ckks import CKKSSchema, build_ckks_scheme
from secagg.masking import MaskingSchema, build_masking_scheme

DIM = 64
SAMPLE_RATE = 0.05
SIGMA = 1.2
STEPS = 10
DELTA = 1e-5


def make_scheme(name: str):
    if name == "plain":
        return PlainScheme(), {"name": "plain"}
    if name == "ckks":
        schema = CKKSSchema()
        return build_ckks_scheme(schema), dataclasses.asdict(schema)
    schema = MaskingSchema(max_dropout_fraction=0.3)
    return build_masking_scheme(schema), dataclasses.asdict(schema)


def make_event(
    client: int, round_id: int, previous=None, *, steps: int = STEPS, claim=None, sigma=SIGMA
):
    """An honest (or, with ``claim``, a lying) event chained after ``previous``."""
    history = [] if previous is None else list(previous)
    segments = [
        Segment(sample_rate=e.sample_rate, noise_multiplier=e.noise_multiplier, steps=e.steps)
        for e in history
    ] + [Segment(sample_rate=SAMPLE_RATE, noise_multiplier=sigma, steps=steps)]
    epsilon = compose_epsilon(segments, delta=DELTA, accountant="rdp")
    return PrivacyEvent(
        client_id=f"client-{client}",
        round_id=round_id,
        mechanism="dpsgd-sample",
        sample_rate=SAMPLE_RATE,
        noise_multiplier=sigma,
        steps=steps,
        max_grad_norm=1.0,
        delta=DELTA,
        accountant="rdp",
        poisson_sampling=True,
        cumulative_steps=sum(e.steps for e in history) + steps,
        cumulative_epsilon=epsilon if claim is None else claim,
        previous_digest="0x" + history[-1].digest().hex() if history else "0x" + "00" * 32,
    )


@dataclasses.dataclass
class Federation:
    """A tiny federation driving the protocol with random updates and honest events."""

    protocol: SecureRoundProtocol
    consortium: Consortium
    n_clients: int
    rng: np.random.Generator
    events: dict[int, list[PrivacyEvent]] = dataclasses.field(default_factory=dict)

    def round(self, round_id: int, *, drop=(), crash_after_commit=(), tamper=None, **kwargs):
        selected = list(range(self.n_clients))
        weights = {c: 1.0 / len(selected) for c in selected}
        updates = {c: self.rng.normal(0, 0.05, DIM) * weights[c] for c in selected if c not in drop}
        events = {}
        for c in updates:
            history = self.events.setdefault(c, [])
            event = make_event(c, round_id, history)
            if tamper is not None and c in tamper:
                event = tamper[c](history)
            history.append(event)
            events[c] = event
        outcome = self.protocol.run_round(
            round_id,
            selected=selected,
            weights=weights,
            updates=updates,
            events=events,
            expected_steps=dict.fromkeys(selected, STEPS),
            crash_after_commit=crash_after_commit,
            **kwargs,
        )
        return outcome, updates


@pytest.fixture(name="make_event")
def make_event_fixture():
    return make_event


@pytest.fixture
def make_federation(tmp_path):
    def factory(scheme_name: str = "ckks", *, n_clients: int = 4, budget: float = 10.0, **kw):
        backend = InProcessBackend()
        store = LocalDirectoryStore(tmp_path / f"store-{scheme_name}")
        consortium = Consortium.create(
            backend, n_clients=n_clients, store=store, epsilon_budget=budget, **kw
        )
        scheme, config = make_scheme(scheme_name)
        protocol = SecureRoundProtocol(
            consortium=consortium,
            scheme=scheme,
            scheme_config=config,
            dim=DIM,
            dp_mode="sample",
            audit_each_round=False,
        )
        return Federation(protocol, consortium, n_clients, np.random.default_rng(7))

    return factory
