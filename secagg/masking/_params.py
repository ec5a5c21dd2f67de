"""Public parameters of the masking scheme, and the per-round plan derived from them.

:class:`MaskingParams` is what a deployment configures (frozen, validated at construction,
each error names its field). :func:`plan_round` turns it and the round's client list into a
:class:`RoundPlan`: degree ``k``, threshold ``t``, quantization scale, the neighbour graph
and a digest of all of it that every message carries, so a message made under other
parameters is rejected.

Threat model: the server is honest-but-curious; at most ``max_corrupt_fraction`` of the
clients collude with it; at most ``max_dropout_fraction`` drop out; dropouts and corruption
do not depend on the (public, pseudorandom) neighbour graph. The server then learns only
the sum of the included clients' quantized updates. Authenticated rounds (clients with
ledger accounts) drop the first assumption: see :attr:`RoundPlan.consistency_threshold`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from secagg._digest import keccak256
from secagg._errors import DuplicateClientError, InsufficientClientsError
from secagg.masking._constants import LABEL_GRAPH, LABEL_PARAMS, MAX_CLIENT_ID
from secagg.masking._errors import MaskingParameterError, WeakGraphError
from secagg.masking._graph import (
    build_graph,
    connectivity_ok,
    correctness_ok,
    derive_degree,
    security_ok,
    smallest_threshold,
)
from secagg.masking._quantize import check_room, max_scale

GRAPH_KINDS = ("sparse", "complete")


@dataclass(frozen=True, kw_only=True)
class MaskingParams:
    """Parameters of pairwise-masking secure aggregation (SecAgg / SecAgg+).

    Attributes:
        bits: modulus exponent ``b`` of Z_(2^b), in [8, 32].
        clip_range: each (weighted) update coordinate is clipped to [-clip_range, clip_range].
        scale: quantization steps per unit; ``None`` = the largest that leaves room for the
            sum of n clients in Z_(2^b).
        threshold: Shamir threshold ``t``: ``None`` = derived (see ``_graph.py``), a
            fraction in (0.5, 1] of the degree ``k``, or a count in (k/2, k].
        graph: ``"sparse"`` (SecAgg+ k-regular graph) or ``"complete"`` (SecAgg).
        neighbours: degree ``k`` of the sparse graph (even); ``None`` = derived.
        max_corrupt_fraction: clients that may collude with the server, in [0, 0.5).
        max_dropout_fraction: clients that may drop out during a round, in [0, 0.9].
        security_bits: statistical security parameter sigma, in [16, 128].
        correctness_bits: failure probability bound 2^-eta of recovery, in [1, 64].
    """

    bits: int = 32
    clip_range: float = 1.0
    scale: float | None = None
    threshold: float | int | None = None
    graph: str = "sparse"
    neighbours: int | None = None
    max_corrupt_fraction: float = 0.1
    max_dropout_fraction: float = 0.1
    security_bits: int = 40
    correctness_bits: int = 20

    def __post_init__(self) -> None:
        _check_int("bits", self.bits, 8, 32)
        _check_positive_float("clip_range", self.clip_range)
        if self.scale is not None:
            _check_positive_float("scale", self.scale)
        if self.graph not in GRAPH_KINDS:
            raise MaskingParameterError(f"graph must be one of {GRAPH_KINDS}, got {self.graph!r}")
        if self.neighbours is not None:
            _check_int("neighbours", self.neighbours, 2, 2**31)
            if self.neighbours % 2:
                raise MaskingParameterError(
                    f"neighbours must be even (a Harary graph), got {self.neighbours}"
                )
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
                raise MaskingParameterError(
                    f"threshold must be null, a fraction or a count, got {self.threshold!r}"
                )
            value = float(self.threshold)
            if value <= 1.0:
                if not 0.5 < value <= 1.0:
                    raise MaskingParameterError(
                        f"threshold as a fraction must be in (0.5, 1], got {self.threshold}"
                    )
            elif value != math.floor(value):
                raise MaskingParameterError(
                    f"threshold above 1 is a count and must be an integer, got {self.threshold}"
                )
        _check_fraction("max_corrupt_fraction", self.max_corrupt_fraction, 0.0, 0.5, True)
        _check_fraction("max_dropout_fraction", self.max_dropout_fraction, 0.0, 0.9, False)
        _check_int("security_bits", self.security_bits, 16, 128)
        _check_int("correctness_bits", self.correctness_bits, 1, 64)

    @classmethod
    def from_schema(cls, schema: Any) -> MaskingParams:
        """Build from a Hydra ``MaskingSchema`` (or any object with the same attributes)."""
        names = [item.name for item in dataclasses.fields(cls)]
        return cls(**{name: getattr(schema, name) for name in names})


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MaskingParameterError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_positive_float(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise MaskingParameterError(f"{name} must be a finite number > 0, got {value!r}")


def _check_fraction(name: str, value: object, low: float, high: float, open_high: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = low <= number < high if open_high else low <= number <= high
    if not ok:
        bracket = ")" if open_high else "]"
        raise MaskingParameterError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RoundPlan:
    """Everything public about one round; all parties derive the same plan.

    ``consistency_threshold`` is how many clients must sign one survivor set before any
    client of an authenticated round reveals a share: ``max(t, floor((n + C) / 2) + 1)``
    with ``C = floor(max_corrupt_fraction * n)``. Two different sets can then never both
    collect it (their signers would number more than ``n + C``, and honest clients sign
    once), so every honest client that answers the unmask stage answers for the same set.
    """

    round_id: int
    client_ids: tuple[int, ...]
    dim: int
    bits: int
    clip_range: float
    scale: float
    degree: int
    threshold: int
    consistency_threshold: int
    complete: bool
    params_digest: bytes
    neighbours: dict[int, frozenset[int]] = field(repr=False, compare=False)

    @property
    def modulus_mask(self) -> int:
        """``2^bits - 1``."""
        return 2**self.bits - 1


def _count(fraction: float, n: int) -> int:
    """floor(fraction * n), immune to binary rounding (0.29 * 100 is 29, not 28)."""
    return math.floor(round(fraction * n, 9))


def _resolve_threshold(params: MaskingParams, degree: int) -> int:
    if params.threshold is None:
        raise MaskingParameterError("threshold is not set")
    value = float(params.threshold)
    threshold = math.ceil(value * degree) if value <= 1.0 else int(value)
    if not degree // 2 < threshold <= degree:
        raise MaskingParameterError(
            f"threshold={params.threshold} gives t={threshold}, but t must be in "
            f"({degree / 2}, {degree}] for k={degree} neighbours"
        )
    return threshold


def _choose_graph(params: MaskingParams, n: int) -> tuple[int, int, bool]:
    corrupt = _count(params.max_corrupt_fraction, n)
    dropped = _count(params.max_dropout_fraction, n)
    sparse_requested = params.graph == "sparse"
    complete = not sparse_requested
    degree = n - 1
    derived_threshold: int | None = None
    if sparse_requested and params.neighbours is not None and params.neighbours < n - 1:
        degree = params.neighbours
        if not connectivity_ok(
            n=n, degree=degree, removed=corrupt + dropped, security_bits=params.security_bits
        ):
            raise WeakGraphError(
                f"neighbours={degree} is too small for n={n}: the honest survivors may split "
                f"(connectivity bound above 2^-{params.security_bits})"
            )
    elif sparse_requested and params.neighbours is None:
        choice = derive_degree(
            n=n,
            corrupt=corrupt,
            dropped=dropped,
            security_bits=params.security_bits,
            correctness_bits=params.correctness_bits,
        )
        if choice is not None:
            degree, derived_threshold = choice.degree, choice.threshold
    if degree >= n - 1:
        degree, complete = n - 1, True
    if params.threshold is not None:
        threshold = _resolve_threshold(params, degree)
    elif derived_threshold is not None:
        threshold = derived_threshold
    else:
        found = smallest_threshold(
            n=n, degree=degree, corrupt=corrupt, security_bits=params.security_bits
        )
        threshold = degree if found is None else found
    if not security_ok(
        n=n,
        degree=degree,
        threshold=threshold,
        corrupt=corrupt,
        security_bits=params.security_bits,
    ):
        raise WeakGraphError(
            f"threshold t={threshold} with k={degree} neighbours does not resist "
            f"max_corrupt_fraction={params.max_corrupt_fraction} of n={n} clients "
            f"at 2^-{params.security_bits}"
        )
    if not correctness_ok(
        n=n,
        degree=degree,
        threshold=threshold,
        dropped=dropped,
        correctness_bits=params.correctness_bits,
    ):
        raise WeakGraphError(
            f"threshold t={threshold} with k={degree} neighbours cannot survive "
            f"max_dropout_fraction={params.max_dropout_fraction} of n={n} clients "
            f"(failure bound above 2^-{params.correctness_bits})"
        )
    return degree, threshold, complete


def plan_round(
    params: MaskingParams, *, round_id: int, client_ids: Sequence[int], dim: int
) -> RoundPlan:
    """Derive the public plan of one round (raises named errors for bad inputs)."""
    ids = tuple(sorted(client_ids))
    if len(set(ids)) != len(ids):
        raise DuplicateClientError(f"client_ids contains duplicates: {list(client_ids)}")
    for client in ids:
        if (
            isinstance(client, bool)
            or not isinstance(client, int)
            or not 0 <= client <= MAX_CLIENT_ID
        ):
            raise MaskingParameterError(f"client ids must be integers in [0, 2^63), got {client!r}")
    if not 0 <= round_id < 2**64:
        raise MaskingParameterError(f"round_id must be in [0, 2^64), got {round_id}")
    if not 0 < dim < 2**32:
        raise MaskingParameterError(f"dim must be in [1, 2^32), got {dim}")
    n = len(ids)
    if n < 3:
        raise InsufficientClientsError(
            f"pairwise masking needs at least 3 clients (a sum of 2 reveals both), got {n}"
        )
    degree, threshold, complete = _choose_graph(params, n)
    consistency_threshold = max(threshold, (n + _count(params.max_corrupt_fraction, n)) // 2 + 1)
    if params.scale is None:
        scale = max_scale(bits=params.bits, clip_range=params.clip_range, num_clients=n)
    else:
        scale = float(params.scale)
    check_room(bits=params.bits, clip_range=params.clip_range, scale=scale, num_clients=n)
    canonical = json.dumps(
        {
            "round_id": round_id,
            "client_ids": list(ids),
            "dim": dim,
            "bits": params.bits,
            "clip_range": float(params.clip_range).hex(),
            "scale": scale.hex(),
            "degree": degree,
            "threshold": threshold,
            "complete": complete,
            "max_corrupt_fraction": float(params.max_corrupt_fraction).hex(),
            "max_dropout_fraction": float(params.max_dropout_fraction).hex(),
            "security_bits": params.security_bits,
            "correctness_bits": params.correctness_bits,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    params_digest = bytes(keccak256(LABEL_PARAMS + canonical))
    graph_seed = bytes(keccak256(LABEL_GRAPH + params_digest))
    neighbours = build_graph(ids, degree=degree, complete=complete, seed=graph_seed)
    return RoundPlan(
        round_id=round_id,
        client_ids=ids,
        dim=dim,
        bits=params.bits,
        clip_range=float(params.clip_range),
        scale=scale,
        degree=degree,
        threshold=threshold,
        consistency_threshold=consistency_threshold,
        complete=complete,
        params_digest=params_digest,
        neighbours=neighbours,
    )


@dataclass
class MaskingSchema:
    """Hydra schema of ``secagg=masking`` (see :class:`MaskingParams` for each field)."""

    name: str = "masking"
    bits: int = 32
    clip_range: float = 1.0
    scale: float | None = None
    threshold: Any = None
    graph: str = "sparse"
    neighbours: int | None = None
    max_corrupt_fraction: float = 0.1
    max_dropout_fraction: float = 0.1
    security_bits: int = 40
    correctness_bits: int = 20
