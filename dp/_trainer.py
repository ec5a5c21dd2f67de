"""Sample-level DP-SGD for one client with Opacus, and the client's persistent accountant.

Privacy guarantee: record-level (epsilon, delta)-DP of everything the client releases (its
trained parameters or update), under add/remove-one-record adjacency within the client's
data set, composed over every step of every round. It assumes what the loop does: each
step samples every record independently with probability ``sample_rate = batch_size /
n_records`` (Opacus's ``DPDataLoader``, Poisson sampling), clips per-sample gradients to
``max_grad_norm`` and adds Gaussian noise of std ``noise_multiplier * max_grad_norm``.
Empty Poisson batches are still noisy optimizer steps and are accounted as steps. With
``poisson_sampling=False`` (explicit, and recorded in every event) the loop uses shuffled
fixed-size batches and the accounting claims no amplification by sampling (each step is an
unsampled Gaussian mechanism with replace-one sensitivity 2C).

A failed round (non-finite loss) releases nothing and is not accounted. The failure itself
is a data-dependent signal: treat it as a configuration error (e.g. learning rate), not as
a routine outcome to be reported per round.

Augmentation multiplicity (``augmult=K``, De et al. 2022): each sampled record is seen as
``K`` randomly augmented views (:func:`dp.augment_views`: crop and flip), the per-sample
gradients of its views are averaged, and only that average is clipped and noised. One
record still contributes one gradient of norm at most ``max_grad_norm`` per step, so the
sensitivity, the sample rate and hence the accounting are exactly those without
augmentation; only the compute grows K-fold.

The training loss reported in :class:`LocalTrainingResult` is computed on the raw data
without noise: it is a local diagnostic and is NOT covered by the DP guarantee.

Noise: unless a seeded ``generator`` is passed (tests) or Opacus's ``secure_mode`` is on,
the optimizer's per-step Gaussian noise is drawn from a ChaCha20 keystream
(:class:`dp.SecureGaussian`) instead of torch's Mersenne twister, whose state an attacker
who sees enough outputs can reconstruct. Poisson sampling still uses torch's generator
(seeded from the OS by the runner): a predictable batch selection weakens the
amplification argument, not the Gaussian noise itself.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dp._accounting import Segment, calibrate_noise
from dp._augment import augment_views
from dp._canaries import GradientCanaries
from dp._chain import EventChain
from dp._config import GRAD_SAMPLE_MODES, DPConfig
from dp._csprng import SecureGaussian
from dp._errors import (
    DPError,
    InvalidDPConfigError,
    NonFiniteLossError,
    PrivacyBudgetExceededError,
    SecureModeUnavailableError,
    UnsupportedModelError,
)
from dp._events import PrivacyEvent

__all__ = [
    "GRAD_SAMPLE_MODES",
    "LocalTrainingResult",
    "SampleLevelDPClient",
    "average_views",
    "prepare_model",
]

_OPTIMIZERS = ("sgd", "adam")
_STATE_FORMAT = "secagg-fl/dp-client/v1"


def prepare_model(model: nn.Module, *, fix: bool = False) -> nn.Module:
    """Return a model Opacus can train with per-sample gradients, or raise.

    With ``fix=True`` unsupported layers are replaced (``ModuleValidator.fix``: BatchNorm
    becomes GroupNorm) and the fixed copy is returned; call this once on the *global* model
    before the federation starts so every client and the aggregator share the same layout.
    With ``fix=False`` an unsupported model raises :class:`UnsupportedModelError`.
    """
    if fix:
        model = ModuleValidator.fix(model)
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        reasons = "; ".join(str(e) for e in errors)
        raise UnsupportedModelError(
            f"model cannot be trained with per-sample DP-SGD: {reasons} "
            "(use prepare_model(model, fix=True) to replace BatchNorm with GroupNorm)"
        )
    return model


def _flat_parameters(model: nn.Module) -> np.ndarray:
    vector = torch.nn.utils.parameters_to_vector(model.parameters())
    out: np.ndarray = vector.detach().cpu().to(torch.float64).numpy().copy()
    out.flags.writeable = False
    return out


def use_secure_noise(optimizer: Any, sampler: SecureGaussian) -> None:
    """Make an Opacus ``DPOptimizer`` draw its per-step noise from ``sampler``.

    Replaces the instance's ``add_noise`` (Opacus 1.5-1.6: ``DPOptimizer`` and the ghost
    clipping optimizer share its contract): noise of std ``noise_multiplier *
    max_grad_norm`` (the adjusted multiplier under adaptive clipping) is added to each
    parameter's clipped sum, exactly as Opacus does, but the values come from ChaCha20.
    """
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    def add_noise() -> None:
        multiplier = getattr(optimizer, "_adjusted_noise_multiplier", optimizer.noise_multiplier)
        std = float(multiplier) * float(optimizer.max_grad_norm)
        for p in optimizer.params:
            _check_processed_flag(p.summed_grad)
            reference = p.summed_grad
            values = sampler.normal(std, tuple(reference.shape))
            noise = torch.from_numpy(values).to(device=reference.device, dtype=reference.dtype)
            p.grad = (reference + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = add_noise


def average_views(params: Any, *, records: int, views: int) -> None:
    """Average each parameter's per-sample gradients over the views of each record.

    ``p.grad_sample`` (Opacus's per-sample gradients, one row per forward row) holds
    ``records * views`` rows, each record's views consecutive; it is replaced by the
    ``records`` means, so the optimizer then clips, sums and noises one gradient per
    record: the sensitivity the accounting assumes. Raises :class:`DPError` when a
    parameter's per-sample gradients do not have that many rows.
    """
    for p in params:
        grad_sample = getattr(p, "grad_sample", None)
        if grad_sample is None:
            continue
        if isinstance(grad_sample, list):
            grad_sample = torch.cat(grad_sample, dim=0)
        if grad_sample.shape[0] != records * views:
            raise DPError(
                f"per-sample gradients have {grad_sample.shape[0]} rows, expected "
                f"{records} records x {views} views"
            )
        p.grad_sample = grad_sample.reshape(records, views, *grad_sample.shape[1:]).mean(dim=1)


@dataclass(frozen=True, kw_only=True)
class LocalTrainingResult:
    """Outcome of one DP round of one client.

    ``parameters`` is the trained model's parameters and ``update`` their difference from
    the incoming parameters, both flat float64 vectors in ``model.parameters()`` order
    (buffers are not included). ``steps`` counts noisy optimizer steps (``empty_batches``
    of them had no record); ``mean_loss`` is the mean training loss over non-empty batches
    (NOT differentially private: keep it local). ``event`` is the round's privacy event.
    """

    parameters: np.ndarray
    update: np.ndarray
    steps: int
    empty_batches: int
    mean_loss: float
    event: PrivacyEvent


class SampleLevelDPClient:
    """One client's DP-SGD trainer and its accountant, which persists across rounds.

    The accountant is the client's chain of :class:`PrivacyEvent` objects; the cumulative
    epsilon composes every step of every round. Save and restore it with
    :meth:`state_dict` / :meth:`load_state_dict`; each round may use a fresh model copy
    and a fresh Opacus engine while the accountant carries over.

    ``grad_sample_mode`` picks Opacus's per-sample gradient engine; the default, ghost
    clipping, was the fastest correct mode for the MLPs and CNN in ``benchmarks/bench_dp.py``.

    ``augmult`` (0: off) is augmentation multiplicity: with ``augmult=K >= 1`` every sampled
    image is replaced by ``K`` random crop-and-flip views (4-d image data only) whose
    per-sample gradients are averaged before clipping (:func:`average_views`); privacy
    accounting is unchanged. Averaging needs materialised per-sample gradients, so with
    ``K > 1`` ghost clipping is replaced by Opacus's ``hooks`` engine (same clipping, same
    noise: only the way per-sample gradients are computed differs).

    In target-epsilon mode sigma is calibrated once, at construction, for
    ``planned_rounds * steps_per_round`` steps; the budget (``epsilon_budget`` or else the
    target) then refuses any round that would exceed it.
    """

    def __init__(
        self,
        *,
        client_id: str,
        config: DPConfig,
        n_records: int,
        batch_size: int,
        planned_rounds: int,
        steps_per_round: int,
        grad_sample_mode: str = "ghost",
        augmult: int = 0,
    ) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise InvalidDPConfigError(f"client_id must be a non-empty str, got {client_id!r}")
        if not isinstance(config, DPConfig):
            raise InvalidDPConfigError(f"config must be a DPConfig, got {type(config).__name__}")
        config.validate_for(n_records)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise InvalidDPConfigError(f"batch_size must be an int, got {batch_size!r}")
        if not 1 <= batch_size <= n_records:
            raise InvalidDPConfigError(
                f"batch_size must be in [1, n_records={n_records}], got {batch_size}"
            )
        counts = (("planned_rounds", planned_rounds), ("steps_per_round", steps_per_round))
        for name, value in counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidDPConfigError(f"{name} must be an int >= 1, got {value!r}")
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise InvalidDPConfigError(
                f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}"
            )
        if isinstance(augmult, bool) or not isinstance(augmult, int) or augmult < 0:
            raise InvalidDPConfigError(f"augmult must be an int >= 0, got {augmult!r}")
        if config.secure_mode:
            try:
                import torchcsprng  # noqa: F401
            except ImportError as exc:
                raise SecureModeUnavailableError(
                    "secure_mode=True needs the torchcsprng package, which is not installed"
                ) from exc
        self.client_id = client_id
        self.config = config
        self.n_records = n_records
        self.batch_size = batch_size
        self.planned_rounds = planned_rounds
        self.steps_per_round = steps_per_round
        self.grad_sample_mode = grad_sample_mode
        self.augmult = augmult
        self.sample_rate = batch_size / n_records
        if config.noise_multiplier is not None:
            self.noise_multiplier = float(config.noise_multiplier)
        else:
            target = config.target_epsilon
            if target is None:  # unreachable: DPConfig enforces exactly one
                raise InvalidDPConfigError("target_epsilon is missing")
            self.noise_multiplier = calibrate_noise(
                target_epsilon=target,
                delta=config.delta,
                sample_rate=self.sample_rate,
                steps=planned_rounds * steps_per_round,
                accountant=config.accountant,
                poisson_sampling=config.poisson_sampling,
            )
        self._chain = EventChain(owner=client_id, delta=config.delta, accountant=config.accountant)

    # ----------------------------------------------------------------- accounting

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every privacy event of this client, oldest first (a hash-linked chain)."""
        return self._chain.events

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon over every round so far (0.0 before the first round)."""
        return self._chain.epsilon

    @property
    def total_steps(self) -> int:
        """Noisy optimizer steps taken over all rounds."""
        return self._chain.cumulative_steps

    def _segment(self, steps: int) -> Segment:
        return Segment(
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            steps=steps,
            poisson_sampling=self.config.poisson_sampling,
        )

    def projected_epsilon(self, steps: int) -> float:
        """Cumulative epsilon if ``steps`` more steps were taken now."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise InvalidDPConfigError(f"steps must be an int >= 0, got {steps!r}")
        if steps == 0:
            return self._chain.projected_epsilon()
        return self._chain.projected_epsilon(self._segment(steps))

    def steps_for(self, *, local_steps: int | None, local_epochs: int | None) -> int:
        """Steps of a round: ``local_steps``, or ``round(local_epochs / sample_rate)``."""
        if (local_steps is None) == (local_epochs is None):
            raise InvalidDPConfigError("exactly one of local_steps and local_epochs must be set")
        value = local_steps if local_steps is not None else local_epochs
        name = "local_steps" if local_steps is not None else "local_epochs"
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidDPConfigError(f"{name} must be an int >= 1, got {value!r}")
        if local_steps is not None:
            return local_steps
        return max(1, round(value / self.sample_rate))

    def check_budget(self, steps: int) -> float:
        """Raise :class:`PrivacyBudgetExceededError` if ``steps`` more would pass the budget.

        Returns the projected cumulative epsilon otherwise.
        """
        projected = self.projected_epsilon(steps)
        if projected > self.config.budget:
            raise PrivacyBudgetExceededError(
                f"client {self.client_id}: {steps} more steps would bring epsilon from "
                f"{self.epsilon:.4g} to {projected:.4g}, above its budget {self.config.budget:.4g}"
            )
        return projected

    # ----------------------------------------------------------------- training

    def train_round(
        self,
        *,
        model: nn.Module,
        dataset: TensorDataset,
        round_id: int,
        local_steps: int | None = None,
        local_epochs: int | None = None,
        lr: float,
        optimizer: str = "sgd",
        device: torch.device | str = "cpu",
        criterion: nn.Module | None = None,
        generator: torch.Generator | None = None,
        canaries: GradientCanaries | None = None,
    ) -> LocalTrainingResult:
        """Train a private copy of ``model`` for one round and account it.

        The budget is checked before any training; a refused or failed round (non-finite
        loss, unsupported model) leaves the accountant unchanged and releases nothing. The
        caller's ``model`` is not modified. ``generator`` seeds Poisson sampling and noise
        (tests only; refused in ``secure_mode``). ``canaries`` (for an empirical audit, see
        :mod:`dp._canaries`) are added to every step's clipped-gradient sum before noise and
        score the round's update; they must be made for this client's sample rate and clip.
        """
        self._chain.require_next_round(round_id)
        if len(dataset) != self.n_records:
            raise InvalidDPConfigError(
                f"dataset has {len(dataset)} records, the client was set up for {self.n_records}"
            )
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise InvalidDPConfigError(f"lr must be > 0, got {lr!r}")
        if optimizer not in _OPTIMIZERS:
            raise InvalidDPConfigError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
        if generator is not None and self.config.secure_mode:
            raise InvalidDPConfigError("a seeded generator is not allowed in secure_mode")
        if canaries is not None and (
            canaries.sample_rate != self.sample_rate
            or canaries.max_grad_norm != self.config.max_grad_norm
        ):
            raise InvalidDPConfigError(
                "canaries must use the client's sample rate and max_grad_norm "
                f"({self.sample_rate}, {self.config.max_grad_norm}), got "
                f"({canaries.sample_rate}, {canaries.max_grad_norm})"
            )
        if self.augmult and dataset.tensors[0].dim() != 4:
            raise InvalidDPConfigError(
                f"augmult={self.augmult} needs image data (N, C, H, W), got features of shape "
                f"{tuple(dataset.tensors[0].shape)}"
            )
        steps = self.steps_for(local_steps=local_steps, local_epochs=local_epochs)
        self.check_budget(steps)  # before any training: a refused round releases nothing
        prepare_model(model, fix=False)
        views = max(self.augmult, 1)
        grad_sample_mode = self.grad_sample_mode
        if views > 1 and grad_sample_mode == "ghost":
            grad_sample_mode = "hooks"  # ghost clipping never materialises what we average

        device = torch.device(device)
        incoming = _flat_parameters(model)
        private_model = copy.deepcopy(model).to(device)
        private_model.train()
        base_optimizer: torch.optim.Optimizer
        if optimizer == "sgd":
            base_optimizer = torch.optim.SGD(private_model.parameters(), lr=lr)
        else:
            base_optimizer = torch.optim.Adam(private_model.parameters(), lr=lr)
        loss_fn: Any = criterion if criterion is not None else nn.CrossEntropyLoss()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp", secure_mode=self.config.secure_mode)
            sampling_rng = engine.secure_rng if self.config.secure_mode else generator
            loader: DataLoader[Any]
            if self.config.poisson_sampling:
                loader = DPDataLoader(dataset, sample_rate=self.sample_rate, generator=sampling_rng)
            else:
                # Shuffled fixed-size batches; accounted without amplification (see
                # dp._accounting), which is sound for any batch selection.
                loader = DataLoader(
                    dataset, batch_size=self.batch_size, shuffle=True, generator=sampling_rng
                )
            private = engine.make_private(
                module=private_model,
                optimizer=base_optimizer,
                data_loader=loader,
                criterion=loss_fn,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.config.max_grad_norm,
                poisson_sampling=False,  # the loader is already built, with our exact rate
                grad_sample_mode=grad_sample_mode,
                noise_generator=generator,
            )
        if grad_sample_mode == "ghost":
            dp_model, dp_optimizer, loss_fn, dp_loader = private
        else:
            dp_model, dp_optimizer, dp_loader = private
        if dp_loader is not loader:
            raise DPError("Opacus replaced the data loader; refusing to account")
        if generator is None and not self.config.secure_mode:
            use_secure_noise(dp_optimizer, SecureGaussian())
        dp_model.forbid_grad_accumulation()
        # Opacus derives this from len(loader) (floor of 1/q); the noisy sum must be
        # divided by the true expected batch size q*n (= batch_size).
        dp_optimizer.expected_batch_size = self.sample_rate * self.n_records
        injected_before = 0
        if canaries is not None:
            canaries.attach(dp_optimizer)
            injected_before = canaries.steps_injected

        losses: list[float] = []
        empty = 0
        taken = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while taken < steps:
                for features, targets in dp_loader:
                    if taken >= steps:
                        break
                    features = features.to(device)
                    targets = targets.to(device)
                    records = len(targets)
                    if self.augmult:
                        features = augment_views(features, views=views, generator=generator)
                        targets = targets.repeat_interleave(views)
                    dp_optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(dp_model(features), targets)
                    if records == 0:
                        empty += 1
                    else:
                        value = float(loss.item())
                        if not math.isfinite(value):
                            raise NonFiniteLossError(
                                f"client {self.client_id} round {round_id}: loss {value} at step "
                                f"{taken}; the round is discarded and not accounted"
                            )
                        losses.append(value)
                    loss.backward()
                    if views > 1:
                        average_views(dp_optimizer.params, records=records, views=views)
                    dp_optimizer.step()
                    taken += 1
        engine_steps = sum(s for _, _, s in engine.accountant.history)
        if engine_steps != taken:
            raise DPError(f"Opacus counted {engine_steps} noisy steps, the loop took {taken}")
        if canaries is not None and canaries.steps_injected - injected_before != taken:
            raise DPError("the canaries were not added to every noisy step; refusing to audit")
        parameters = _flat_parameters(private_model)
        if not np.all(np.isfinite(parameters)):
            raise NonFiniteLossError(
                f"client {self.client_id} round {round_id}: non-finite parameters after training"
            )
        update = parameters - incoming
        update.flags.writeable = False
        if canaries is not None:
            canaries.observe(update)

        event = self._chain.record(
            round_id=round_id,
            mechanism="dpsgd-sample",
            segment=self._segment(taken),
            max_grad_norm=self.config.max_grad_norm,
            epsilon_budget=None if math.isinf(self.config.budget) else self.config.budget,
            note=f"empty_batches={empty}",
        )
        return LocalTrainingResult(
            parameters=parameters,
            update=update,
            steps=taken,
            empty_batches=empty,
            mean_loss=float(np.mean(losses)) if losses else math.nan,
            event=event,
        )

    # ----------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, Any]:
        """The accountant state: the client's identity, sigma, sample rate and event chain."""
        return {
            "format": _STATE_FORMAT,
            "client_id": self.client_id,
            "sample_rate": repr(self.sample_rate),
            "noise_multiplier": repr(self.noise_multiplier),
            "events": self._chain.to_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the accountant; the chain is verified and its epsilon recomputed.

        Raises :class:`InvalidDPConfigError` if the state belongs to another client or to
        other parameters; the current state is kept on any error.
        """
        if state.get("format") != _STATE_FORMAT:
            raise InvalidDPConfigError(f"state format must be {_STATE_FORMAT!r}")
        if state.get("client_id") != self.client_id:
            raise InvalidDPConfigError(
                f"state of client {state.get('client_id')!r} loaded into {self.client_id!r}"
            )
        if float(state["sample_rate"]) != self.sample_rate:
            raise InvalidDPConfigError("state sample_rate differs from this client's")
        if float(state["noise_multiplier"]) != self.noise_multiplier:
            raise InvalidDPConfigError("state noise_multiplier differs from this client's")
        self._chain.restore(state["events"])
