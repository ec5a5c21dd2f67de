"""Exceptions of the ``dp`` package: one root (:class:`DPError`) and named cases.

Cases that describe bad input also subclass :class:`ValueError`, so callers that only know
the built-in hierarchy still catch them.
"""

from __future__ import annotations

__all__ = [
    "DPError",
    "EventChainError",
    "InvalidDPConfigError",
    "NonFiniteLossError",
    "PrivacyBudgetExceededError",
    "SecureAggregationRequiredError",
    "SecureModeUnavailableError",
    "UnsoundAccountantError",
    "UnsupportedModelError",
]


class DPError(Exception):
    """Root of every error raised by the ``dp`` package."""


class InvalidDPConfigError(DPError, ValueError):
    """A privacy parameter is missing, out of range or inconsistent with the data."""


class UnsoundAccountantError(InvalidDPConfigError):
    """An accountant that can under-report epsilon (``gdp``) was asked to back a claim or a
    budget; it is a diagnostic only (:func:`dp.gdp_epsilon_diagnostic`)."""


class PrivacyBudgetExceededError(DPError):
    """The requested round would take a client (or the federation) past its epsilon budget.

    Raised before any training or noise is spent; the accountant is left unchanged.
    """


class UnsupportedModelError(DPError, ValueError):
    """The model has layers Opacus cannot compute per-sample gradients for (e.g. BatchNorm)."""


class NonFiniteLossError(DPError):
    """Training produced a NaN/inf loss; the round is discarded and nothing is accounted."""


class EventChainError(DPError, ValueError):
    """A sequence of privacy events is not one consistent, hash-linked history."""


class SecureAggregationRequiredError(DPError, ValueError):
    """Distributed DP noise was requested with an aggregator that sees individual updates."""


class SecureModeUnavailableError(DPError):
    """``secure_mode`` was requested but the cryptographically secure RNG is not installed."""
