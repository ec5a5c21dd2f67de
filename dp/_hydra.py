"""Hydra schemas of the ``dp`` config group (registered in Hydra's ConfigStore)."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class DPOffSchema:
    """``dp=off``: no differential privacy."""

    name: str = "off"


def register_configs(store: ConfigStore | None = None) -> None:
    """Register every ``dp`` option in Hydra's ConfigStore."""
    store = store or ConfigStore.instance()
    store.store(group="dp", name="off", node=DPOffSchema)
