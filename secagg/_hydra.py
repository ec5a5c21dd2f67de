"""Hydra schemas of the ``secagg`` config group, and the name -> scheme registry.

This module is the one place that maps scheme names to code: :data:`SCHEMES` (name ->
Hydra schema and builder) for the runner, and :func:`scheme_class` (name -> scheme class)
for code that sees only a round manifest and asks the scheme what it declares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

from secagg._errors import UnknownSchemeError
from secagg._scheme import PlainScheme, ProtectionScheme
from secagg.ckks import CKKSSchema, CKKSScheme, build_ckks_scheme
from secagg.masking import MaskingSchema, MaskingScheme, build_masking_scheme


@dataclass
class PlainSchema:
    """``secagg=plain``: no protection (the aggregator sees each update)."""

    name: str = "plain"


def _build_plain(schema: Any) -> ProtectionScheme:
    return PlainScheme()


# (scheme class, schema dataclass, factory from a schema instance to a scheme)
_REGISTRY: tuple[tuple[type[ProtectionScheme], type, Callable[[Any], ProtectionScheme]], ...] = (
    (PlainScheme, PlainSchema, _build_plain),
    (CKKSScheme, CKKSSchema, build_ckks_scheme),
    (MaskingScheme, MaskingSchema, build_masking_scheme),
)

# name -> (schema dataclass, factory from a schema instance to a scheme)
SCHEMES: dict[str, tuple[type, Callable[[Any], ProtectionScheme]]] = {
    cls.name: (schema, factory) for cls, schema, factory in _REGISTRY
}
_CLASSES: dict[str, type[ProtectionScheme]] = {cls.name: cls for cls, _, _ in _REGISTRY}


def scheme_class(name: object) -> type[ProtectionScheme]:
    """The registered scheme class named ``name`` (a config's ``secagg.name`` or a round
    manifest's ``scheme``); :class:`~secagg._errors.UnknownSchemeError` for any other."""
    if not isinstance(name, str) or name not in _CLASSES:
        raise UnknownSchemeError(f"unknown scheme {name!r:.80} (registered: {sorted(_CLASSES)})")
    return _CLASSES[name]


# The runner's defaults where they differ from the library's: the hardened run decrypts with
# a committee of 3, any 2 of which release a sum (no single key holder); measured within
# 1.5x of a single key holder's round time (README). ``secagg.committee_size=1
# secagg.committee_threshold=1`` restores the single key holder.
RUN_DEFAULTS: dict[str, Any] = {"ckks": CKKSSchema(committee_size=3, committee_threshold=2)}


def build_scheme(schema: Any) -> ProtectionScheme:
    """Build the protection scheme a ``secagg`` schema instance names."""
    _, factory = SCHEMES[schema.name]
    return factory(schema)


def register_configs(store: ConfigStore | None = None) -> None:
    """Register every ``secagg`` option in Hydra's ConfigStore."""
    store = store or ConfigStore.instance()
    for name, (schema, _) in SCHEMES.items():
        store.store(group="secagg", name=name, node=RUN_DEFAULTS.get(name, schema))
