"""Differential privacy for the federation: configuration, accounting, training, events.

* :class:`DPConfig`: frozen privacy parameters (:mod:`dp._config`).
* Pure accounting maths: :func:`epsilon_for`, :func:`compose_epsilon`,
  :func:`calibrate_noise` over :class:`Segment` histories (:mod:`dp._accounting`).
* :class:`PrivacyEvent`: the canonically encoded, hash-chained record of one accounted
  round, and :func:`recompute_epsilon` for auditors (:mod:`dp._events`).
* :class:`SampleLevelDPClient`: Opacus DP-SGD for one client with a persistent
  accountant and a budget (:mod:`dp._trainer`).
* Client-level DP-FedAvg: :func:`clip_update`, :func:`add_noise`,
  :class:`ClientLevelAccountant`, :func:`require_secure_aggregation`
  (:mod:`dp._client_level`).
* Empirical lower bound on epsilon from one run (Steinke et al. 2023):
  :func:`audit_one_run`, :class:`OneRunAudit` (:mod:`dp._empirical`, no torch) and the
  white-box :class:`GradientCanaries` of a DP-SGD client (:mod:`dp._canaries`).
* Hydra schemas of the ``dp`` group and :func:`to_dp_setup` (:mod:`dp._hydra`).

Every epsilon reported is cumulative over all rounds at the configured delta.
"""

from dp._accounting import (
    MECHANISMS,
    Segment,
    accounted_parameters,
    calibrate_noise,
    compose_epsilon,
    epsilon_for,
)
from dp._canaries import GradientCanaries, UpdateCanaries
from dp._client_level import (
    SECURE_AGGREGATION_SCHEMES,
    ClientLevelAccountant,
    add_noise,
    clip_update,
    effective_noise_multiplier,
    noise_std,
    require_secure_aggregation,
)
from dp._config import ACCOUNTANTS, DPConfig
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
from dp._trainer import (
    GRAD_SAMPLE_MODES,
    LocalTrainingResult,
    SampleLevelDPClient,
    prepare_model,
)

__all__ = [
    "ACCOUNTANTS",
    "AUDIT_METHODS",
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
    "SecureModeUnavailableError",
    "Segment",
    "UnsupportedModelError",
    "UpdateCanaries",
    "accounted_parameters",
    "add_noise",
    "audit_one_run",
    "calibrate_noise",
    "clip_update",
    "compose_epsilon",
    "default_guess_counts",
    "effective_noise_multiplier",
    "epsilon_for",
    "events_to_segments",
    "noise_std",
    "one_run_epsilon_lower",
    "one_run_p_value",
    "prepare_model",
    "recompute_epsilon",
    "register_configs",
    "require_secure_aggregation",
    "summarize_events",
    "to_dp_config",
    "to_dp_setup",
    "verify_event_chain",
]
