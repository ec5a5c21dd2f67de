"""The one accountant of the dp package: a hash-linked chain of privacy events.

Sample-level DP (:class:`dp.DPTrainer`, one chain per client) and client-level DP
(:class:`dp.ClientLevelAccountant`, one chain per federation) both account through an
:class:`EventChain`. The chain holds the events released so far, refuses an event that
does not extend it (wrong owner, accountant or delta, a round that does not increase, a
broken hash link, cumulative steps or epsilon that are not what the events give), and
composes every event's steps with the chain's accountant. The events are what a client
commits on the ledger; the auditor recomputes the same epsilon from them alone
(:func:`dp.recompute_epsilon`, and :mod:`dp._independent` without Opacus).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dp._accounting import Segment, _check_accountant, compose_epsilon
from dp._errors import EventChainError, InvalidDPConfigError
from dp._events import (
    GENESIS_DIGEST,
    PrivacyEvent,
    events_to_segments,
    recompute_epsilon,
)

__all__ = ["EventChain"]

#: Relative tolerance when a restored or appended event's claimed epsilon is recomputed.
_EPSILON_RTOL = 1e-9


class EventChain:
    """Privacy events of one accounted party (a client, or a federation), oldest first.

    ``owner`` is the events' ``client_id``; ``delta`` and ``accountant`` are the chain's
    and every event must carry them. :meth:`projected_epsilon` composes the chain with
    more segments (the budget check before a round); :meth:`record` appends the event of a
    released round; :meth:`to_state` and :meth:`restore` persist the chain, verified.
    """

    def __init__(self, *, owner: str, delta: float, accountant: str) -> None:
        if not isinstance(owner, str) or not owner:
            raise InvalidDPConfigError(f"owner must be a non-empty str, got {owner!r}")
        if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
            raise InvalidDPConfigError(f"delta must be in (0, 1), got {delta!r}")
        _check_accountant(accountant)
        self.owner = owner
        self.delta = float(delta)
        self.accountant = accountant
        self._events: list[PrivacyEvent] = []

    # ------------------------------------------------------------------ reading

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every recorded event, oldest first."""
        return tuple(self._events)

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon of the chain (0.0 when empty)."""
        return self._events[-1].cumulative_epsilon if self._events else 0.0

    @property
    def cumulative_steps(self) -> int:
        """Steps accounted over the whole chain."""
        return self._events[-1].cumulative_steps if self._events else 0

    @property
    def head(self) -> str:
        """The digest the next event links to (the genesis digest when empty)."""
        return self._events[-1].digest_hex() if self._events else GENESIS_DIGEST

    def __len__(self) -> int:
        return len(self._events)

    def segments(self) -> list[Segment]:
        """The accounting history of the chain."""
        return events_to_segments(self._events)

    def projected_epsilon(self, *extra: Segment) -> float:
        """Cumulative epsilon of the chain followed by ``extra`` segments."""
        return compose_epsilon(
            [*self.segments(), *extra], delta=self.delta, accountant=self.accountant
        )

    # ------------------------------------------------------------------ extending

    def require_next_round(self, round_id: int) -> None:
        """Raise :class:`InvalidDPConfigError` unless ``round_id`` follows the chain."""
        if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0:
            raise InvalidDPConfigError(f"round_id must be an int >= 0, got {round_id!r}")
        if self._events and round_id <= self._events[-1].round_id:
            raise InvalidDPConfigError(
                f"round_id must increase: got {round_id} after {self._events[-1].round_id}"
            )

    def record(
        self,
        *,
        round_id: int,
        mechanism: str,
        segment: Segment,
        max_grad_norm: float,
        epsilon_budget: float | None,
        note: str = "",
    ) -> PrivacyEvent:
        """Account ``segment`` as round ``round_id``: append its event and return it.

        The event's cumulative steps and epsilon are the chain's composed with ``segment``;
        it links to the chain's head. A round that does not follow the chain is refused
        with the chain unchanged.
        """
        self.require_next_round(round_id)
        event = PrivacyEvent(
            client_id=self.owner,
            round_id=round_id,
            mechanism=mechanism,
            sample_rate=segment.sample_rate,
            noise_multiplier=segment.noise_multiplier,
            steps=segment.steps,
            max_grad_norm=max_grad_norm,
            delta=self.delta,
            accountant=self.accountant,
            poisson_sampling=segment.poisson_sampling,
            cumulative_steps=self.cumulative_steps + segment.steps,
            cumulative_epsilon=self.projected_epsilon(segment),
            epsilon_budget=epsilon_budget,
            previous_digest=self.head,
            note=note,
        )
        self._events.append(event)
        return event

    def _check_extends(self, event: PrivacyEvent, chain: Sequence[PrivacyEvent]) -> None:
        previous = chain[-1] if chain else None
        if event.client_id != self.owner:
            raise EventChainError(
                f"event of {event.client_id!r} does not belong to the chain of {self.owner!r}"
            )
        if event.accountant != self.accountant or event.delta != self.delta:
            raise EventChainError(
                f"event accounted with {event.accountant} at delta {event.delta}, the chain "
                f"with {self.accountant} at delta {self.delta}"
            )
        if previous is not None and event.round_id <= previous.round_id:
            raise EventChainError(
                f"round_id must increase: got {event.round_id} after {previous.round_id}"
            )
        link = previous.digest_hex() if previous is not None else GENESIS_DIGEST
        if event.previous_digest != link:
            raise EventChainError(
                f"event of round {event.round_id} does not link to the chain's head"
            )
        steps = (previous.cumulative_steps if previous is not None else 0) + event.steps
        if event.cumulative_steps != steps:
            raise EventChainError(
                f"event of round {event.round_id} claims {event.cumulative_steps} cumulative "
                f"steps, the chain gives {steps}"
            )

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> list[str]:
        """The chain as canonical JSON strings (for a checkpoint)."""
        return [e.canonical_bytes().decode("ascii") for e in self._events]

    def restore(self, raw: Sequence[str]) -> None:
        """Replace the chain with ``raw`` (from :meth:`to_state`) after verifying it.

        Every event must extend the one before it (owner, accountant, delta, rounds, links,
        steps) and the last event's epsilon must be what the events give, else
        :class:`EventChainError`; on any error the current chain is kept.
        """
        events = [PrivacyEvent.from_bytes(item.encode("ascii")) for item in raw]
        for i, event in enumerate(events):
            self._check_extends(event, events[:i])
        if events:
            recomputed = recompute_epsilon(events)
            if not math.isclose(recomputed, events[-1].cumulative_epsilon, rel_tol=_EPSILON_RTOL):
                raise EventChainError(
                    f"state claims epsilon {events[-1].cumulative_epsilon}, "
                    f"its events give {recomputed}"
                )
        self._events = events
