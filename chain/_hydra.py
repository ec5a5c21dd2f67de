"""Hydra schemas of the ``chain`` config group (registered in Hydra's ConfigStore)."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class ChainNoneSchema:
    """``chain=none``: no ledger."""

    name: str = "none"


def register_configs(store: ConfigStore | None = None) -> None:
    """Register every ``chain`` option in Hydra's ConfigStore."""
    store = store or ConfigStore.instance()
    store.store(group="chain", name="none", node=ChainNoneSchema)
