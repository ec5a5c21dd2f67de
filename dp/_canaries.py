"""White-box gradient canaries for auditing one client's DP-SGD run (one-run auditing).

Each of ``m`` canaries is a fixed gradient of norm ``C`` (the clip norm): a Dirac vector
``C * e_j`` on its own coordinate when ``m`` does not exceed the model's parameter count,
otherwise a random unit direction scaled to ``C``. Each canary is included with
probability 1/2; the bits are drawn from the OS CSPRNG (``secrets``) and never leave this
object. An included canary behaves like one more record: at every noisy step it is
Poisson-sampled at the run's sample rate and, when sampled, its gradient is added to the
clipped-gradient sum before Opacus adds noise. DP-SGD's guarantee covers each canary like
any record (the accounting depends on the sample rate, the noise multiplier and the steps,
not on the record count), so the audit tests the run's claim as it stands.

Scoring (white-box: the auditor sees each round's update): canary ``i`` scores
``-<sum of the client's updates, u_i>``, the sum over steps of the parameter change along
its direction, signed so that an included canary (which pushes the parameters along
``-u_i``) scores high. :meth:`GradientCanaries.audit` then runs
:func:`dp._empirical.audit_one_run`.

Client-level DP-FedAvg (:class:`UpdateCanaries`): canary *clients* (Andrew et al. 2023,
"One-shot empirical privacy estimation for federated learning"), each with a fixed update
of norm ``S`` (the update clip norm) along its own direction, included with probability
1/2 and then present in every released aggregate. They score ``+<released update, u_i>``
summed over rounds (ranking by it equals ranking by the cosine with the final model
change used by Andrew et al.).

Canaries change the trained model: every released update carries their gradients, which
costs accuracy (worst with Dirac canaries on few parameters). Use them for audit runs.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np
import torch
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

from dp._empirical import InvalidAuditError, OneRunAudit, audit_one_run

__all__ = ["GradientCanaries", "UpdateCanaries"]

#: Largest ``count * dimension`` stored for random-direction canaries (float64: 400 MB).
MAX_DIRECTION_ENTRIES = 50_000_000


class GradientCanaries:
    """``count`` gradient canaries for one client, its secret in/out bits and their scores.

    ``sample_rate`` and ``max_grad_norm`` must be the client's own (the trainer checks).
    ``seed`` makes the bits, directions and per-step sampling reproducible: tests only; by
    default everything is drawn from ``secrets``.
    """

    def __init__(
        self,
        *,
        count: int,
        dimension: int,
        max_grad_norm: float,
        sample_rate: float,
        seed: int | None = None,
    ) -> None:
        for name, value in (("count", count), ("dimension", dimension)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidAuditError(f"{name} must be an int >= 1, got {value!r}")
        for name, number in (("max_grad_norm", max_grad_norm), ("sample_rate", sample_rate)):
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise InvalidAuditError(f"{name} must be a number, got {number!r}")
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise InvalidAuditError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        if not 0 < sample_rate <= 1:
            raise InvalidAuditError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidAuditError(f"seed must be an int or None, got {seed!r}")
        self.count = count
        self.dimension = dimension
        self.max_grad_norm = float(max_grad_norm)
        self.sample_rate = float(sample_rate)
        self.dirac = count <= dimension
        if not self.dirac and count * dimension > MAX_DIRECTION_ENTRIES:
            raise InvalidAuditError(
                f"count * dimension must be <= {MAX_DIRECTION_ENTRIES} for random-direction "
                f"canaries, got {count} * {dimension}"
            )
        setup_rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
        if seed is None:
            raw = np.frombuffer(secrets.token_bytes(count), dtype=np.uint8)
            self._included = (raw & 1).astype(bool)
        else:
            self._included = setup_rng.random(count) < 0.5
        self._coordinates: np.ndarray | None = None
        self._directions: np.ndarray | None = None
        if self.dirac:
            self._coordinates = setup_rng.choice(dimension, size=count, replace=False)
        else:
            directions = setup_rng.standard_normal((count, dimension))
            self._directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        self._step_rng = np.random.default_rng(
            secrets.randbits(128) if seed is None else setup_rng.integers(2**63)
        )
        self._scores = np.zeros(count, dtype=np.float64)
        self.steps_injected = 0

    @property
    def scores(self) -> np.ndarray:
        """Each canary's score so far (a read-only copy)."""
        out = self._scores.copy()
        out.flags.writeable = False
        return out

    def step_gradient(self) -> np.ndarray:
        """The canaries' summed gradient for one noisy step (flat, float64).

        Each included canary is Poisson-sampled at ``sample_rate``; a sampled one adds its
        gradient of norm ``max_grad_norm``.
        """
        sampled = self._included & (self._step_rng.random(self.count) < self.sample_rate)
        flat = np.zeros(self.dimension, dtype=np.float64)
        if self._coordinates is not None:
            flat[self._coordinates[sampled]] = self.max_grad_norm
        elif self._directions is not None:
            flat = self.max_grad_norm * self._directions[sampled].sum(axis=0)
        self.steps_injected += 1
        return flat

    def attach(self, optimizer: DPOptimizer) -> None:
        """Add :meth:`step_gradient` to the optimizer's clipped-gradient sum at every step.

        The hook runs right after Opacus stores the clipped sum in ``p.summed_grad`` and
        before it adds noise, so the canaries are noised like any record.
        """
        params = optimizer.params
        total = sum(p.numel() for p in params)
        if total != self.dimension:
            raise InvalidAuditError(
                f"the optimizer has {total} parameters, the canaries were made for {self.dimension}"
            )
        ghost = isinstance(optimizer, DPOptimizerFastGradientClipping)
        hook_name = "accumulate" if ghost else "clip_and_accumulate"
        accumulate = getattr(optimizer, hook_name)

        def accumulate_with_canaries(*args: Any, **kwargs: Any) -> Any:
            out = accumulate(*args, **kwargs)
            flat = self.step_gradient()
            offset = 0
            for p in params:
                summed = p.summed_grad
                n = p.numel()
                piece = torch.from_numpy(flat[offset : offset + n]).view_as(summed)
                summed.add_(piece.to(dtype=summed.dtype, device=summed.device))
                offset += n
            return out

        setattr(optimizer, hook_name, accumulate_with_canaries)

    def observe(self, update: np.ndarray) -> None:
        """Score one round's released update (parameters after minus before the round)."""
        vector = np.asarray(update, dtype=np.float64)
        if vector.shape != (self.dimension,):
            raise InvalidAuditError(
                f"update must have shape ({self.dimension},), got {vector.shape}"
            )
        if self._coordinates is not None:
            self._scores -= vector[self._coordinates]
        elif self._directions is not None:
            self._scores -= self._directions @ vector

    def audit(self, *, delta: float, confidence: float = 0.95) -> OneRunAudit:
        """The one-run lower bound on epsilon from the scores so far."""
        return audit_one_run(
            scores=self._scores, included=self._included, delta=delta, confidence=confidence
        )


class UpdateCanaries(GradientCanaries):
    """``count`` canary clients for client-level DP-FedAvg, with their secret in/out bits.

    Every round each included canary client contributes an update of norm ``clip_norm``
    along its direction to the sum that is noised and released (:meth:`round_sum`); it
    takes part in every round, which is what the accounting allows any client to do.
    """

    def __init__(
        self, *, count: int, dimension: int, clip_norm: float, seed: int | None = None
    ) -> None:
        super().__init__(
            count=count, dimension=dimension, max_grad_norm=clip_norm, sample_rate=1.0, seed=seed
        )

    def round_sum(self) -> np.ndarray:
        """The included canary clients' summed update for one round (flat, float64)."""
        return self.step_gradient()

    def observe(self, update: np.ndarray) -> None:
        """Score one released aggregate update: included canaries push it along ``+u_i``."""
        super().observe(-np.asarray(update, dtype=np.float64))
