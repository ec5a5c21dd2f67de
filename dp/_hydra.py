"""Hydra schemas of the ``dp`` config group and their conversion to :class:`DPConfig`.

``dp=off|sample|client`` selects a schema; fields are overridden as ``dp.target_epsilon``,
``dp.noise_multiplier``, ``dp.max_grad_norm``, ``dp.delta``, ``dp.accountant``,
``dp.epsilon_budget``, ``dp.poisson_sampling``, ``dp.secure_mode`` (and ``dp.distributed``,
``dp.min_survivors``, ``dp.max_colluding_clients`` for ``dp=client``). ``dp.accountant``
is ``rdp`` or ``prv``; ``gdp`` is refused (:class:`~dp.UnsoundAccountantError`).
The empirical audit: ``dp.audit=none|one_run``, ``dp.audit_canaries``, ``dp.audit_confidence``.
Exactly one of ``dp.noise_multiplier`` and ``dp.target_epsilon`` must be
given: no privacy parameter is ever defaulted silently. Convert at the entry point with
:func:`to_dp_setup` (or :func:`to_dp_config`) so a bad value fails before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from dp._config import GRAD_SAMPLE_MODES, DPConfig
from dp._empirical import AUDIT_METHODS
from dp._errors import InvalidDPConfigError

__all__ = [
    "DPClientSchema",
    "DPOffSchema",
    "DPSampleSchema",
    "DPSetup",
    "register_configs",
    "to_dp_config",
    "to_dp_setup",
]

DPMode = Literal["off", "sample", "client"]


@dataclass
class DPOffSchema:
    """``dp=off``: no differential privacy."""

    name: str = "off"


@dataclass
class _DPSchemaBase:
    """Fields shared by ``dp=sample`` and ``dp=client`` (see :class:`dp.DPConfig`).

    ``audit=one_run`` adds ``audit_canaries`` canaries to the run and reports an empirical
    lower bound on epsilon at ``audit_confidence`` (:mod:`dp._empirical`).
    """

    name: str = "sample"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    epsilon_budget: float | None = None
    poisson_sampling: bool = True
    secure_mode: bool = False
    allow_large_delta: bool = False
    audit: str = "none"
    audit_canaries: int = 1000
    audit_confidence: float = 0.95


@dataclass
class DPSampleSchema(_DPSchemaBase):
    """``dp=sample``: record-level DP-SGD (Opacus) at every client, per-client accountants.

    ``fix_model`` asks the runner to replace BatchNorm with GroupNorm once, on the global
    model (:func:`dp.prepare_model`); ``grad_sample_mode`` picks Opacus's per-sample
    gradient engine (``ghost`` clipping, ``hooks`` or ``functorch``).
    """

    name: str = "sample"
    fix_model: bool = False
    grad_sample_mode: str = "ghost"


@dataclass
class DPClientSchema(_DPSchemaBase):
    """``dp=client``: client-level DP-FedAvg; ``max_grad_norm`` is the update clip norm S.

    ``distributed`` splits the noise across the selected clients (needs secure
    aggregation); ``poisson_sampling`` states that clients are selected independently with
    the federation's client sampling rate. With distributed noise, budgets and target
    calibration assume the worst case: only ``min_survivors`` of the selected clients
    survive (default: 1, i.e. any sum may be released; a sum of fewer is withheld) and
    ``max_colluding_clients`` of them share their noise with the server.
    """

    name: str = "client"
    distributed: bool = False
    min_survivors: int | None = None
    max_colluding_clients: int = 0


@dataclass(frozen=True, kw_only=True)
class DPSetup:
    """What the runner needs from the ``dp`` group, validated.

    ``config`` is ``None`` for ``mode="off"``. ``distributed`` only applies to
    ``mode="client"``; ``fix_model`` and ``grad_sample_mode`` only to ``mode="sample"``.
    ``audit`` is ``"none"`` or ``"one_run"`` (with ``audit_canaries`` canaries and the
    bound's ``audit_confidence``).
    """

    mode: DPMode
    config: DPConfig | None
    distributed: bool = False
    min_survivors: int | None = None
    max_colluding_clients: int = 0
    fix_model: bool = False
    grad_sample_mode: str = "ghost"
    audit: str = "none"
    audit_canaries: int = 1000
    audit_confidence: float = 0.95


def _audit_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Validated ``dp.audit``, ``dp.audit_canaries``, ``dp.audit_confidence``."""
    audit = values.get("audit", "none")
    if audit not in AUDIT_METHODS:
        raise InvalidDPConfigError(f"dp.audit must be one of {AUDIT_METHODS}, got {audit!r}")
    canaries = values.get("audit_canaries", 1000)
    if isinstance(canaries, bool) or not isinstance(canaries, int) or canaries < 1:
        raise InvalidDPConfigError(f"dp.audit_canaries must be an int >= 1, got {canaries!r}")
    confidence = values.get("audit_confidence", 0.95)
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0 < confidence < 1
    ):
        raise InvalidDPConfigError(f"dp.audit_confidence must be in (0, 1), got {confidence!r}")
    return {"audit": audit, "audit_canaries": canaries, "audit_confidence": float(confidence)}


def register_configs(store: ConfigStore | None = None) -> None:
    """Register every ``dp`` option in Hydra's ConfigStore."""
    store = store or ConfigStore.instance()
    store.store(group="dp", name="off", node=DPOffSchema)
    store.store(group="dp", name="sample", node=DPSampleSchema)
    store.store(group="dp", name="client", node=DPClientSchema)


def _as_mapping(schema: Any) -> dict[str, Any]:
    if isinstance(schema, DictConfig):
        schema = OmegaConf.to_container(schema, resolve=True)
    if isinstance(schema, dict):
        return dict(schema)
    if isinstance(schema, DPOffSchema | DPSampleSchema | DPClientSchema):
        return dict(vars(schema))
    raise InvalidDPConfigError(f"dp must be a dp schema or mapping, got {type(schema).__name__}")


_CONFIG_FIELDS = (
    "noise_multiplier",
    "target_epsilon",
    "max_grad_norm",
    "delta",
    "accountant",
    "epsilon_budget",
    "poisson_sampling",
    "secure_mode",
    "allow_large_delta",
)


def to_dp_setup(schema: Any) -> DPSetup:
    """Validate a ``dp`` schema (dataclass, DictConfig or dict) and convert it.

    Raises :class:`InvalidDPConfigError` whose message starts with the offending override
    name, e.g. ``dp.noise_multiplier must be > 0 and finite, got -1``.
    """
    values = _as_mapping(schema)
    mode = values.get("name")
    if mode == "off":
        return DPSetup(mode="off", config=None)
    if mode not in ("sample", "client"):
        raise InvalidDPConfigError(f"dp.name must be one of off, sample, client, got {mode!r}")
    allowed = set(vars(DPSampleSchema() if mode == "sample" else DPClientSchema()))
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise InvalidDPConfigError(f"dp={mode} has unknown field(s): dp.{', dp.'.join(unknown)}")
    if (values.get("noise_multiplier") is None) == (values.get("target_epsilon") is None):
        raise InvalidDPConfigError(
            f"dp={mode} needs exactly one of dp.noise_multiplier and dp.target_epsilon, got "
            f"dp.noise_multiplier={values.get('noise_multiplier')!r}, "
            f"dp.target_epsilon={values.get('target_epsilon')!r}"
        )
    kwargs = {name: values[name] for name in _CONFIG_FIELDS if name in values}
    try:
        config = DPConfig(**kwargs)
    except InvalidDPConfigError as exc:  # keep the named subclass (e.g. unsound accountant)
        raise type(exc)(f"dp.{exc}") from exc
    if mode == "client":
        distributed = values.get("distributed", False)
        if not isinstance(distributed, bool):
            raise InvalidDPConfigError(f"dp.distributed must be a bool, got {distributed!r}")
        min_survivors = values.get("min_survivors")
        if min_survivors is not None and (
            isinstance(min_survivors, bool)
            or not isinstance(min_survivors, int)
            or min_survivors < 1
        ):
            raise InvalidDPConfigError(
                f"dp.min_survivors must be an int >= 1 or null, got {min_survivors!r}"
            )
        colluding = values.get("max_colluding_clients", 0)
        if isinstance(colluding, bool) or not isinstance(colluding, int) or colluding < 0:
            raise InvalidDPConfigError(
                f"dp.max_colluding_clients must be an int >= 0, got {colluding!r}"
            )
        return DPSetup(
            mode="client",
            config=config,
            distributed=distributed,
            min_survivors=min_survivors,
            max_colluding_clients=colluding,
            **_audit_fields(values),
        )
    fix_model = values.get("fix_model", False)
    if not isinstance(fix_model, bool):
        raise InvalidDPConfigError(f"dp.fix_model must be a bool, got {fix_model!r}")
    grad_sample_mode = values.get("grad_sample_mode", "ghost")
    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise InvalidDPConfigError(
            f"dp.grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}"
        )
    return DPSetup(
        mode="sample",
        config=config,
        fix_model=fix_model,
        grad_sample_mode=grad_sample_mode,
        **_audit_fields(values),
    )


def to_dp_config(schema: Any) -> DPConfig | None:
    """The validated :class:`DPConfig` of a ``dp`` schema (``None`` for ``dp=off``)."""
    return to_dp_setup(schema).config
