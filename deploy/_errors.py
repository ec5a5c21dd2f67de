"""Errors of the deployment layer, under the framework's root :class:`SecAggError`."""

from __future__ import annotations

from secagg import SecAggError


class DeploymentError(SecAggError):
    """A site or the round driver cannot go on (bad settings, a site that misbehaves)."""


class WireFormatError(DeploymentError, ValueError):
    """A message does not follow the wire format (docs/formats.md, "Deployment messages")."""


class SettingsError(DeploymentError, ValueError):
    """A deployment setting (run config, node config) is missing or out of range."""
