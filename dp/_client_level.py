"""Client-level DP (DP-FedAvg, McMahan et al. 2018): clipping, noise and its accountant.

Guarantee: (epsilon, delta)-DP of the sequence of released aggregates under
add/remove-one-*client* adjacency (a client's whole data set). Each round, each selected
client's model update is clipped to L2 norm ``S`` (:func:`clip_update`); the aggregate is
the *uniform-weight sum* of the clipped updates of the surviving clients, whose
sensitivity is therefore ``S``; Gaussian noise of std ``sigma * S`` is added to that sum.
(Dividing the noisy sum by a public count afterwards is post-processing.) Weighting
clients by their record counts would change the sensitivity; the runner uses uniform
weights in client mode.

Two ways to add the noise:

* central (``distributed=False``): the party that reveals the sum adds ``N(0, sigma^2 S^2)``
  once; the effective noise multiplier is ``sigma`` whatever the dropouts.
* distributed (``distributed=True``): each of the ``n`` selected clients adds
  ``N(0, sigma^2 S^2 / n)`` to its own clipped update, so the sum of all ``n`` carries
  ``sigma * S``. This is only sound when the aggregator sees nothing but the sum (secure
  aggregation): a single noised update carries only ``sigma / sqrt(n)`` of noise. If only
  ``m`` of the ``n`` survive, the sum carries ``sigma * S * sqrt(m / n)``: the round is
  accounted with that effective multiplier, ``sigma * sqrt(m / n)``, not the planned one.

Sampling: amplification assumes each client is selected independently with probability
``client_sample_rate`` each round (Poisson sampling of clients; rate 1.0 = everyone, every
round). A runner that picks a fixed-size subset must set ``poisson_sampling=False``; the
round is then accounted without amplification (see :mod:`dp._accounting`).

Noise comes from numpy's PCG64 seeded from the OS entropy pool: adequate for research
runs, not a defence against floating-point side channels (Mironov 2012).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np

from dp._accounting import Segment, calibrate_noise, compose_epsilon
from dp._config import ACCOUNTANTS, DPConfig
from dp._errors import (
    InvalidDPConfigError,
    PrivacyBudgetExceededError,
    SecureAggregationRequiredError,
)
from dp._events import GENESIS_DIGEST, PrivacyEvent, recompute_epsilon

__all__ = [
    "SECURE_AGGREGATION_SCHEMES",
    "ClientLevelAccountant",
    "add_noise",
    "clip_update",
    "effective_noise_multiplier",
    "noise_std",
    "require_secure_aggregation",
]

#: Aggregation schemes under which the aggregator sees only the sum of client updates.
SECURE_AGGREGATION_SCHEMES: tuple[str, ...] = ("ckks", "masking")
_STATE_FORMAT = "secagg-fl/dp-client-level/v1"


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidDPConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidDPConfigError(f"{name} must be > 0 and finite, got {value!r}")


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidDPConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


def require_secure_aggregation(distributed: bool, scheme_name: str) -> None:
    """Refuse distributed DP noise unless ``scheme_name`` reveals only the sum.

    Raises :class:`SecureAggregationRequiredError` for ``distributed=True`` with any scheme
    outside :data:`SECURE_AGGREGATION_SCHEMES` (e.g. ``"plain"``).
    """
    if distributed and scheme_name not in SECURE_AGGREGATION_SCHEMES:
        raise SecureAggregationRequiredError(
            f"distributed DP noise needs secure aggregation (one of "
            f"{SECURE_AGGREGATION_SCHEMES}); with secagg={scheme_name!r} the aggregator sees "
            "each update with only 1/sqrt(n) of the noise"
        )


def clip_update(update: np.ndarray, *, clip_norm: float) -> np.ndarray:
    """Scale ``update`` to L2 norm at most ``clip_norm`` (float64 copy; input untouched)."""
    _check_positive("clip_norm", clip_norm)
    vector = np.asarray(update, dtype=np.float64)
    if vector.ndim != 1:
        raise InvalidDPConfigError(f"update must be a flat vector, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise InvalidDPConfigError("update contains NaN or inf")
    norm = float(np.linalg.norm(vector))
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return vector * factor


def noise_std(*, noise_multiplier: float, clip_norm: float, n_shares: int = 1) -> float:
    """Std of one noise share: ``sigma * S / sqrt(n_shares)`` (``n_shares=1``: central)."""
    _check_positive("noise_multiplier", noise_multiplier)
    _check_positive("clip_norm", clip_norm)
    _check_count("n_shares", n_shares, 1)
    return noise_multiplier * clip_norm / math.sqrt(n_shares)


def add_noise(
    vector: np.ndarray,
    *,
    noise_multiplier: float,
    clip_norm: float,
    n_shares: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``vector`` plus Gaussian noise of std :func:`noise_std` per coordinate (float64).

    Central noise: call once on the sum with ``n_shares=1``. Distributed noise: each of
    the ``n`` selected clients calls it on its clipped update with ``n_shares=n``.
    ``rng`` is for reproducible tests; by default a fresh OS-seeded generator is used.
    """
    std = noise_std(noise_multiplier=noise_multiplier, clip_norm=clip_norm, n_shares=n_shares)
    values = np.asarray(vector, dtype=np.float64)
    generator = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    noised: np.ndarray = values + generator.normal(0.0, std, size=values.shape)
    return noised


def effective_noise_multiplier(
    *, noise_multiplier: float, selected: int, survivors: int, distributed: bool
) -> float:
    """Noise std of the released sum divided by its sensitivity ``S``.

    Central: ``sigma``. Distributed: ``sigma * sqrt(survivors / selected)``.
    """
    _check_positive("noise_multiplier", noise_multiplier)
    _check_count("selected", selected, 1)
    _check_count("survivors", survivors, 1)
    if survivors > selected:
        raise InvalidDPConfigError(f"survivors ({survivors}) must not exceed selected ({selected})")
    if not distributed:
        return float(noise_multiplier)
    return float(noise_multiplier) * math.sqrt(survivors / selected)


class ClientLevelAccountant:
    """Federation-level accountant of DP-FedAvg: one event per released aggregate.

    Every round is accounted with the client sampling rate and the noise multiplier that
    actually protected the released sum (see :func:`effective_noise_multiplier`). Call
    :meth:`check_budget` before a round (planned noise, all survivors); then
    :meth:`record_round` after the sum is released, which always records what happened,
    even when dropouts pushed epsilon past the budget (later rounds are then refused).
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip_norm: float,
        client_sample_rate: float,
        delta: float,
        accountant: str = "rdp",
        poisson_sampling: bool = True,
        epsilon_budget: float | None = None,
        federation_id: str = "federation",
    ) -> None:
        _check_positive("noise_multiplier", noise_multiplier)
        _check_positive("clip_norm", clip_norm)
        if not (isinstance(client_sample_rate, int | float) and 0.0 < client_sample_rate <= 1.0):
            raise InvalidDPConfigError(
                f"client_sample_rate must be in (0, 1], got {client_sample_rate!r}"
            )
        if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
            raise InvalidDPConfigError(f"delta must be in (0, 1), got {delta!r}")
        if accountant not in ACCOUNTANTS:
            raise InvalidDPConfigError(
                f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}"
            )
        if epsilon_budget is not None:
            _check_positive("epsilon_budget", epsilon_budget)
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)
        self.client_sample_rate = float(client_sample_rate)
        self.delta = float(delta)
        self.accountant = accountant
        self.poisson_sampling = poisson_sampling
        self.epsilon_budget = None if epsilon_budget is None else float(epsilon_budget)
        self.federation_id = federation_id
        self._events: list[PrivacyEvent] = []

    @classmethod
    def from_config(
        cls,
        config: DPConfig,
        *,
        n_clients: int,
        client_sample_rate: float,
        planned_rounds: int,
        federation_id: str = "federation",
    ) -> ClientLevelAccountant:
        """Build from a :class:`DPConfig` (``max_grad_norm`` is the update clip norm S).

        Checks ``delta < 1/n_clients``; in target mode calibrates sigma once for
        ``planned_rounds`` rounds at ``client_sample_rate``.
        """
        config.validate_for(n_clients)
        _check_count("planned_rounds", planned_rounds, 1)
        if config.noise_multiplier is not None:
            sigma = float(config.noise_multiplier)
        else:
            target = config.target_epsilon
            if target is None:  # unreachable: DPConfig enforces exactly one
                raise InvalidDPConfigError("target_epsilon is missing")
            sigma = calibrate_noise(
                target_epsilon=target,
                delta=config.delta,
                sample_rate=client_sample_rate,
                steps=planned_rounds,
                accountant=config.accountant,
                poisson_sampling=config.poisson_sampling,
            )
        budget = None if math.isinf(config.budget) else config.budget
        return cls(
            noise_multiplier=sigma,
            clip_norm=config.max_grad_norm,
            client_sample_rate=client_sample_rate,
            delta=config.delta,
            accountant=config.accountant,
            poisson_sampling=config.poisson_sampling,
            epsilon_budget=budget,
            federation_id=federation_id,
        )

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every recorded round, oldest first (a hash-linked chain)."""
        return tuple(self._events)

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon of all released aggregates so far."""
        return self._events[-1].cumulative_epsilon if self._events else 0.0

    def _segments(self) -> list[Segment]:
        return [
            Segment(
                sample_rate=e.sample_rate,
                noise_multiplier=e.noise_multiplier,
                steps=e.steps,
                poisson_sampling=e.poisson_sampling,
            )
            for e in self._events
        ]

    def _epsilon_with(self, noise_multiplier: float, rounds: int) -> float:
        extra = Segment(
            sample_rate=self.client_sample_rate,
            noise_multiplier=noise_multiplier,
            steps=rounds,
            poisson_sampling=self.poisson_sampling,
        )
        return compose_epsilon(
            [*self._segments(), extra], delta=self.delta, accountant=self.accountant
        )

    def projected_epsilon(self, rounds: int = 1) -> float:
        """Cumulative epsilon after ``rounds`` more rounds at the planned noise."""
        _check_count("rounds", rounds, 0)
        return self._epsilon_with(self.noise_multiplier, rounds)

    def check_budget(self, rounds: int = 1) -> float:
        """Raise :class:`PrivacyBudgetExceededError` if ``rounds`` more planned rounds would
        pass the budget; return the projected epsilon otherwise."""
        projected = self.projected_epsilon(rounds)
        if self.epsilon_budget is not None and projected > self.epsilon_budget:
            raise PrivacyBudgetExceededError(
                f"{self.federation_id}: {rounds} more round(s) would bring epsilon from "
                f"{self.epsilon:.4g} to {projected:.4g}, above the budget {self.epsilon_budget:.4g}"
            )
        return projected

    def record_round(
        self, *, round_id: int, selected: int, survivors: int, distributed: bool
    ) -> PrivacyEvent:
        """Account one released aggregate and return its privacy event.

        ``selected`` clients were asked to contribute, ``survivors`` of them made it into
        the released sum; with ``distributed`` noise the round is accounted at
        ``sigma * sqrt(survivors / selected)``.
        """
        _check_count("round_id", round_id, 0)
        if self._events and round_id <= self._events[-1].round_id:
            raise InvalidDPConfigError(
                f"round_id must increase: got {round_id} after {self._events[-1].round_id}"
            )
        sigma = effective_noise_multiplier(
            noise_multiplier=self.noise_multiplier,
            selected=selected,
            survivors=survivors,
            distributed=distributed,
        )
        epsilon = self._epsilon_with(sigma, 1)
        event = PrivacyEvent(
            client_id=self.federation_id,
            round_id=round_id,
            mechanism="dp-fedavg-client",
            sample_rate=self.client_sample_rate,
            noise_multiplier=sigma,
            steps=1,
            max_grad_norm=self.clip_norm,
            delta=self.delta,
            accountant=self.accountant,
            poisson_sampling=self.poisson_sampling,
            cumulative_steps=len(self._events) + 1,
            cumulative_epsilon=epsilon,
            epsilon_budget=self.epsilon_budget,
            previous_digest=self._events[-1].digest_hex() if self._events else GENESIS_DIGEST,
            note=(
                f"selected={selected} survivors={survivors} "
                f"distributed={str(distributed).lower()} planned_sigma={self.noise_multiplier!r}"
            ),
        )
        self._events.append(event)
        return event

    def state_dict(self) -> dict[str, Any]:
        """The accountant state (its event chain and planned sigma)."""
        return {
            "format": _STATE_FORMAT,
            "federation_id": self.federation_id,
            "noise_multiplier": repr(self.noise_multiplier),
            "events": [e.canonical_bytes().decode("ascii") for e in self._events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the event chain after verifying it and recomputing its epsilon."""
        if state.get("format") != _STATE_FORMAT:
            raise InvalidDPConfigError(f"state format must be {_STATE_FORMAT!r}")
        if state.get("federation_id") != self.federation_id:
            raise InvalidDPConfigError("state belongs to another federation id")
        if float(state["noise_multiplier"]) != self.noise_multiplier:
            raise InvalidDPConfigError("state noise_multiplier differs from this accountant's")
        events = [PrivacyEvent.from_bytes(raw.encode("ascii")) for raw in state["events"]]
        if events and not math.isclose(
            recompute_epsilon(events), events[-1].cumulative_epsilon, rel_tol=1e-9
        ):
            raise InvalidDPConfigError("state's claimed epsilon differs from its events'")
        self._events = events
