"""The federated round loop: select clients, train locally, aggregate securely, evaluate.

:class:`Federation` simulates K clients in one process. Each step is a small method that
a subclass (or the wiring of the dp, secagg and chain layers) can override:
:meth:`~Federation.select_clients`, :meth:`~Federation.select_dropouts`,
:meth:`~Federation.train_client`, :meth:`~Federation.aggregate`,
:meth:`~Federation.apply_update`, :meth:`~Federation.round_extras`.

Aggregation is FedAvg weighted by sample counts, and always goes through the configured
:class:`~secagg._scheme.ProtectionScheme` inside the one round driver,
:class:`secagg.SecureRoundProtocol`: each surviving client protects its *weighted* update,
commits to it on the ledger, the aggregator combines the blobs blindly, and only the sum
is released, attested and audited. The ledger is the run's (``chain=inprocess|anvil|rpc``)
or, without one (``chain=none``, or a federation built without a ledger layer), a
:class:`chain.MemoryLedger` with the same rules. Threat model: that of the scheme in use
(``plain`` protects nothing; it is the baseline).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dp import PrivacyEvent
from experiments._config import FederationConfig
from experiments._datasets import FederatedData
from experiments._errors import ConfigError
from experiments._privacy import NoPrivacy, PrivacyLayer
from experiments._strategies import ServerOptimizer, server_params
from experiments._training import Evaluation, LocalTrainer, SGDTrainer, evaluate
from secagg import PhaseStats, ProtectionScheme, SecureRoundOutcome

if TYPE_CHECKING:
    from experiments._ledger import LedgerLayer

log = logging.getLogger("experiments")

# Tags that keep the random streams of different purposes apart (derive_seed).
SEED_DATA, SEED_MODEL, SEED_SELECT, SEED_DROPOUT, SEED_TRAIN = range(1, 6)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and integer keys (purpose, round, client)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without CUDA is a
    :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "federation.device=cuda, but no CUDA device is available "
            "(torch.cuda.is_available() is False); use federation.device=cpu or auto"
        )
    return torch.device(name)


@dataclass(frozen=True)
class RoundSeconds:
    """Seconds per stage of one round, summed over clients (``chain`` None without a ledger)."""

    train: float
    protect: float
    combine: float
    reveal: float
    chain: float | None = None


@dataclass(frozen=True)
class RoundRecord:
    """One entry of ``results.json``'s ``rounds``. Metrics are on the pooled test set;
    ``n_clients`` is how many updates were aggregated; ``dropped`` lists the ids of the
    selected clients that dropped out; ``excluded`` maps the ids of selected clients the
    privacy layer refused before training (budget) to the reason; ``epsilon`` is
    cumulative (max over clients for dp=sample), ``epsilon_per_client`` maps client names
    to their cumulative epsilon (dp=sample); layer-specific fields are None when unused.
    With a ledger, ``excluded`` also holds clients skipped for low reputation or rejected
    by the protocol, ``reputation`` maps client names to their on-chain score after the
    round, and ``flagged`` maps the ids the round's audit flagged to the reason code.
    ``chain_phases`` maps each ledger phase of the round (open, commit, reveal, publish,
    release, finalize, audit) to its ``{"gas": ..., "seconds": ...}``; with a decryption
    committee (``secagg.committee_size`` > 1), ``committee`` maps each member that took part
    (1..K) to its ``{"seconds": ..., "bytes_up": ..., "bytes_down": ...}`` of the round."""

    round: int
    accuracy: float
    auc: float | None
    loss: float
    n_clients: int
    dropped: list[int]
    bytes_up: int
    bytes_down: int
    seconds: RoundSeconds
    epsilon: float | None = None
    gas_used: int | None = None
    epsilon_per_client: dict[str, float] | None = None
    delta: float | None = None
    excluded: dict[int, str] = field(default_factory=dict)
    reputation: dict[str, float] | None = None
    flagged: dict[int, int] | None = None
    chain_phases: dict[str, dict[str, float]] | None = None
    committee: dict[int, dict[str, float]] | None = None


@dataclass(frozen=True)
class FinalRecord:
    """``results.json``'s ``final``: the last model on the pooled and per-client test sets.

    ``privacy`` holds each accounted party's totals (``dp.summarize_events``: accountant,
    delta, sample rate / noise multiplier / steps segments, total steps, epsilon, budget),
    enough to recompute epsilon without this code; None without dp. ``audit`` is the
    verdict of a fresh auditor over the whole ledger at the end of the run (None without
    a ledger): ``{verdict, exit_code, findings}``. ``privacy_audit`` (``dp.audit=one_run``)
    maps each audited client (``federation`` for dp=client) to its empirical lower bound on
    epsilon, ``{method, canaries, guesses, correct, confidence, delta, epsilon_lower,
    epsilon_claimed}``. ``majority_accuracy`` is the accuracy of always predicting the
    pooled test set's most common class (the level a model that learnt nothing reaches)."""

    accuracy: float
    auc: float | None
    per_client_accuracy: dict[str, float]
    mean_client_accuracy: float
    epsilon: float | None
    delta: float | None
    wall_seconds: float
    bytes_up_total: int
    gas_total: int | None
    privacy: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    privacy_audit: dict[str, Any] | None = None
    majority_accuracy: float | None = None


@dataclass(frozen=True)
class RunResults:
    """Everything ``results.json`` holds. ``meta`` says when, where and with what the run
    ran, and names the saved model file (:func:`experiments._artifacts.run_metadata`)."""

    config: dict[str, Any]
    rounds: list[RoundRecord]
    final: FinalRecord
    ledger: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AggregationResult:
    """The revealed weighted-mean update of one round and the scheme's cost accounting."""

    mean_update: np.ndarray | None  # None when no client survived
    included: list[int]
    stats: PhaseStats = field(default_factory=PhaseStats)
    # the hardened round's outcome (chain != none): excluded, flagged, gas, ledger seconds
    ledger_outcome: SecureRoundOutcome | None = None


@dataclass(frozen=True)
class RoundExtras:
    """Fields that the dp and chain layers contribute to a round record."""

    epsilon: float | None = None
    gas_used: int | None = None
    chain_seconds: float | None = None
    epsilon_per_client: dict[str, float] | None = None
    delta: float | None = None
    reputation: dict[str, float] | None = None
    excluded: dict[int, str] = field(default_factory=dict)
    flagged: dict[int, int] | None = None
    chain_phases: dict[str, dict[str, float]] | None = None
    committee: dict[int, dict[str, float]] | None = None


class Federation:
    """K simulated clients and one global model, driven round by round."""

    def __init__(
        self,
        *,
        config: FederationConfig,
        data: FederatedData,
        model: nn.Module,
        scheme: ProtectionScheme,
        trainer: LocalTrainer | None = None,
        device: torch.device | None = None,
        privacy: PrivacyLayer | None = None,
        ledger: LedgerLayer | None = None,
        scheme_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.device = device or resolve_device(config.device)
        self.model = model.to(self.device)
        self.scheme = scheme
        self.trainer: LocalTrainer = trainer or SGDTrainer(config)
        self.dim = int(parameters_to_vector(self.model.parameters()).numel())
        self.server = ServerOptimizer(server_params(config), self.dim)
        self.privacy: PrivacyLayer = privacy or NoPrivacy()
        # round id -> {PrivacyEvent.client_id (client name, or "federation"): event}
        self.privacy_events: dict[int, dict[str, PrivacyEvent]] = {}
        self.ledger = ledger
        # The scheme's public parameters, as the round manifests declare them (the secagg
        # config group); None: the scheme's own (``ProtectionScheme.manifest_config``).
        self.scheme_config = dict(scheme_config) if scheme_config is not None else None
        self._skipped: dict[int, dict[int, str]] = {}
        # federation.ema > 0: the moving average of the global parameters (flat), from the
        # first round on; None before it and when the option is off.
        self.ema: torch.Tensor | None = None

    def ledger_layer(self) -> LedgerLayer:
        """The run's ledger layer; a federation built without one gets a
        :class:`chain.MemoryLedger` layer on first use (the ``chain=none`` round)."""
        if self.ledger is None:
            from experiments._ledger import memory_layer

            self.ledger = memory_layer(
                n_clients=len(self.data.clients),
                scheme=self.scheme,
                scheme_config=self.scheme_config
                if self.scheme_config is not None
                else self.scheme.manifest_config(),
                dim=self.dim,
                dp_mode=self.privacy.mode,
            )
        return self.ledger

    # ----- steps a subclass may override ---------------------------------------------
    def select_clients(self, round_id: int) -> list[int]:
        """``max(1, round(client_fraction * clients))`` clients, seeded per round."""
        n_clients = len(self.data.clients)
        n_selected = max(1, round(self.config.client_fraction * n_clients))
        if n_selected >= n_clients:
            candidates = list(range(n_clients))
        else:
            rng = np.random.default_rng(derive_seed(self.config.seed, SEED_SELECT, round_id))
            candidates = sorted(
                int(c) for c in rng.choice(n_clients, size=n_selected, replace=False)
            )
        # The aggregator skips clients whose on-chain reputation is below the threshold.
        selected = self.ledger_layer().protocol.select(candidates)
        self._skipped[round_id] = {
            c: "reputation below chain.reputation_threshold"
            for c in candidates
            if c not in selected
        }
        return selected

    def select_dropouts(self, round_id: int, selected: Sequence[int]) -> list[int]:
        """``floor(dropout * len(selected))`` of the selected clients, seeded per round."""
        n_dropped = math.floor(self.config.dropout * len(selected))
        if n_dropped == 0:
            return []
        rng = np.random.default_rng(derive_seed(self.config.seed, SEED_DROPOUT, round_id))
        return sorted(int(c) for c in rng.choice(list(selected), size=n_dropped, replace=False))

    def train_client(self, client_id: int, round_id: int) -> tuple[np.ndarray, int, dict[str, Any]]:
        """Train a copy of the global model on one client's data.

        Returns the flat update (trained minus global weights, float64), the number of
        training samples (the FedAvg weight), and an info dict (steps, mean loss, ...).
        With dp=sample the privacy layer trains (Opacus DP-SGD) instead of ``trainer``.
        """
        client = self.data.clients[client_id]
        private = self.privacy.train(
            client_id=client_id, round_id=round_id, model=self.model, device=self.device
        )
        if private is not None:
            return private.update, private.n_samples, private.info
        local_model = copy.deepcopy(self.model)
        seed = derive_seed(self.config.seed, SEED_TRAIN, round_id, client_id)
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            result = self.trainer.train(
                local_model,
                client.train,
                client_id=client_id,
                round_id=round_id,
                generator=generator,
                device=self.device,
            )
        with torch.no_grad():
            delta = parameters_to_vector(local_model.parameters()) - parameters_to_vector(
                self.model.parameters()
            )
        info = {"steps": result.steps, "loss": result.mean_loss, **result.info}
        return delta.double().cpu().numpy(), client.n_train, info

    def aggregate(
        self, round_id: int, deltas: Mapping[int, np.ndarray], weights: Mapping[int, float]
    ) -> AggregationResult:
        """Securely compute the weighted mean of the surviving clients' updates.

        ``weights`` covers every selected client and sums to 1; clients in ``weights``
        but not in ``deltas`` dropped out. Each survivor protects ``weight * delta``; the
        revealed sum is divided by the total weight of the clients actually included.
        """
        return self._aggregate_on_ledger(round_id, deltas, weights)

    def _aggregate_on_ledger(
        self, round_id: int, deltas: Mapping[int, np.ndarray], weights: Mapping[int, float]
    ) -> AggregationResult:
        """The hardened round: commitments, blind combination, attested reveal, audit."""
        layer = self.ledger_layer()
        names = {client.name: i for i, client in enumerate(self.data.clients)}
        events = {
            names[name]: event
            for name, event in self.privacy.round_events(round_id).items()
            if name in names
        }
        expected = {c: self.privacy.expected_steps(c) for c in weights}
        policies = {c: self.privacy.policy(c) for c in weights}
        # dp=client: the federation's events so far go to the store, and the manifest that
        # opens this round commits their chain's head (the releases before this round).
        federation_events = self.privacy.federation_events()
        for event in federation_events:
            layer.consortium.store.put(event.canonical_bytes())
        outcome = layer.protocol.run_round(
            round_id,
            selected=sorted(weights),
            weights=weights,
            updates={c: weights[c] * deltas[c] for c in deltas},
            events=events,
            expected_steps={c: s for c, s in expected.items() if s is not None},
            policies={c: p for c, p in policies.items() if p is not None},
            # each client's own policy: it refuses a manifest that commits another
            client_policies={c: p for c, p in policies.items() if p is not None},
            release_noise_std=self.privacy.release_noise_std(len(weights)),
            federation_policy=self.privacy.federation_policy(),
            federation_event=federation_events[-1].digest().hex() if federation_events else None,
        )
        if outcome.total is None or not outcome.included:
            return AggregationResult(
                mean_update=None, included=[], stats=outcome.stats, ledger_outcome=outcome
            )
        included_weight = math.fsum(weights[c] for c in outcome.included)
        return AggregationResult(
            mean_update=outcome.total / included_weight,
            included=list(outcome.included),
            stats=outcome.stats,
            ledger_outcome=outcome,
        )

    def apply_update(self, mean_update: np.ndarray) -> None:
        """Move the global weights by the server strategy's step for the mean update
        (FedAvg with server learning rate 1 by default; experiments/_strategies.py)."""
        step = self.server.step(mean_update)
        with torch.no_grad():
            current = parameters_to_vector(self.model.parameters())
            update = torch.as_tensor(step, dtype=current.dtype, device=current.device)
            vector_to_parameters(current + update, self.model.parameters())

    def update_average(self) -> None:
        """One step of ``federation.ema``'s moving average of the global parameters."""
        decay = self.config.ema
        if decay <= 0:
            return
        with torch.no_grad():
            current = parameters_to_vector(self.model.parameters()).detach().clone()
            if self.ema is None:
                self.ema = current
            else:
                self.ema.mul_(decay).add_(current, alpha=1.0 - decay)

    def evaluation_model(self) -> nn.Module:
        """The model that is evaluated and saved: the global model, or with
        ``federation.ema`` a copy of it holding the moving average of its parameters."""
        if self.ema is None:
            return self.model
        averaged = copy.deepcopy(self.model)
        with torch.no_grad():
            vector_to_parameters(self.ema.to(self.device), averaged.parameters())
        return averaged

    def round_extras(
        self, round_id: int, aggregation: AggregationResult | None = None
    ) -> RoundExtras:
        """Epsilon spent so far, gas used and ledger seconds: None without dp and chain.
        ``aggregation`` is the round's :meth:`aggregate` result (its ledger outcome)."""
        spent = self.privacy.round_privacy()
        extras = RoundExtras(
            epsilon=spent.epsilon, epsilon_per_client=spent.epsilon_per_client, delta=spent.delta
        )
        layer = self.ledger_layer()
        outcome = None if aggregation is None else aggregation.ledger_outcome
        excluded = dict(self._skipped.get(round_id, {}))
        flagged = None
        gas_used = None
        chain_seconds = None
        chain_phases = None
        committee = None
        if outcome is not None:
            committee = {k: dict(v) for k, v in outcome.committee.items()} or None
            excluded.update(outcome.excluded)
            flagged = dict(outcome.flagged)
            chain_seconds = outcome.chain_seconds
            if not layer.in_memory:  # a memory ledger has no gas
                gas_used = outcome.gas_used
                chain_phases = {
                    phase: {"gas": gas, "seconds": outcome.chain_seconds_by_phase.get(phase, 0.0)}
                    for phase, gas in outcome.gas_by_phase.items()
                }
        ledger = layer.consortium.ledger
        reputation = {
            client.name: ledger.reputation(layer.consortium.address_of(i)).score
            for i, client in enumerate(self.data.clients)
        }
        return dataclasses.replace(
            extras,
            gas_used=gas_used,
            chain_seconds=chain_seconds,
            reputation=reputation,
            excluded=excluded,
            flagged=flagged,
            chain_phases=chain_phases,
            committee=committee,
        )

    def privacy_spent(self) -> tuple[float | None, float | None]:
        """Final (epsilon, delta): None without dp."""
        epsilon, delta, _ = self.privacy.final_privacy()
        return epsilon, delta

    def privacy_summary(self) -> dict[str, Any] | None:
        """``final.privacy``: each accounted party's totals; None without dp."""
        return self.privacy.final_privacy()[2]

    # ----- the loop -----------------------------------------------------------------
    def run_round(self, round_id: int) -> RoundRecord:
        """One full round; returns its record."""
        selected = self.select_clients(round_id)
        dropped = self.select_dropouts(round_id, selected)
        # Budget refusals happen before any training; refused clients leave the round.
        excluded = self.privacy.admit(round_id, selected)
        admitted = [c for c in selected if c not in excluded]
        dropped = [c for c in dropped if c not in excluded]
        sizes = {c: self.data.clients[c].n_train for c in admitted}
        weights = self.privacy.weights(sizes) if admitted else {}
        deltas: dict[int, np.ndarray] = {}
        train_seconds = 0.0
        for client_id in admitted:
            if client_id in dropped:
                continue
            start = time.perf_counter()
            update, _, _ = self.train_client(client_id, round_id)
            deltas[client_id] = self.privacy.privatize_update(
                client_id=client_id, round_id=round_id, update=update, n_admitted=len(admitted)
            )
            train_seconds += time.perf_counter() - start
        if admitted:
            result = self.aggregate(round_id, deltas, weights)
        else:
            result = AggregationResult(mean_update=None, included=[])
        mean_update = self.privacy.after_reveal(
            round_id=round_id,
            mean_update=result.mean_update,
            selected=admitted,
            survivors=result.included,
        )
        events = self.privacy.round_events(round_id)
        if events:
            self.privacy_events[round_id] = events
        if mean_update is not None:
            self.apply_update(mean_update)
        self.update_average()
        evaluation = self.evaluate_pooled()
        extras = self.round_extras(round_id, result)
        stats = result.stats
        return RoundRecord(
            round=round_id,
            accuracy=evaluation.accuracy,
            auc=evaluation.auc,
            loss=evaluation.loss,
            n_clients=len(result.included),
            dropped=list(dropped),
            bytes_up=int(sum(stats.bytes_up.values())),
            bytes_down=int(sum(stats.bytes_down.values())),
            seconds=RoundSeconds(
                train=train_seconds,
                protect=stats.seconds.get("setup", 0.0) + stats.seconds.get("protect", 0.0),
                combine=stats.seconds.get("combine", 0.0),
                reveal=stats.seconds.get("reveal", 0.0),
                chain=extras.chain_seconds,
            ),
            epsilon=extras.epsilon,
            gas_used=extras.gas_used,
            epsilon_per_client=extras.epsilon_per_client,
            delta=extras.delta,
            excluded={**excluded, **extras.excluded},
            reputation=extras.reputation,
            flagged=extras.flagged,
            chain_phases=extras.chain_phases,
            committee=extras.committee,
        )

    def run(
        self,
        *,
        on_round: Callable[[RoundRecord], None] | None = None,
        previous: Sequence[RoundRecord] = (),
        stop_after: int | None = None,
    ) -> tuple[list[RoundRecord], FinalRecord]:
        """Run every round (1-based ids), then evaluate the final model.

        ``previous``: the records of rounds already run (a resumed run continues after
        them); ``stop_after``: the last round to run (None: ``config.rounds``)."""
        start = time.perf_counter()
        records = list(previous)
        last = self.config.rounds if stop_after is None else min(stop_after, self.config.rounds)
        for round_id in range(len(records) + 1, last + 1):
            record = self.run_round(round_id)
            records.append(record)
            if on_round is not None:
                on_round(record)
        pooled = self.evaluate_pooled()
        per_client = self.evaluate_clients()
        epsilon, delta = self.privacy_spent()
        gas = [r.gas_used for r in records if r.gas_used is not None]
        final = FinalRecord(
            accuracy=pooled.accuracy,
            auc=pooled.auc,
            per_client_accuracy={name: ev.accuracy for name, ev in per_client.items()},
            mean_client_accuracy=float(np.mean([ev.accuracy for ev in per_client.values()])),
            epsilon=epsilon,
            delta=delta,
            wall_seconds=time.perf_counter() - start,
            bytes_up_total=sum(r.bytes_up for r in records),
            gas_total=sum(gas) if gas else None,
            privacy=self.privacy_summary(),
            privacy_audit=self.privacy.privacy_audit(),
            majority_accuracy=self.majority_accuracy(),
        )
        return records, final

    def majority_accuracy(self) -> float | None:
        """Share of the pooled test set's most common class (None for an empty set)."""
        labels = self.data.pooled_test.tensors[1]
        if labels.numel() == 0:
            return None
        return float(torch.bincount(labels.long()).max()) / labels.numel()

    def evaluate_pooled(self) -> Evaluation:
        """The evaluated model (:meth:`evaluation_model`) on the pooled test set."""
        return evaluate(
            self.evaluation_model(),
            self.data.pooled_test,
            device=self.device,
            flip_tta=self.config.eval_tta,
        )

    def evaluate_clients(self) -> dict[str, Evaluation]:
        """The evaluated model (:meth:`evaluation_model`) on each client's own test set."""
        model = self.evaluation_model()
        return {
            client.name: evaluate(
                model, client.test, device=self.device, flip_tta=self.config.eval_tta
            )
            for client in self.data.clients
        }
