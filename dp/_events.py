"""Privacy events: the frozen, canonically encoded record of one round of one client.

Each round of each client (sample-level DP-SGD) or of the federation (client-level
DP-FedAvg) yields one :class:`PrivacyEvent`. The ledger commits to its digest, and an
auditor re-derives the cumulative epsilon from the committed events alone with
:func:`recompute_epsilon`, with no access to data, models or this package's state.

Canonical bytes (format ``secagg-fl/dp-event/v1``): UTF-8 JSON of one object, keys sorted,
no whitespace (separators ``,`` and ``:``), ASCII only. Integers are JSON integers,
booleans JSON booleans, absent optional values JSON ``null``; every float is a JSON string
holding Python's ``repr`` of the float (shortest round-trip decimal, e.g. ``"1e-05"``),
so the bytes do not depend on any JSON library's float formatting. The ``format`` key holds
the format tag. The digest is keccak256 (the original Keccak padding used by Ethereum,
``Crypto.Hash.keccak`` with 256-bit output) of the canonical bytes.

Events come from untrusted parties (the artifact store, a client's saved state), so
:meth:`PrivacyEvent.from_bytes` refuses more than :data:`MAX_EVENT_BYTES` and any nested
array or object before handing the bytes to the JSON parser: py-evm raises Python's
recursion limit, and a deeply nested document would otherwise overflow the C stack.

Events form a hash chain per client: ``previous_digest`` is the digest of the same
client's previous event (32 zero bytes for the first), so a verifier detects a dropped,
reordered or altered event.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from Crypto.Hash import keccak

from dp._accounting import MECHANISMS, Segment, compose_epsilon
from dp._config import ACCOUNTANTS
from dp._errors import EventChainError

__all__ = [
    "EVENT_FORMAT",
    "GENESIS_DIGEST",
    "MAX_EVENT_BYTES",
    "PrivacyEvent",
    "events_to_segments",
    "recompute_epsilon",
    "summarize_events",
    "verify_event_chain",
]

EVENT_FORMAT = "secagg-fl/dp-event/v1"
#: ``previous_digest`` of a client's first event.
GENESIS_DIGEST = "0x" + "00" * 32

#: Largest encoded event :meth:`PrivacyEvent.from_bytes` parses (an honest one is ~500 bytes).
MAX_EVENT_BYTES = 64 * 1024
# A JSON string with its escapes (no nested quantifiers, so matching is linear).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)

_FLOAT_FIELDS = frozenset(
    {"sample_rate", "noise_multiplier", "max_grad_norm", "delta", "cumulative_epsilon"}
)
_OPTIONAL_FLOAT_FIELDS = frozenset({"epsilon_budget"})


def _is_hex_digest(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 66 or not value.startswith("0x"):
        return False
    return all(c in "0123456789abcdef" for c in value[2:])


def _check_flat_json(data: bytes) -> None:
    """Refuse oversized input and any nesting below the one top-level object, before parsing."""
    if len(data) > MAX_EVENT_BYTES:
        raise EventChainError(
            f"privacy event has {len(data)} bytes, more than the cap {MAX_EVENT_BYTES}"
        )
    outside_strings = _JSON_STRING.sub(b'""', data)
    if outside_strings.count(b"[") or outside_strings.count(b"{") > 1:
        raise EventChainError("privacy event must be one flat JSON object (nothing nested)")


def _keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


@dataclass(frozen=True, kw_only=True)
class PrivacyEvent:
    """One accounted round: what was run, and the cumulative epsilon it brings the client to.

    ``client_id`` names the accounted party (a client for ``"dpsgd-sample"``, the
    federation for ``"dp-fedavg-client"``); ``round_id`` is the federation round;
    ``sample_rate``, ``noise_multiplier`` and ``steps`` are exactly what happened in this
    round (for client-level DP, ``noise_multiplier`` is the effective one after dropouts);
    ``cumulative_steps`` and ``cumulative_epsilon`` cover all of the client's rounds so far;
    ``poisson_sampling`` False means no sampling amplification is claimed (see
    :mod:`dp._accounting`). ``note`` is free, informative text (not used by the accounting).
    """

    client_id: str
    round_id: int
    mechanism: str
    sample_rate: float
    noise_multiplier: float
    steps: int
    max_grad_norm: float
    delta: float
    accountant: str
    poisson_sampling: bool
    cumulative_steps: int
    cumulative_epsilon: float
    epsilon_budget: float | None = None
    previous_digest: str = GENESIS_DIGEST
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise EventChainError(f"client_id must be a non-empty str, got {self.client_id!r}")
        for name in ("round_id", "steps", "cumulative_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EventChainError(f"{name} must be an int >= 0, got {value!r}")
        if self.mechanism not in MECHANISMS:
            raise EventChainError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        if self.accountant not in ACCOUNTANTS:
            raise EventChainError(
                f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}"
            )
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EventChainError(f"{name} must be a float, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise EventChainError(f"{name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 < self.sample_rate <= 1.0:
            raise EventChainError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if self.noise_multiplier <= 0 or self.max_grad_norm <= 0:
            raise EventChainError("noise_multiplier and max_grad_norm must be > 0")
        if not 0.0 < self.delta < 1.0:
            raise EventChainError(f"delta must be in (0, 1), got {self.delta!r}")
        if self.epsilon_budget is not None:
            budget = self.epsilon_budget
            if isinstance(budget, bool) or not isinstance(budget, int | float):
                raise EventChainError(f"epsilon_budget must be a float or None, got {budget!r}")
            if not budget > 0 or not math.isfinite(budget):
                raise EventChainError(f"epsilon_budget must be > 0 and finite, got {budget!r}")
            object.__setattr__(self, "epsilon_budget", float(budget))
        if not isinstance(self.poisson_sampling, bool):
            raise EventChainError(f"poisson_sampling must be a bool, got {self.poisson_sampling!r}")
        if not _is_hex_digest(self.previous_digest):
            raise EventChainError(
                "previous_digest must be 0x + 64 lowercase hex digits, "
                f"got {self.previous_digest!r}"
            )
        if not isinstance(self.note, str):
            raise EventChainError(f"note must be a str, got {self.note!r}")

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict in canonical form (floats as ``repr`` strings)."""
        out: dict[str, Any] = {"format": EVENT_FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                value = repr(value)
            out[f.name] = value
        return out

    def canonical_bytes(self) -> bytes:
        """The canonical encoding described in the module docstring."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    def digest(self) -> bytes:
        """keccak256 of :meth:`canonical_bytes` (32 bytes)."""
        return _keccak256(self.canonical_bytes())

    def digest_hex(self) -> str:
        """:meth:`digest` as ``0x`` + 64 lowercase hex digits."""
        return "0x" + self.digest().hex()

    @classmethod
    def from_bytes(cls, data: bytes) -> PrivacyEvent:
        """Decode canonical bytes; anything but the exact canonical encoding is rejected."""
        if not isinstance(data, bytes):
            raise EventChainError(f"privacy event must be bytes, got {type(data).__name__}")
        _check_flat_json(data)
        try:
            raw = json.loads(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise EventChainError(f"privacy event is not ASCII JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != EVENT_FORMAT:
            raise EventChainError(f"privacy event format must be {EVENT_FORMAT!r}")
        expected = {f.name for f in fields(cls)} | {"format"}
        if set(raw) != expected:
            raise EventChainError(
                f"privacy event keys differ: missing {sorted(expected - set(raw))}, "
                f"unexpected {sorted(set(raw) - expected)}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "format":
                continue
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
                raise EventChainError(f"{name} is out of the 64-bit range: {value}")
            if name in _FLOAT_FIELDS or (name in _OPTIONAL_FLOAT_FIELDS and value is not None):
                if not isinstance(value, str):
                    raise EventChainError(f"{name} must be encoded as a repr string")
                try:
                    value = float(value)
                except ValueError as exc:
                    raise EventChainError(f"{name} is not a float: {value!r}") from exc
            kwargs[name] = value
        event = cls(**kwargs)
        if event.canonical_bytes() != data:
            raise EventChainError("privacy event bytes are not in canonical form")
        return event


def verify_event_chain(events: Sequence[PrivacyEvent]) -> None:
    """Check that ``events`` are one client's complete, hash-linked, consistent history.

    Checks: the first links to :data:`GENESIS_DIGEST`, each next one to its predecessor's
    digest; one ``client_id``, ``mechanism``, ``delta`` and ``accountant`` throughout;
    strictly increasing rounds; ``cumulative_steps`` equal to the running sum of ``steps``.
    Raises :class:`EventChainError` naming the first inconsistency.
    """
    previous: PrivacyEvent | None = None
    running_steps = 0
    for index, event in enumerate(events):
        expected_link = GENESIS_DIGEST if previous is None else previous.digest_hex()
        if event.previous_digest != expected_link:
            raise EventChainError(
                f"event {index} (round {event.round_id}) links to {event.previous_digest}, "
                f"expected {expected_link}"
            )
        if previous is not None:
            for name in ("client_id", "mechanism", "delta", "accountant"):
                if getattr(event, name) != getattr(previous, name):
                    raise EventChainError(
                        f"event {index} changes {name} from {getattr(previous, name)!r} "
                        f"to {getattr(event, name)!r}"
                    )
            if event.round_id <= previous.round_id:
                raise EventChainError(
                    f"event {index} has round {event.round_id} after round {previous.round_id}"
                )
        running_steps += event.steps
        if event.cumulative_steps != running_steps:
            raise EventChainError(
                f"event {index} claims {event.cumulative_steps} cumulative steps, "
                f"the history has {running_steps}"
            )
        previous = event


def events_to_segments(events: Sequence[PrivacyEvent]) -> list[Segment]:
    """The accounting history ``(sample_rate, noise_multiplier, steps, poisson)`` of events."""
    return [
        Segment(
            sample_rate=e.sample_rate,
            noise_multiplier=e.noise_multiplier,
            steps=e.steps,
            poisson_sampling=e.poisson_sampling,
        )
        for e in events
    ]


def recompute_epsilon(events: Sequence[PrivacyEvent]) -> float:
    """Re-derive the cumulative epsilon of one client's committed events, from them alone.

    Verifies the chain (:func:`verify_event_chain`) and composes every step of every event
    with the events' accountant at their delta. An empty history returns 0.0. Compare the
    result with the last event's ``cumulative_epsilon`` and ``epsilon_budget``.
    """
    if not events:
        return 0.0
    verify_event_chain(events)
    return compose_epsilon(
        events_to_segments(events), delta=events[0].delta, accountant=events[0].accountant
    )


def summarize_events(events: Sequence[PrivacyEvent]) -> dict[str, Any]:
    """JSON-ready totals of one client's verified history (for ``final.privacy``).

    Holds everything needed to recompute the epsilon without this package: accountant,
    delta, mechanism, the distinct ``(sample_rate, noise_multiplier, poisson_sampling)``
    segments with their step counts, total steps, the recomputed cumulative epsilon, the
    budget and the digest of the last event (the head of the hash chain).
    """
    if not events:
        raise EventChainError("cannot summarise an empty event history")
    epsilon = recompute_epsilon(events)
    segments: dict[tuple[float, float, bool], int] = {}
    for e in events:
        key = (e.sample_rate, e.noise_multiplier, e.poisson_sampling)
        segments[key] = segments.get(key, 0) + e.steps
    last = events[-1]
    return {
        "client_id": last.client_id,
        "mechanism": last.mechanism,
        "accountant": last.accountant,
        "delta": last.delta,
        "max_grad_norm": sorted({e.max_grad_norm for e in events}),
        "segments": [
            {"sample_rate": q, "noise_multiplier": sigma, "poisson_sampling": poisson, "steps": n}
            for (q, sigma, poisson), n in segments.items()
        ],
        "total_steps": last.cumulative_steps,
        "rounds": len(events),
        "epsilon": epsilon,
        "epsilon_budget": last.epsilon_budget,
        "last_event_digest": last.digest_hex(),
    }
