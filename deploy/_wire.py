"""The versioned wire format of the messages between the sites of a deployment.

Every message is a :class:`WireMessage`: a type name (``secagg.v1.join``, ...), scalar
fields (int, float, str, bytes, bool) and float arrays. The format is independent of the
transport: the in-process transport passes the objects, the Flower transport maps the
type to a Flower message type (``query.secagg_v1_join``) and the fields to one
``ConfigRecord`` (``secagg``) and one ``ArrayRecord`` (``arrays``) of the message's
``RecordDict`` (docs/formats.md, "Deployment messages").

Blobs (CKKS ciphertexts, plain updates), manifests and privacy events travel as the bytes
the rest of the framework already writes (docs/formats.md); a receiver re-derives their
digests and checks them against the ledger, never trusting the sender's word.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from deploy._errors import WireFormatError

#: The wire format's version; a receiver refuses any other.
WIRE_VERSION: Final = 1

JOIN: Final = "secagg.v1.join"
TRAIN: Final = "secagg.v1.train"
REVEAL: Final = "secagg.v1.reveal"
RELEASE: Final = "secagg.v1.release"
EVALUATE: Final = "secagg.v1.evaluate"
#: Pairwise masking's stages (each carries one masking message, docs/formats.md 4 and 11).
MASK_ADVERTISE: Final = "secagg.v1.mask.advertise"
MASK_SHARE: Final = "secagg.v1.mask.share"
MASK_REBUT: Final = "secagg.v1.mask.rebut"
MASK_CONSISTENCY: Final = "secagg.v1.mask.consistency"
MASK_UNMASK: Final = "secagg.v1.mask.unmask"
#: A decryption committee's stages (deploy._committee, docs/formats.md "Committee messages").
COMMITTEE_KEYGEN: Final = "secagg.v1.committee.keygen"
COMMITTEE_SETUP: Final = "secagg.v1.committee.setup"
COMMITTEE_RELEASE: Final = "secagg.v1.committee.release"
COMMITTEE_COMBINE: Final = "secagg.v1.committee.combine"
#: Every request type, and the Flower category it travels under.
MESSAGE_TYPES: Final = {
    JOIN: "query",
    TRAIN: "train",
    REVEAL: "query",
    RELEASE: "query",
    EVALUATE: "evaluate",
    MASK_ADVERTISE: "query",
    MASK_SHARE: "query",
    MASK_REBUT: "query",
    MASK_CONSISTENCY: "query",
    MASK_UNMASK: "query",
    COMMITTEE_KEYGEN: "query",
    COMMITTEE_SETUP: "query",
    COMMITTEE_RELEASE: "query",
    COMMITTEE_COMBINE: "query",
}
#: The masking stages' types.
MASK_TYPES: Final = (MASK_ADVERTISE, MASK_SHARE, MASK_REBUT, MASK_CONSISTENCY, MASK_UNMASK)
#: The decryption committee's types.
COMMITTEE_TYPES: Final = (COMMITTEE_KEYGEN, COMMITTEE_SETUP, COMMITTEE_RELEASE, COMMITTEE_COMBINE)

Scalar = int | float | str | bytes | bool
#: Largest number of fields or arrays one message may carry.
MAX_ENTRIES: Final = 4096


def flower_action(message_type: str) -> str:
    """The Flower action name of a wire type: ``secagg.v1.join`` -> ``secagg_v1_join``."""
    if message_type not in MESSAGE_TYPES:
        raise WireFormatError(f"unknown message type {message_type!r}")
    return message_type.replace(".", "_")


def flower_message_type(message_type: str) -> str:
    """``<category>.<action>`` as Flower routes it (``query.secagg_v1_join``)."""
    return f"{MESSAGE_TYPES[message_type]}.{flower_action(message_type)}"


def wire_type_of(flower_type: str) -> str:
    """The wire type of a Flower message type; :class:`WireFormatError` when unknown."""
    for wire_type in MESSAGE_TYPES:
        if flower_message_type(wire_type) == flower_type:
            return wire_type
    raise WireFormatError(f"not a secagg message type: {flower_type!r}")


@dataclass(frozen=True)
class WireMessage:
    """One request or reply: its type, scalar ``fields`` and float ``arrays``."""

    type: str
    fields: Mapping[str, Scalar] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    version: int = WIRE_VERSION

    def __post_init__(self) -> None:
        if self.type not in MESSAGE_TYPES:
            raise WireFormatError(f"unknown message type {self.type!r}")
        if self.version != WIRE_VERSION:
            raise WireFormatError(
                f"{self.type}: wire version {self.version}, this site speaks {WIRE_VERSION}"
            )
        if len(self.fields) + len(self.arrays) > MAX_ENTRIES:
            raise WireFormatError(f"{self.type}: more than {MAX_ENTRIES} entries")
        for name, value in self.fields.items():
            if not isinstance(name, str) or not isinstance(value, Scalar):
                raise WireFormatError(f"{self.type}: field {name!r} is not a scalar")
            if isinstance(value, float) and not math.isfinite(value):
                raise WireFormatError(f"{self.type}: field {name!r} is not finite")
        for name, array in self.arrays.items():
            if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
                raise WireFormatError(f"{self.type}: array {name!r} is not a float array")

    def text(self, name: str) -> str:
        return self._get(name, str)  # type: ignore[return-value]

    def integer(self, name: str) -> int:
        value = self._get(name, int)
        if isinstance(value, bool):
            raise WireFormatError(f"{self.type}: field {name!r} must be an int")
        return value  # type: ignore[return-value]

    def number(self, name: str) -> float:
        value = self._get(name, (int, float))
        if isinstance(value, bool):
            raise WireFormatError(f"{self.type}: field {name!r} must be a number")
        return float(value)

    def blob(self, name: str) -> bytes:
        return self._get(name, bytes)  # type: ignore[return-value]

    def flag(self, name: str) -> bool:
        return self._get(name, bool)  # type: ignore[return-value]

    def array(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise WireFormatError(f"{self.type}: missing array {name!r}")
        return np.asarray(self.arrays[name])

    def _get(self, name: str, kind: Any) -> Scalar:
        if name not in self.fields:
            raise WireFormatError(f"{self.type}: missing field {name!r}")
        value = self.fields[name]
        if not isinstance(value, kind):
            raise WireFormatError(f"{self.type}: field {name!r} has the wrong type")
        return value


__all__ = [
    "COMMITTEE_COMBINE",
    "COMMITTEE_KEYGEN",
    "COMMITTEE_RELEASE",
    "COMMITTEE_SETUP",
    "COMMITTEE_TYPES",
    "EVALUATE",
    "JOIN",
    "MASK_ADVERTISE",
    "MASK_CONSISTENCY",
    "MASK_REBUT",
    "MASK_SHARE",
    "MASK_TYPES",
    "MASK_UNMASK",
    "MESSAGE_TYPES",
    "RELEASE",
    "REVEAL",
    "TRAIN",
    "WIRE_VERSION",
    "WireMessage",
    "flower_action",
    "flower_message_type",
    "wire_type_of",
]
