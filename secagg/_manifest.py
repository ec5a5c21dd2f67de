"""The round manifest: what the aggregator declares when it opens a round.

The manifest is canonical JSON (sorted keys, compact, ASCII), stored in the artifact store
under its keccak256 digest, and that digest is the ``config_digest`` the aggregator puts on
the ledger when it opens the round. It binds everything an auditor needs to re-check the
round without the code that ran it: the scheme and its public parameters (for CKKS the
digest of the public context, itself in the store), the model dimension, the selected
clients (ledger address, simulation id, FedAvg weight) and, per client, the DP-SGD steps
the round asks for, so that a privacy event claiming fewer steps is caught.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secagg._digest import Digest, keccak256
from secagg._errors import BlobFormatError

MANIFEST_TAG = "secagg-fl/round-manifest/v1"


@dataclass(frozen=True)
class ManifestClient:
    """One selected client as the manifest lists it."""

    client_id: int
    address: str
    weight: float
    expected_steps: int | None = None


@dataclass(frozen=True)
class RoundManifest:
    """Everything declared at ``open_round`` (see the module docstring)."""

    round_id: int
    scheme: str
    scheme_config: Mapping[str, Any]
    dim: int
    clients: tuple[ManifestClient, ...]
    public_material: str | None = None  # hex digest of e.g. the CKKS public context
    dp_mode: str = "off"

    def canonical_bytes(self) -> bytes:
        payload = {
            "tag": MANIFEST_TAG,
            "round": self.round_id,
            "scheme": self.scheme,
            "scheme_config": dict(self.scheme_config),
            "dim": self.dim,
            "clients": [
                {
                    "id": c.client_id,
                    "address": c.address,
                    "weight": repr(float(c.weight)),
                    "expected_steps": c.expected_steps,
                }
                for c in self.clients
            ],
            "public_material": self.public_material,
            "dp_mode": self.dp_mode,
        }
        return json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()

    def digest(self) -> Digest:
        return keccak256(self.canonical_bytes())

    @functools.cached_property
    def _by_address(self) -> dict[str, ManifestClient]:
        return {client.address.lower(): client for client in self.clients}

    def client_by_address(self, address: str) -> ManifestClient | None:
        return self._by_address.get(address.lower())

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundManifest:
        try:
            payload = json.loads(data.decode("ascii"))
            if payload.get("tag") != MANIFEST_TAG:
                raise BlobFormatError(f"not a round manifest (tag {payload.get('tag')!r})")
            return cls(
                round_id=int(payload["round"]),
                scheme=str(payload["scheme"]),
                scheme_config=dict(payload["scheme_config"]),
                dim=int(payload["dim"]),
                clients=tuple(
                    ManifestClient(
                        client_id=int(c["id"]),
                        address=str(c["address"]),
                        weight=float(c["weight"]),
                        expected_steps=None
                        if c["expected_steps"] is None
                        else int(c["expected_steps"]),
                    )
                    for c in payload["clients"]
                ),
                public_material=payload["public_material"],
                dp_mode=str(payload["dp_mode"]),
            )
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            if isinstance(error, BlobFormatError):
                raise
            raise BlobFormatError(f"malformed round manifest: {error}") from error
