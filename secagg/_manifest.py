"""The round manifest: what the aggregator declares when it opens a round.

The manifest is canonical JSON (sorted keys, compact, ASCII), stored in the artifact store
under its keccak256 digest, and that digest is the ``config_digest`` the aggregator puts on
the ledger when it opens the round. It binds everything an auditor needs to re-check the
round without the code that ran it: the scheme and its public parameters (for CKKS the
digest of the public context, itself in the store), the model dimension, the selected
clients (ledger address, simulation id, FedAvg weight) and, per client, the DP-SGD steps
the round asks for, so that a privacy event claiming fewer steps is caught.

Under DP each client entry also commits the client's whole privacy policy
(:class:`PrivacyPolicy`: mechanism, sample rate, sigma with the calibration inputs that gave
it, clip norm, delta, accountant, Poisson flag, steps per round). The auditor requires every
committed privacy event to match it, so a client cannot re-derive a smaller epsilon from
parameters it chose itself (say, delta 0.5). A client without a policy (``dp=off``) has
none in the canonical bytes (the key is absent), so such manifests encode as before.
Under ``dp=client`` the manifest also commits the federation's policy and the head of the
federation's privacy-event chain up to the previous round (``federation_policy``,
``federation_event``): the ledger write that opens round r+1 commits the release of round r.

A manifest read back from the store is untrusted: :meth:`RoundManifest.from_bytes` parses
it under a size and nesting cap (:data:`MAX_MANIFEST_BYTES`, :data:`MAX_MANIFEST_DEPTH`),
and every manifest, parsed or built, is validated at construction: field types and ranges,
distinct clients, and for the masking scheme a complete, valid set of public parameters.
Anything else raises :class:`ManifestError`, so a bad declaration is the aggregator's
fault and never surfaces as an ``AttributeError`` in whoever reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dp._accounting import MECHANISMS
from dp._config import ACCOUNTANTS
from secagg._digest import Digest, keccak256
from secagg._errors import BlobFormatError
from secagg._safejson import UntrustedJSONError, loads_untrusted

MANIFEST_TAG = "secagg-fl/round-manifest/v1"
#: Largest manifest :meth:`RoundManifest.from_bytes` parses (about 100 bytes per client).
MAX_MANIFEST_BYTES = 16 * 2**20
#: Deepest nesting of arrays and objects a manifest may have (an honest one has 4).
MAX_MANIFEST_DEPTH = 16
_UINT64 = 2**64
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class ManifestError(BlobFormatError):
    """A round manifest is malformed or declares invalid parameters (names the field)."""


def _check_uint(name: str, value: object, *, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < _UINT64:
        raise ManifestError(
            f"manifest {name} must be an integer in [{low}, 2^64), got {value!r:.80}"
        )


def _check_scheme_config(scheme: str, config: Mapping[str, Any]) -> None:
    """The declared scheme's own checks of its public parameters (masking: all declared
    and valid). A name no scheme has is not refused here: recombining fails on it, which
    is how an auditor names the manifest at fault."""
    from secagg._errors import UnknownSchemeError
    from secagg._hydra import scheme_class

    try:
        declared = scheme_class(scheme)
    except UnknownSchemeError:
        return
    declared.check_manifest_config(config)


def _check_float(name: str, value: object, *, low: float, high: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low < value <= high
    ):
        raise ManifestError(f"manifest policy {name} must be in ({low}, {high}], got {value!r:.80}")


@dataclass(frozen=True, kw_only=True)
class PrivacyPolicy:
    """One client's committed privacy policy (every field an event must match).

    ``noise_multiplier`` is sigma as the client must run it; when it was calibrated, the
    inputs of the calibration (``target_epsilon`` over ``planned_steps``) are committed
    beside it (informative: the auditor checks events against sigma). ``steps`` is the number
    of steps one round runs (DP-SGD steps, or 1 for a client-level release).
    """

    mechanism: str
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str
    poisson_sampling: bool
    steps: int
    target_epsilon: float | None = None
    planned_steps: int | None = None

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ManifestError(
                f"manifest policy mechanism must be one of {MECHANISMS}, got {self.mechanism!r:.80}"
            )
        if self.accountant not in ACCOUNTANTS:
            raise ManifestError(
                f"manifest policy accountant must be one of {ACCOUNTANTS} (a sound one), "
                f"got {self.accountant!r:.80}"
            )
        _check_float("sample_rate", self.sample_rate, low=0.0, high=1.0)
        _check_float("noise_multiplier", self.noise_multiplier, low=0.0, high=math.inf)
        _check_float("max_grad_norm", self.max_grad_norm, low=0.0, high=math.inf)
        _check_float("delta", self.delta, low=0.0, high=1.0)
        if self.delta >= 1.0:
            raise ManifestError(f"manifest policy delta must be < 1, got {self.delta!r}")
        if not isinstance(self.poisson_sampling, bool):
            raise ManifestError("manifest policy poisson_sampling must be a boolean")
        _check_uint("policy steps", self.steps, low=1)
        if self.target_epsilon is not None:
            _check_float("target_epsilon", self.target_epsilon, low=0.0, high=math.inf)
        if self.planned_steps is not None:
            _check_uint("policy planned_steps", self.planned_steps, low=1)
        for name in ("sample_rate", "noise_multiplier", "max_grad_norm", "delta"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.target_epsilon is not None:
            object.__setattr__(self, "target_epsilon", float(self.target_epsilon))

    def to_dict(self) -> dict[str, Any]:
        """Canonical form: floats as their ``repr`` strings, absent values as null."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = repr(value) if isinstance(value, float) else value
        return out

    @classmethod
    def from_dict(cls, data: object) -> PrivacyPolicy:
        """Parse :meth:`to_dict`'s form; raises :class:`ManifestError` for anything else."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ManifestError(
                f"manifest policy must be an object with keys {sorted(names)}: {keys}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("sample_rate", "noise_multiplier", "max_grad_norm", "delta"):
                value = _float_text(value, what=f"policy {name}")
            elif name == "target_epsilon" and value is not None:
                value = _float_text(value, what="policy target_epsilon")
            elif name in ("steps",) or (name == "planned_steps" and value is not None):
                value = _exact_int(value)
            kwargs[name] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class ManifestClient:
    """One selected client as the manifest lists it (``policy`` None: no DP)."""

    client_id: int
    address: str
    weight: float
    expected_steps: int | None = None
    policy: PrivacyPolicy | None = None


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
    # dp=client: the federation's policy, and the head (hex digest) of its privacy-event
    # chain over the releases before this round (the event of round r is committed by the
    # manifest of the next round: it is accounted once round r's survivors are known).
    federation_policy: PrivacyPolicy | None = None
    federation_event: str | None = None

    def __post_init__(self) -> None:
        _check_uint("round", self.round_id)
        _check_uint("dim", self.dim, low=1)
        for name in ("scheme", "dp_mode"):
            if not isinstance(getattr(self, name), str):
                raise ManifestError(f"manifest {name} must be a string")
        if not isinstance(self.scheme_config, Mapping) or not all(
            isinstance(key, str) for key in self.scheme_config
        ):
            raise ManifestError("manifest scheme_config must be an object with string keys")
        if self.public_material is not None and not (
            isinstance(self.public_material, str) and _HEX_DIGEST.fullmatch(self.public_material)
        ):
            raise ManifestError("manifest public_material must be 64 lowercase hex digits")
        if not isinstance(self.clients, tuple) or not all(
            isinstance(c, ManifestClient) for c in self.clients
        ):
            raise ManifestError("manifest clients must be a tuple of ManifestClient")
        for client in self.clients:
            _check_uint("client id", client.client_id)
            if not isinstance(client.address, str) or not _ADDRESS.fullmatch(client.address):
                raise ManifestError(f"manifest client address {client.address!r} is malformed")
            weight = client.weight
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not math.isfinite(weight)
                or weight < 0
            ):
                raise ManifestError(f"manifest client weight must be finite and >= 0: {weight!r}")
            if client.expected_steps is not None:
                _check_uint("expected_steps", client.expected_steps)
            if client.policy is not None and not isinstance(client.policy, PrivacyPolicy):
                raise ManifestError("manifest client policy must be a PrivacyPolicy")
        if len({c.client_id for c in self.clients}) != len(self.clients):
            raise ManifestError("manifest lists a client id twice")
        if len({c.address.lower() for c in self.clients}) != len(self.clients):
            raise ManifestError("manifest lists a client address twice")
        _check_scheme_config(self.scheme, self.scheme_config)
        if self.federation_policy is not None and not isinstance(
            self.federation_policy, PrivacyPolicy
        ):
            raise ManifestError("manifest federation_policy must be a PrivacyPolicy")
        if self.federation_event is not None and not (
            isinstance(self.federation_event, str) and _HEX_DIGEST.fullmatch(self.federation_event)
        ):
            raise ManifestError("manifest federation_event must be 64 lowercase hex digits")

    def canonical_bytes(self) -> bytes:
        payload = {
            "tag": MANIFEST_TAG,
            "round": self.round_id,
            "scheme": self.scheme,
            "scheme_config": dict(self.scheme_config),
            "dim": self.dim,
            "clients": [_client_payload(c) for c in self.clients],
            "public_material": self.public_material,
            "dp_mode": self.dp_mode,
        }
        # Absent unless dp=client: manifests of the other modes encode as before.
        if self.federation_policy is not None:
            payload["federation_policy"] = self.federation_policy.to_dict()
        if self.federation_event is not None:
            payload["federation_event"] = self.federation_event
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
        """Parse (under the size and depth caps) and validate a stored manifest.

        Raises :class:`ManifestError` for anything but a valid manifest."""
        try:
            payload = loads_untrusted(
                data,
                max_bytes=MAX_MANIFEST_BYTES,
                max_depth=MAX_MANIFEST_DEPTH,
                what="round manifest",
            )
        except UntrustedJSONError as error:
            raise ManifestError(str(error)) from error
        if not isinstance(payload, dict) or payload.get("tag") != MANIFEST_TAG:
            tag = payload.get("tag") if isinstance(payload, dict) else None
            raise ManifestError(f"not a round manifest (tag {tag!r:.80})")
        try:
            clients = payload["clients"]
            if not isinstance(clients, list) or not all(isinstance(c, dict) for c in clients):
                raise ManifestError("manifest clients must be a list of objects")
            return cls(
                round_id=_exact_int(payload["round"]),
                scheme=payload["scheme"],
                scheme_config=payload["scheme_config"],
                dim=_exact_int(payload["dim"]),
                clients=tuple(
                    ManifestClient(
                        client_id=_exact_int(c["id"]),
                        address=c["address"],
                        weight=_float_text(c["weight"]),
                        expected_steps=None
                        if c["expected_steps"] is None
                        else _exact_int(c["expected_steps"]),
                        policy=PrivacyPolicy.from_dict(c["policy"]) if "policy" in c else None,
                    )
                    for c in clients
                ),
                public_material=payload["public_material"],
                dp_mode=payload["dp_mode"],
                federation_policy=PrivacyPolicy.from_dict(payload["federation_policy"])
                if "federation_policy" in payload
                else None,
                federation_event=payload.get("federation_event"),
            )
        except KeyError as error:
            raise ManifestError(f"round manifest lacks the field {error}") from error


def _client_payload(client: ManifestClient) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": client.client_id,
        "address": client.address,
        "weight": repr(float(client.weight)),
        "expected_steps": client.expected_steps,
    }
    if client.policy is not None:  # absent without DP: dp=off manifests encode as before
        payload["policy"] = client.policy.to_dict()
    return payload


def _exact_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"manifest holds {value!r:.80} where an integer belongs")
    return value


def _float_text(value: object, *, what: str = "weight") -> float:
    """A float as the manifest writes it: its ``repr``, as a string."""
    if not isinstance(value, str) or len(value) > 40:
        raise ManifestError(f"manifest {what} must be a float written as a string: {value!r:.80}")
    try:
        return float(value)
    except ValueError as error:
        raise ManifestError(f"manifest {what} is not a float: {value!r}") from error
