"""Differential privacy for the federation: configuration, accounting, training, events.

* :class:`DPConfig`: frozen privacy parameters (:mod:`dp._config`).
* Pure accounting maths: :func:`epsilon_for`, :func:`compose_epsilon`,
  :func:`calibrate_noise` over :class:`Segment` histories (:mod:`dp._accounting`).
* :class:`PrivacyEvent`: the canonically encoded, hash-chained record of one accounted
  round, and :func:`recompute_epsilon` for auditors (:mod:`dp._events`).
* :class:`EventChain`: the one accountant over a party's event chain, used by both the
  sample-level client and the client-level accountant (:mod:`dp._chain`).
* :class:`SampleLevelDPClient`: Opacus DP-SGD for one client with a persistent
  accountant and a budget (:mod:`dp._trainer`).
* Client-level DP-FedAvg: :func:`clip_update`, :func:`add_noise`,
  :class:`ClientLevelAccountant`, :func:`require_secure_aggregation`
  (:mod:`dp._client_level`).
* Empirical lower bound on epsilon from one run (Steinke et al. 2023):
  :func:`audit_one_run`, :class:`OneRunAudit` (:mod:`dp._empirical`, no torch) and the
  white-box :class:`GradientCanaries` of a DP-SGD client (:mod:`dp._canaries`).
* Hydra schemas of the ``dp`` group and :func:`to_dp_setup` (:mod:`dp._hydra`).
* :func:`independent_epsilon`: the same epsilon recomputed with Google's
  ``dp_accounting`` (:mod:`dp._independent`), for auditors.
* :func:`secure_normal` / :class:`SecureGaussian`: Gaussian noise from a ChaCha20 keystream
  (:mod:`dp._csprng`).

Every epsilon reported is cumulative over all rounds at the configured delta.

``import dp`` imports neither torch nor Opacus: the trainer (:class:`SampleLevelDPClient`,
:func:`prepare_model`, :class:`LocalTrainingResult`) is loaded on first access, and the
accounting imports Opacus's analyses only when it computes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dp._accounting import (
    MECHANISMS,
    Segment,
    accounted_parameters,
    calibrate_noise,
    compose_epsilon,
    epsilon_for,
    gdp_epsilon_diagnostic,
)
from dp._chain import EventChain
from dp._client_level import (
    SECURE_AGGREGATION_SCHEMES,
    ClientLevelAccountant,
    add_noise,
    clip_update,
    effective_noise_multiplier,
    noise_std,
    require_secure_aggregation,
)
from dp._config import ACCOUNTANTS, DIAGNOSTIC_ACCOUNTANTS, GRAD_SAMPLE_MODES, DPConfig
from dp._csprng import SecureGaussian, secure_normal
from dp._empirical import (
    AUDIT_METHODS,
    InvalidAuditError,
    OneRunAudit,
    audit_one_run,
    default_guess_counts,
    one_run_epsilon_lower,
    one_run_p_value,
)
from dp._errors import (
    DPError,
    EventChainError,
    InvalidDPConfigError,
    NonFiniteLossError,
    PrivacyBudgetExceededError,
    SecureAggregationRequiredError,
    SecureModeUnavailableError,
    UnsoundAccountantError,
    UnsupportedModelError,
)
from dp._events import (
    EVENT_FORMAT,
    GENESIS_DIGEST,
    PrivacyEvent,
    events_to_segments,
    recompute_epsilon,
    summarize_events,
    verify_event_chain,
)
from dp._hydra import (
    DPClientSchema,
    DPOffSchema,
    DPSampleSchema,
    DPSetup,
    register_configs,
    to_dp_config,
    to_dp_setup,
)
from dp._independent import independent_compose_epsilon, independent_epsilon

if TYPE_CHECKING:
    from dp._augment import augment_views
    from dp._canaries import GradientCanaries, UpdateCanaries
    from dp._trainer import (
        LocalTrainingResult,
        SampleLevelDPClient,
        average_views,
        prepare_model,
    )

#: Names served lazily from :mod:`dp._trainer` (which imports torch and Opacus).
_TRAINER_NAMES = frozenset(
    {"LocalTrainingResult", "SampleLevelDPClient", "average_views", "prepare_model"}
)
_CANARY_NAMES = frozenset({"GradientCanaries", "UpdateCanaries"})
_AUGMENT_NAMES = frozenset({"augment_views"})


def __getattr__(name: str) -> Any:
    if name in _TRAINER_NAMES | _CANARY_NAMES | _AUGMENT_NAMES:
        if name in _TRAINER_NAMES:
            module = "dp._trainer"
        elif name in _CANARY_NAMES:
            module = "dp._canaries"
        else:
            module = "dp._augment"
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dp' has no attribute {name!r}")


__all__ = [
    "ACCOUNTANTS",
    "AUDIT_METHODS",
    "DIAGNOSTIC_ACCOUNTANTS",
    "EVENT_FORMAT",
    "GENESIS_DIGEST",
    "GRAD_SAMPLE_MODES",
    "MECHANISMS",
    "SECURE_AGGREGATION_SCHEMES",
    "ClientLevelAccountant",
    "DPClientSchema",
    "DPConfig",
    "DPError",
    "DPOffSchema",
    "DPSampleSchema",
    "DPSetup",
    "EventChain",
    "EventChainError",
    "GradientCanaries",
    "InvalidAuditError",
    "InvalidDPConfigError",
    "LocalTrainingResult",
    "NonFiniteLossError",
    "OneRunAudit",
    "PrivacyBudgetExceededError",
    "PrivacyEvent",
    "SampleLevelDPClient",
    "SecureAggregationRequiredError",
    "SecureGaussian",
    "SecureModeUnavailableError",
    "Segment",
    "UnsoundAccountantError",
    "UnsupportedModelError",
    "UpdateCanaries",
    "accounted_parameters",
    "add_noise",
    "audit_one_run",
    "augment_views",
    "average_views",
    "calibrate_noise",
    "clip_update",
    "compose_epsilon",
    "default_guess_counts",
    "effective_noise_multiplier",
    "epsilon_for",
    "events_to_segments",
    "gdp_epsilon_diagnostic",
    "independent_compose_epsilon",
    "independent_epsilon",
    "noise_std",
    "one_run_epsilon_lower",
    "one_run_p_value",
    "prepare_model",
    "recompute_epsilon",
    "register_configs",
    "require_secure_aggregation",
    "secure_normal",
    "summarize_events",
    "to_dp_config",
    "to_dp_setup",
    "verify_event_chain",
]
