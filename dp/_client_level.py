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
  If up to ``c`` of them collude with the server (``max_colluding``), their shares are
  known and subtracted: the round is accounted at ``sigma * sqrt((m - c) / n)``.

Budgets hold in the worst case the protocol allows: with distributed noise the budget
check before a round (and, in target mode, the calibration) assumes that only
``min_survivors`` of the ``n`` selected survive and ``c`` collude, i.e. the effective
multiplier ``sigma * sqrt((min_survivors - c) / n)``; the releasing party must refuse to
release a sum of fewer than ``min_survivors`` updates. After the round, the accountant
records what actually happened, which is never worse than the checked case.

Sampling: amplification assumes each client is selected independently with probability
``client_sample_rate`` each round (Poisson sampling of clients; rate 1.0 = everyone, every
round). A runner that picks a fixed-size subset must set ``poisson_sampling=False``; the
round is then accounted without amplification (see :mod:`dp._accounting`).

Noise comes from a ChaCha20 keystream keyed from the OS entropy pool
(:class:`dp.SecureGaussian`); a numpy generator is accepted only for seeded tests. Not a
defence against floating-point side channels (Mironov 2012).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dp._accounting import Segment, _check_accountant, calibrate_noise
from dp._chain import EventChain
from dp._config import DPConfig
from dp._csprng import SecureGaussian
from dp._errors import (
    InvalidDPConfigError,
    PrivacyBudgetExceededError,
    SecureAggregationRequiredError,
)
from dp._events import PrivacyEvent

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
    sampler: SecureGaussian | None = None,
) -> np.ndarray:
    """``vector`` plus Gaussian noise of std :func:`noise_std` per coordinate (float64).

    Central noise: call once on the sum with ``n_shares=1``. Distributed noise: each of
    the ``n`` selected clients calls it on its clipped update with ``n_shares=n``.
    By default the noise comes from a freshly keyed :class:`SecureGaussian` (ChaCha20);
    ``sampler`` passes one explicitly, and ``rng`` (a seeded numpy generator) is for
    reproducible tests only.
    """
    std = noise_std(noise_multiplier=noise_multiplier, clip_norm=clip_norm, n_shares=n_shares)
    values = np.asarray(vector, dtype=np.float64)
    if rng is not None and sampler is not None:
        raise InvalidDPConfigError("pass at most one of rng (tests) and sampler")
    if rng is not None:
        noise = rng.normal(0.0, std, size=values.shape)
    else:
        noise = (sampler if sampler is not None else SecureGaussian()).normal(std, values.shape)
    noised: np.ndarray = values + noise
    return noised


def effective_noise_multiplier(
    *,
    noise_multiplier: float,
    selected: int,
    survivors: int,
    distributed: bool,
    colluding: int = 0,
) -> float:
    """Noise std of the released sum divided by its sensitivity ``S``, as seen by a server
    colluding with ``colluding`` of the survivors.

    Central: ``sigma``. Distributed: ``sigma * sqrt((survivors - colluding) / selected)``;
    raises :class:`InvalidDPConfigError` when no honest survivor's noise is left.
    """
    _check_positive("noise_multiplier", noise_multiplier)
    _check_count("selected", selected, 1)
    _check_count("survivors", survivors, 1)
    _check_count("colluding", colluding, 0)
    if survivors > selected:
        raise InvalidDPConfigError(f"survivors ({survivors}) must not exceed selected ({selected})")
    if not distributed:
        return float(noise_multiplier)
    honest = survivors - colluding
    if honest < 1:
        raise InvalidDPConfigError(
            f"{colluding} colluding of {survivors} survivors leave no honest noise share"
        )
    return float(noise_multiplier) * math.sqrt(honest / selected)


class ClientLevelAccountant:
    """Federation-level accountant of DP-FedAvg: one event per released aggregate.

    Every round is accounted with the client sampling rate and the noise multiplier that
    actually protected the released sum (see :func:`effective_noise_multiplier`). Call
    :meth:`check_budget` before a round: it projects the round at the worst case the
    protocol allows (``min_survivors`` of ``selected`` survive, ``max_colluding`` collude,
    with distributed noise); then :meth:`record_round` after the sum is released, which
    always records what happened.

    ``selected`` is the number of clients asked each round (the distributed noise is split
    into that many shares); ``min_survivors`` defaults to 1 (any sum is released) and
    ``max_colluding`` to 0. They matter only with ``distributed=True``.
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
        distributed: bool = False,
        selected: int = 1,
        min_survivors: int = 1,
        max_colluding: int = 0,
    ) -> None:
        _check_positive("noise_multiplier", noise_multiplier)
        _check_positive("clip_norm", clip_norm)
        if not (isinstance(client_sample_rate, int | float) and 0.0 < client_sample_rate <= 1.0):
            raise InvalidDPConfigError(
                f"client_sample_rate must be in (0, 1], got {client_sample_rate!r}"
            )
        if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
            raise InvalidDPConfigError(f"delta must be in (0, 1), got {delta!r}")
        _check_accountant(accountant)
        if epsilon_budget is not None:
            _check_positive("epsilon_budget", epsilon_budget)
        if not isinstance(distributed, bool):
            raise InvalidDPConfigError(f"distributed must be a bool, got {distributed!r}")
        _check_count("selected", selected, 1)
        _check_count("min_survivors", min_survivors, 1)
        _check_count("max_colluding", max_colluding, 0)
        if min_survivors > selected:
            raise InvalidDPConfigError(
                f"min_survivors ({min_survivors}) must not exceed selected ({selected})"
            )
        if distributed and max_colluding >= min_survivors:
            raise InvalidDPConfigError(
                f"max_colluding ({max_colluding}) must be below min_survivors "
                f"({min_survivors}): otherwise no honest noise share is guaranteed"
            )
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)
        self.client_sample_rate = float(client_sample_rate)
        self.delta = float(delta)
        self.accountant = accountant
        self.poisson_sampling = poisson_sampling
        self.epsilon_budget = None if epsilon_budget is None else float(epsilon_budget)
        self.federation_id = federation_id
        self.distributed = distributed
        self.selected = selected
        self.min_survivors = min_survivors
        self.max_colluding = max_colluding
        self._chain = EventChain(owner=federation_id, delta=delta, accountant=accountant)

    @property
    def worst_case_noise_multiplier(self) -> float:
        """The effective multiplier of a round in the worst case the protocol allows."""
        return effective_noise_multiplier(
            noise_multiplier=self.noise_multiplier,
            selected=self.selected,
            survivors=self.min_survivors,
            distributed=self.distributed,
            colluding=self.max_colluding,
        )

    @classmethod
    def from_config(
        cls,
        config: DPConfig,
        *,
        n_clients: int,
        client_sample_rate: float,
        planned_rounds: int,
        federation_id: str = "federation",
        distributed: bool = False,
        selected: int | None = None,
        min_survivors: int = 1,
        max_colluding: int = 0,
    ) -> ClientLevelAccountant:
        """Build from a :class:`DPConfig` (``max_grad_norm`` is the update clip norm S).

        Checks ``delta < 1/n_clients``; in target mode calibrates sigma once so that
        ``planned_rounds`` rounds at ``client_sample_rate`` stay within the target even if
        every round ends at the worst case (``min_survivors`` survive, ``max_colluding``
        collude). ``selected`` defaults to ``round(client_sample_rate * n_clients)``.
        """
        config.validate_for(n_clients)
        _check_count("planned_rounds", planned_rounds, 1)
        if selected is None:
            selected = max(1, round(client_sample_rate * n_clients))
        shape = dict(
            distributed=distributed,
            selected=selected,
            min_survivors=min_survivors,
            max_colluding=max_colluding,
        )
        if config.noise_multiplier is not None:
            sigma = float(config.noise_multiplier)
        else:
            target = config.target_epsilon
            if target is None:  # unreachable: DPConfig enforces exactly one
                raise InvalidDPConfigError("target_epsilon is missing")
            worst_sigma = calibrate_noise(
                target_epsilon=target,
                delta=config.delta,
                sample_rate=client_sample_rate,
                steps=planned_rounds,
                accountant=config.accountant,
                poisson_sampling=config.poisson_sampling,
            )
            # sigma such that the worst-case effective multiplier is the calibrated one.
            unit = effective_noise_multiplier(
                noise_multiplier=1.0,
                selected=selected,
                survivors=min_survivors,
                distributed=distributed,
                colluding=max_colluding,
            )
            sigma = worst_sigma / unit
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
            **shape,  # type: ignore[arg-type]
        )

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every recorded round, oldest first (a hash-linked chain)."""
        return self._chain.events

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon of all released aggregates so far."""
        return self._chain.epsilon

    def _epsilon_with(self, noise_multiplier: float, rounds: int) -> float:
        extra = Segment(
            sample_rate=self.client_sample_rate,
            noise_multiplier=noise_multiplier,
            steps=rounds,
            poisson_sampling=self.poisson_sampling,
        )
        return self._chain.projected_epsilon(extra)

    def projected_epsilon(self, rounds: int = 1) -> float:
        """Cumulative epsilon after ``rounds`` more rounds at the worst case the protocol
        allows (:attr:`worst_case_noise_multiplier`; the planned sigma with central noise)."""
        _check_count("rounds", rounds, 0)
        return self._epsilon_with(self.worst_case_noise_multiplier, rounds)

    def check_budget(self, rounds: int = 1) -> float:
        """Raise :class:`PrivacyBudgetExceededError` if ``rounds`` more rounds could pass the
        budget in the worst case (:meth:`projected_epsilon`); return that epsilon otherwise."""
        projected = self.projected_epsilon(rounds)
        if self.epsilon_budget is not None and projected > self.epsilon_budget:
            raise PrivacyBudgetExceededError(
                f"{self.federation_id}: {rounds} more round(s) could bring epsilon from "
                f"{self.epsilon:.4g} to {projected:.4g} (worst case: {self.min_survivors} of "
                f"{self.selected} survive, {self.max_colluding} collude), above the budget "
                f"{self.epsilon_budget:.4g}"
            )
        return projected

    def record_round(
        self, *, round_id: int, selected: int, survivors: int, distributed: bool
    ) -> PrivacyEvent:
        """Account one released aggregate and return its privacy event.

        ``selected`` clients were asked to contribute, ``survivors`` of them made it into
        the released sum; with ``distributed`` noise the round is accounted at
        ``sigma * sqrt((survivors - max_colluding) / selected)``. Fewer survivors than
        ``min_survivors`` (the releasing party should have refused) are still recorded;
        with no honest survivor left, :class:`InvalidDPConfigError` is raised (no finite
        epsilon describes that release).
        """
        self._chain.require_next_round(round_id)
        colluding = self.max_colluding if distributed else 0
        sigma = effective_noise_multiplier(
            noise_multiplier=self.noise_multiplier,
            selected=selected,
            survivors=survivors,
            distributed=distributed,
            colluding=colluding,
        )
        return self._chain.record(
            round_id=round_id,
            mechanism="dp-fedavg-client",
            segment=Segment(
                sample_rate=self.client_sample_rate,
                noise_multiplier=sigma,
                steps=1,
                poisson_sampling=self.poisson_sampling,
            ),
            max_grad_norm=self.clip_norm,
            epsilon_budget=self.epsilon_budget,
            note=(
                f"selected={selected} survivors={survivors} "
                f"distributed={str(distributed).lower()} colluding={colluding} "
                f"planned_sigma={self.noise_multiplier!r}"
            ),
        )

    def state_dict(self) -> dict[str, Any]:
        """The accountant state (its event chain and planned sigma)."""
        return {
            "format": _STATE_FORMAT,
            "federation_id": self.federation_id,
            "noise_multiplier": repr(self.noise_multiplier),
            "events": self._chain.to_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the event chain after verifying it and recomputing its epsilon."""
        if state.get("format") != _STATE_FORMAT:
            raise InvalidDPConfigError(f"state format must be {_STATE_FORMAT!r}")
        if state.get("federation_id") != self.federation_id:
            raise InvalidDPConfigError("state belongs to another federation id")
        if float(state["noise_multiplier"]) != self.noise_multiplier:
            raise InvalidDPConfigError("state noise_multiplier differs from this accountant's")
        self._chain.restore(state["events"])
