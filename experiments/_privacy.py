"""The DP layer of the round loop: ``dp=off|sample|client`` behind one small interface.

:class:`~experiments._federation.Federation` calls a :class:`PrivacyLayer` at a few hook
points of every round, in this order:

1. :meth:`~PrivacyLayer.admit`: before any training, refuse the clients (or the whole
   round) whose next round would pass the epsilon budget; the round record names them
   with the reason (``excluded``).
2. :meth:`~PrivacyLayer.weights`: the aggregation weights of the admitted clients.
3. :meth:`~PrivacyLayer.train`: local training (``None``: the federation's plain trainer).
4. :meth:`~PrivacyLayer.privatize_update`: what a client does to its update before it is
   protected by the secagg scheme.
5. :meth:`~PrivacyLayer.after_reveal`: what the party that releases the aggregate does to
   it, and the accounting of the released aggregate.
6. :meth:`~PrivacyLayer.round_privacy` / :meth:`~PrivacyLayer.final_privacy`: the figures
   of ``results.json``; :meth:`~PrivacyLayer.privacy_audit` its ``final.privacy_audit``
   (the empirical lower bound of ``dp.audit=one_run``, :mod:`dp._empirical`).

Implementations:

* :class:`NoPrivacy` (``dp=off``): every hook is the identity; every privacy field is null.
* :class:`SampleLevelPrivacy` (``dp=sample``): record-level DP-SGD (Opacus) at every
  client, one :class:`dp.SampleLevelDPClient` (hence one accountant and one budget) per
  client, each with its own sample rate ``batch_size / n_train``. The federation's
  aggregate is post-processing of DP-SGD outputs, so each client's guarantee holds with
  any secagg scheme, ``plain`` included (the aggregator then sees each DP update).
* :class:`ClientLevelPrivacy` (``dp=client``): DP-FedAvg (McMahan et al. 2018). Each
  client's update is clipped to L2 norm ``S = dp.max_grad_norm``; aggregation weights are
  uniform (``1/n`` for the ``n`` admitted clients), because the accounted sensitivity of
  the released sum is ``S`` only when every clipped update enters it with the same
  weight: FedAvg's size weights would let a large client move the sum by up to
  ``n * w_k * S``. Noise: central (the releasing party adds ``N(0, sigma^2 S^2)`` once to
  the revealed sum) or distributed (``dp.distributed=true``: each of the ``n`` admitted
  clients adds ``N(0, sigma^2 S^2 / n)`` before protecting its update; only sound when the
  aggregator sees only the sum, so ``secagg=plain`` is refused). Central noise is added
  inside the release, so central mode needs a single releasing party (not masking).
  Rounds are accounted on the client sampling rate with the survivors actually
  aggregated, so the noise shortfall of dropouts is accounted.

Randomness: DP noise comes from a ChaCha20 keystream keyed from the OS entropy pool
(:class:`dp.SecureGaussian`: client-level noise and, via the trainer, every DP-SGD step);
Poisson sampling from torch's generator seeded from ``secrets``; never from
``federation.seed``: the seed is published in
``results.json``, and noise derivable from it would protect nothing. Data splits, model
initialisation and client selection stay seeded, but DP runs are not bit-reproducible.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dp import (
    ClientLevelAccountant,
    DPError,
    DPSetup,
    GradientCanaries,
    PrivacyBudgetExceededError,
    PrivacyEvent,
    SampleLevelDPClient,
    UpdateCanaries,
    add_noise,
    clip_update,
    noise_std,
    require_secure_aggregation,
    summarize_events,
    to_dp_setup,
)
from experiments._config import FederationConfig
from experiments._datasets import FederatedData
from experiments._errors import ConfigError
from experiments._training import round_lr
from secagg import PrivacyPolicy
from secagg._hydra import SCHEMES, scheme_class

__all__ = [
    "FEDERATION_ACCOUNT",
    "AuditedClientLevelPrivacy",
    "ClientLevelPrivacy",
    "NoPrivacy",
    "PrivacyLayer",
    "RoundPrivacy",
    "SampleLevelPrivacy",
    "TrainOutcome",
    "build_privacy_layer",
    "preprocessing_for",
]

#: ``PrivacyEvent.client_id`` (and ``final.privacy`` key) of the federation-level account.
FEDERATION_ACCOUNT = "federation"


@dataclass(frozen=True)
class RoundPrivacy:
    """The privacy fields of one round record (all None without dp).

    ``epsilon`` is cumulative over every round so far: the maximum over clients
    (``dp=sample``) or the federation's (``dp=client``); ``epsilon_per_client`` maps client
    names to their cumulative epsilon (``dp=sample`` only).
    """

    epsilon: float | None = None
    epsilon_per_client: dict[str, float] | None = None
    delta: float | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """One client's local training through the DP layer: update, FedAvg size, info."""

    update: np.ndarray
    n_samples: int
    info: dict[str, Any]


def _entropy_seed() -> int:
    return secrets.randbits(63)


class PrivacyLayer:
    """The hooks the round loop calls; this base class is ``dp=off`` (identity everywhere)."""

    mode: str = "off"

    def admit(self, round_id: int, selected: Sequence[int]) -> dict[int, str]:
        """Clients of ``selected`` refused this round, with the reason (before training)."""
        return {}

    def weights(self, sizes: Mapping[int, int]) -> dict[int, float]:
        """Aggregation weights (summing to 1) of the admitted clients from their sizes."""
        total = sum(sizes.values())
        return {c: n / total for c, n in sizes.items()}

    def train(
        self, *, client_id: int, round_id: int, model: nn.Module, device: torch.device
    ) -> TrainOutcome | None:
        """Train ``client_id`` privately from ``model`` (not modified); None: plain training."""
        return None

    def privatize_update(
        self, *, client_id: int, round_id: int, update: np.ndarray, n_admitted: int
    ) -> np.ndarray:
        """What the client does to its update before the secagg scheme protects it."""
        return update

    def release_noise_std(self, n_admitted: int) -> float | None:
        """Std of the Gaussian noise the releasing party adds, inside its release, to the
        revealed *weighted* sum of a round with ``n_admitted`` clients (central DP);
        None: no central noise."""
        return None

    def after_reveal(
        self,
        *,
        round_id: int,
        mean_update: np.ndarray | None,
        selected: Sequence[int],
        survivors: Sequence[int],
    ) -> np.ndarray | None:
        """The accounting of the released mean (already noised inside the release, see
        :meth:`release_noise_std`); returns what the global model applies."""
        return mean_update

    def round_events(self, round_id: int) -> dict[str, PrivacyEvent]:
        """Privacy events accounted in ``round_id``, keyed by ``PrivacyEvent.client_id``."""
        return {}

    def expected_steps(self, client_id: int) -> int | None:
        """The DP-SGD steps a round asks of ``client_id`` (the round manifest commits to
        them, so an auditor catches an event claiming fewer); None without dp=sample."""
        return None

    def policy(self, client_id: int) -> PrivacyPolicy | None:
        """The privacy policy the round manifest commits for ``client_id`` (the auditor
        requires its events to match it); None without dp=sample."""
        return None

    def federation_policy(self) -> PrivacyPolicy | None:
        """dp=client: the federation's policy the round manifest commits; else None."""
        return None

    def federation_events(self) -> list[PrivacyEvent]:
        """dp=client: the federation's events so far (each manifest commits their chain's
        head, the releases before its round); else empty."""
        return []

    def round_privacy(self) -> RoundPrivacy:
        """Cumulative privacy fields for the record of the round just finished."""
        return RoundPrivacy()

    def final_privacy(self) -> tuple[float | None, float | None, dict[str, Any] | None]:
        """``(final.epsilon, final.delta, final.privacy)``."""
        return None, None, None

    def privacy_audit(self) -> dict[str, Any] | None:
        """``final.privacy_audit``: per audited party, the empirical lower bound on epsilon
        beside the claimed one; None unless ``dp.audit=one_run``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The accountants' state a checkpoint keeps (event chains, sigma); no secrets."""
        return {"mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; raises :class:`ConfigError` when it belongs
        to another DP mode, client or sigma (the current state is then kept)."""
        if state.get("mode") != self.mode:
            raise ConfigError(f"the checkpoint's dp state is for dp={state.get('mode')}")


class NoPrivacy(PrivacyLayer):
    """``dp=off``: no differential privacy; every privacy field of the results is null."""


class SampleLevelPrivacy(PrivacyLayer):
    """``dp=sample``: Opacus DP-SGD at every client, one accountant and budget per client.

    Each client's ``steps_per_round`` is ``federation.local_steps`` or, for epochs,
    ``round(local_epochs * n_train / batch_size)`` (what :meth:`SampleLevelDPClient.steps_for`
    derives); in target-epsilon mode each client calibrates its sigma once for
    ``federation.rounds * steps_per_round`` steps at its own sample rate.
    """

    mode = "sample"

    def __init__(
        self, *, setup: DPSetup, federation: FederationConfig, data: FederatedData
    ) -> None:
        if setup.config is None:
            raise ConfigError("dp=sample needs a DP configuration")
        self.setup = setup
        self.config = setup.config
        self.federation = federation
        self.data = data
        self.clients: dict[int, SampleLevelDPClient] = {}
        # dp.audit=one_run: each client's canaries (made at its first round, when the model's
        # size is known); their secret in/out bits never leave the GradientCanaries object.
        self.canaries: dict[int, GradientCanaries] = {}
        self._round_events: dict[int, dict[str, PrivacyEvent]] = {}
        for index, client in enumerate(data.clients):
            n_records = client.n_train
            if federation.batch_size > n_records:
                raise ConfigError(
                    f"federation.batch_size must be <= the smallest client's training set for "
                    f"dp=sample (the sample rate is batch_size / n_train); client {client.name} "
                    f"has {n_records}, got {federation.batch_size}"
                )
            if federation.local_steps is not None:
                steps = federation.local_steps
            else:
                steps = max(1, round(federation.local_epochs * n_records / federation.batch_size))
            try:
                dp_client = SampleLevelDPClient(
                    client_id=client.name,
                    config=self.config,
                    n_records=n_records,
                    batch_size=federation.batch_size,
                    planned_rounds=federation.rounds,
                    steps_per_round=steps,
                    grad_sample_mode=setup.grad_sample_mode,
                    augmult=federation.augmult,
                )
            except DPError as error:
                raise ConfigError(f"dp=sample, client {client.name}: {error}") from error
            derived = dp_client.steps_for(
                local_steps=federation.local_steps,
                local_epochs=None
                if federation.local_steps is not None
                else federation.local_epochs,
            )
            if derived != steps:
                raise ConfigError(
                    f"client {client.name}: the DP client derives {derived} steps per round, "
                    f"the runner planned {steps}"
                )
            self.clients[index] = dp_client

    def _local_plan(self) -> tuple[int | None, int | None]:
        """``(local_steps, local_epochs)``: exactly one is set, as the DP client expects."""
        fed = self.federation
        if fed.local_steps is not None:
            return fed.local_steps, None
        return None, fed.local_epochs

    def admit(self, round_id: int, selected: Sequence[int]) -> dict[int, str]:
        excluded: dict[int, str] = {}
        for client_id in selected:
            dp_client = self.clients[client_id]
            try:
                local_steps, local_epochs = self._local_plan()
                steps = dp_client.steps_for(local_steps=local_steps, local_epochs=local_epochs)
                dp_client.check_budget(steps)
            except PrivacyBudgetExceededError as error:
                excluded[client_id] = f"privacy budget: {error}"
        return excluded

    def train(
        self, *, client_id: int, round_id: int, model: nn.Module, device: torch.device
    ) -> TrainOutcome:
        dp_client = self.clients[client_id]
        client = self.data.clients[client_id]
        local_steps, local_epochs = self._local_plan()
        canaries = self._canaries_of(client_id, model)
        model.train()  # Opacus validates in training mode; evaluate() switches back to eval
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_entropy_seed())  # noise and Poisson sampling: OS entropy
            result = dp_client.train_round(
                model=model,
                dataset=client.train,
                round_id=round_id,
                lr=round_lr(self.federation, round_id),
                optimizer=self.federation.optimizer,
                device=device,
                local_steps=local_steps,
                local_epochs=local_epochs,
                canaries=canaries,
            )
        self._round_events.setdefault(round_id, {})[result.event.client_id] = result.event
        info = {
            "steps": result.steps,
            "loss": result.mean_loss,
            "empty_batches": result.empty_batches,
            "epsilon": result.event.cumulative_epsilon,
        }
        return TrainOutcome(update=np.asarray(result.update), n_samples=client.n_train, info=info)

    def _canaries_of(self, client_id: int, model: nn.Module) -> GradientCanaries | None:
        if self.setup.audit != "one_run":
            return None
        if client_id not in self.canaries:
            dp_client = self.clients[client_id]
            self.canaries[client_id] = GradientCanaries(
                count=self.setup.audit_canaries,
                dimension=sum(p.numel() for p in model.parameters()),
                max_grad_norm=self.config.max_grad_norm,
                sample_rate=dp_client.sample_rate,
            )
        return self.canaries[client_id]

    def privacy_audit(self) -> dict[str, Any] | None:
        if self.setup.audit != "one_run":
            return None
        audits: dict[str, Any] = {}
        for index, canaries in self.canaries.items():
            dp_client = self.clients[index]
            audit = canaries.audit(delta=self.config.delta, confidence=self.setup.audit_confidence)
            audits[self.data.clients[index].name] = audit.to_dict(epsilon_claimed=dp_client.epsilon)
        return audits

    def round_events(self, round_id: int) -> dict[str, PrivacyEvent]:
        return dict(self._round_events.get(round_id, {}))

    def expected_steps(self, client_id: int) -> int | None:
        local_steps, local_epochs = self._local_plan()
        return self.clients[client_id].steps_for(local_steps=local_steps, local_epochs=local_epochs)

    def policy(self, client_id: int) -> PrivacyPolicy:
        dp_client = self.clients[client_id]
        config = self.config
        return PrivacyPolicy(
            mechanism="dpsgd-sample",
            sample_rate=dp_client.sample_rate,
            noise_multiplier=dp_client.noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            delta=config.delta,
            accountant=config.accountant,
            poisson_sampling=config.poisson_sampling,
            steps=dp_client.steps_per_round,
            target_epsilon=config.target_epsilon,
            planned_steps=None
            if config.target_epsilon is None
            else dp_client.planned_rounds * dp_client.steps_per_round,
        )

    def round_privacy(self) -> RoundPrivacy:
        per_client = {self.data.clients[i].name: c.epsilon for i, c in self.clients.items()}
        return RoundPrivacy(
            epsilon=max(per_client.values()),
            epsilon_per_client=per_client,
            delta=self.config.delta,
        )

    def final_privacy(self) -> tuple[float | None, float | None, dict[str, Any] | None]:
        summaries: dict[str, Any] = {}
        for index, dp_client in self.clients.items():
            name = self.data.clients[index].name
            if dp_client.events:
                summary = summarize_events(dp_client.events)
            else:  # never trained: nothing spent, nothing released
                summary = {"client_id": name, "rounds": 0, "total_steps": 0, "epsilon": 0.0}
            summary["planned_noise_multiplier"] = dp_client.noise_multiplier
            summary["planned_sample_rate"] = dp_client.sample_rate
            summary["planned_steps_per_round"] = dp_client.steps_per_round
            summary["preprocessing"] = self.data.preprocessing
            summaries[name] = summary
        epsilon = max(c.epsilon for c in self.clients.values())
        return epsilon, self.config.delta, summaries

    def state_dict(self) -> dict[str, Any]:
        clients = {self.data.clients[i].name: c.state_dict() for i, c in self.clients.items()}
        return {"mode": self.mode, "clients": clients}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("clients") or {}
        names = {self.data.clients[i].name: i for i in self.clients}
        if set(saved) != set(names):
            raise ConfigError(
                f"the checkpoint accounts clients {sorted(saved)}, this run has {sorted(names)}"
            )
        backup = {i: c.state_dict() for i, c in self.clients.items()}
        try:
            for name, client_state in saved.items():
                self.clients[names[name]].load_state_dict(client_state)
        except (DPError, KeyError, TypeError, ValueError) as error:
            for i, client_state in backup.items():
                self.clients[i].load_state_dict(client_state)
            raise ConfigError(f"dp=sample: the checkpoint's accountant state: {error}") from error


class ClientLevelPrivacy(PrivacyLayer):
    """``dp=client``: DP-FedAvg with clipping to ``S``, uniform weights and Gaussian noise.

    Guarantee: (epsilon, delta)-DP of the sequence of released aggregates under
    add/remove-one-client adjacency, accounted by one :class:`dp.ClientLevelAccountant`.
    Client selection must match the accounting: with ``federation.client_fraction=1`` every
    client takes part every round (sample rate 1, no amplification claimed); a fraction
    below 1 picks a fixed-size subset, which is only accounted soundly without sampling
    amplification, so it needs ``dp.poisson_sampling=false`` (sample rate ``n/K``).

    Central noise is added by the releasing party inside its release
    (:meth:`release_noise_std`: the key holder's :meth:`secagg.KeyHolderParty.reveal` on a
    ledger, the runner's reveal without one), before the sum is stored, attested or
    returned; masking has no single releasing party (the aggregator unmasks the exact sum),
    so central mode with ``secagg=masking`` is a :class:`ConfigError`. Local training is
    the federation's plain trainer.
    """

    mode = "client"

    def __init__(
        self,
        *,
        setup: DPSetup,
        federation: FederationConfig,
        data: FederatedData,
        scheme_name: str,
    ) -> None:
        if setup.config is None:
            raise ConfigError("dp=client needs a DP configuration")
        if setup.audit != "none" and not isinstance(self, AuditedClientLevelPrivacy):
            raise ConfigError(
                "dp.audit=one_run with dp=client needs AuditedClientLevelPrivacy "
                "(build_privacy_layer picks it)"
            )
        self.setup = setup
        self.config = setup.config
        self.distributed = setup.distributed
        n_clients = len(data.clients)
        n_selected = max(1, round(federation.client_fraction * n_clients))
        if n_selected < n_clients and self.config.poisson_sampling:
            raise ConfigError(
                "dp=client with federation.client_fraction < 1 needs dp.poisson_sampling=false: "
                "the runner selects a fixed-size subset of clients, which cannot claim Poisson "
                f"amplification (got client_fraction={federation.client_fraction})"
            )
        self.min_survivors = setup.min_survivors if setup.min_survivors is not None else 1
        refusal = scheme_class(scheme_name).release_noise_refusal
        if not self.distributed and refusal is not None:
            releasing = [n for n in SCHEMES if scheme_class(n).release_noise_refusal is None]
            raise ConfigError(
                "dp=client with central noise needs a single releasing party that adds the "
                f"noise inside its release; with secagg={scheme_name} {refusal}: use "
                f"dp.distributed=true (or secagg={'|'.join(sorted(releasing))})"
            )
        try:
            require_secure_aggregation(self.distributed, scheme_name)
            self.accountant = ClientLevelAccountant.from_config(
                self.config,
                n_clients=n_clients,
                client_sample_rate=min(1.0, n_selected / n_clients),
                planned_rounds=federation.rounds,
                federation_id=FEDERATION_ACCOUNT,
                distributed=self.distributed,
                selected=n_selected,
                min_survivors=self.min_survivors if self.distributed else 1,
                max_colluding=setup.max_colluding_clients,
            )
        except DPError as error:
            raise ConfigError(f"dp=client: {error}") from error
        self.clip_norm = self.config.max_grad_norm
        self.planned_rounds = federation.rounds
        self.preprocessing = data.preprocessing
        self._round_events: dict[int, dict[str, PrivacyEvent]] = {}

    def admit(self, round_id: int, selected: Sequence[int]) -> dict[int, str]:
        try:
            self.accountant.check_budget(1)
        except PrivacyBudgetExceededError as error:
            return {c: f"privacy budget (federation): {error}" for c in selected}
        return {}

    def weights(self, sizes: Mapping[int, int]) -> dict[int, float]:
        """Uniform: the sum's sensitivity is ``S`` only if every update weighs the same."""
        return {c: 1.0 / len(sizes) for c in sizes}

    def privatize_update(
        self, *, client_id: int, round_id: int, update: np.ndarray, n_admitted: int
    ) -> np.ndarray:
        clipped = clip_update(update, clip_norm=self.clip_norm)
        if not self.distributed:
            return clipped
        return add_noise(  # ChaCha20 noise (dp.SecureGaussian)
            clipped,
            noise_multiplier=self.accountant.noise_multiplier,
            clip_norm=self.clip_norm,
            n_shares=n_admitted,
        )

    def after_reveal(
        self,
        *,
        round_id: int,
        mean_update: np.ndarray | None,
        selected: Sequence[int],
        survivors: Sequence[int],
    ) -> np.ndarray | None:
        if mean_update is None or not survivors:
            return mean_update  # nothing released, nothing to account
        withheld = self.distributed and len(survivors) < self.min_survivors
        released = mean_update  # central noise was added inside the release
        event = self.accountant.record_round(
            round_id=round_id,
            selected=len(selected),
            survivors=len(survivors),
            distributed=self.distributed,
        )
        self._round_events[round_id] = {event.client_id: event}
        if withheld:
            # Below the survivor floor the budget was checked for: not applied. (The
            # scheme's parties saw the sum: the round is still accounted above.)
            return None
        return released

    def release_noise_std(self, n_admitted: int) -> float | None:
        """Central mode: ``sigma * S`` on the sum of clipped updates, which each enter the
        released sum with weight ``1 / n_admitted``."""
        if self.distributed:
            return None
        std = noise_std(noise_multiplier=self.accountant.noise_multiplier, clip_norm=self.clip_norm)
        return std / n_admitted

    def round_events(self, round_id: int) -> dict[str, PrivacyEvent]:
        return dict(self._round_events.get(round_id, {}))

    def federation_policy(self) -> PrivacyPolicy:
        return federation_policy_of(
            self.accountant, self.config, planned_rounds=self.planned_rounds
        )

    def federation_events(self) -> list[PrivacyEvent]:
        return list(self.accountant.events)

    def round_privacy(self) -> RoundPrivacy:
        return RoundPrivacy(epsilon=self.accountant.epsilon, delta=self.config.delta)

    def final_privacy(self) -> tuple[float | None, float | None, dict[str, Any] | None]:
        events = self.accountant.events
        if events:
            summary = summarize_events(events)
        else:
            summary = {"client_id": FEDERATION_ACCOUNT, "rounds": 0, "epsilon": 0.0}
        summary["planned_noise_multiplier"] = self.accountant.noise_multiplier
        summary["distributed"] = self.distributed
        summary["clip_norm"] = self.clip_norm
        summary["weights"] = "uniform"
        summary["preprocessing"] = self.preprocessing
        summary["min_survivors"] = self.accountant.min_survivors
        summary["max_colluding_clients"] = self.accountant.max_colluding
        return self.accountant.epsilon, self.config.delta, {FEDERATION_ACCOUNT: summary}

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "accountant": self.accountant.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.accountant.load_state_dict(state["accountant"])
        except (DPError, KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"dp=client: the checkpoint's accountant state: {error}") from error


class AuditedClientLevelPrivacy(ClientLevelPrivacy):
    """``dp=client`` with ``dp.audit=one_run``: canary clients in every released aggregate.

    ``dp.audit_canaries`` canary clients (:class:`dp.UpdateCanaries`, Andrew et al. 2023),
    each included with probability 1/2 by the releasing party, contribute an update of norm
    ``S`` to every round's released sum; each is scored on the released mean updates and
    the one-run bound is computed over them. Adding the canaries' sum to the released
    (noised) sum gives the same release distribution as adding it before the noise (the
    noise is additive and independent), so where the noise is drawn does not matter here.
    Only accounted releases carry canaries. The canaries move the global model: audit runs.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canaries: UpdateCanaries | None = None

    def after_reveal(
        self,
        *,
        round_id: int,
        mean_update: np.ndarray | None,
        selected: Sequence[int],
        survivors: Sequence[int],
    ) -> np.ndarray | None:
        released = super().after_reveal(
            round_id=round_id, mean_update=mean_update, selected=selected, survivors=survivors
        )
        if released is None or not self.round_events(round_id):
            return released  # nothing released or nothing accounted: no canaries
        if self.canaries is None:
            self.canaries = UpdateCanaries(
                count=self.setup.audit_canaries,
                dimension=int(np.asarray(released).size),
                clip_norm=self.clip_norm,
            )
        released = np.asarray(released) + self.canaries.round_sum() / len(survivors)
        self.canaries.observe(released)
        return released

    def privacy_audit(self) -> dict[str, Any] | None:
        if self.canaries is None:
            return {}
        audit = self.canaries.audit(delta=self.config.delta, confidence=self.setup.audit_confidence)
        return {FEDERATION_ACCOUNT: audit.to_dict(epsilon_claimed=self.accountant.epsilon)}


def preprocessing_for(dp_schema: Any) -> str:
    """The feature scaling a ``dp`` group allows: ``"per_client"`` statistics for
    ``dp=off``, public constants (``"public"``) under any DP mode."""
    if isinstance(dp_schema, dict):
        name = dp_schema.get("name")
    else:
        name = getattr(dp_schema, "name", None)
    return "per_client" if name == "off" else "public"


def build_privacy_layer(
    dp_schema: Any,
    *,
    federation: FederationConfig,
    data: FederatedData,
    scheme_name: str,
) -> PrivacyLayer:
    """Validate the ``dp`` group and build its layer; bad values raise :class:`ConfigError`."""
    try:
        setup = to_dp_setup(dp_schema)
    except DPError as error:
        raise ConfigError(str(error)) from error
    if setup.mode == "off":
        return NoPrivacy()
    if data.preprocessing != "public":
        raise ConfigError(
            f"dp={setup.mode} needs public pre-processing: the data was scaled with "
            f"{data.preprocessing!r} statistics, which let one record move every other "
            "record's features (load it with preprocessing='public')"
        )
    if setup.mode == "sample":
        return SampleLevelPrivacy(setup=setup, federation=federation, data=data)
    layer = AuditedClientLevelPrivacy if setup.audit == "one_run" else ClientLevelPrivacy
    return layer(setup=setup, federation=federation, data=data, scheme_name=scheme_name)


def federation_policy_of(
    accountant: ClientLevelAccountant, config: Any, *, planned_rounds: int
) -> PrivacyPolicy:
    """The federation's policy (``dp=client``) as a round manifest commits it: the
    accountant's sampling, sigma and clip norm, the config's delta, accountant and target
    (a target plans ``planned_rounds`` releases). The runner and a deployed key holder
    build it with this one function."""
    return PrivacyPolicy(
        mechanism="dp-fedavg-client",
        sample_rate=accountant.client_sample_rate,
        noise_multiplier=accountant.noise_multiplier,
        max_grad_norm=accountant.clip_norm,
        delta=config.delta,
        accountant=config.accountant,
        poisson_sampling=accountant.poisson_sampling,
        steps=1,
        target_epsilon=config.target_epsilon,
        planned_steps=None if config.target_epsilon is None else planned_rounds,
    )
