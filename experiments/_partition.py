"""Split a labelled sample set across K clients: IID, Dirichlet label skew, quantity skew.

Every partitioner returns one sorted index array per client; together they cover every
sample exactly once. Randomness comes only from the ``numpy.random.Generator`` passed in,
so a partition is reproducible from the run seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from experiments._errors import PartitionError

MAX_TRIES = 1000


def _check(labels: np.ndarray, n_clients: int, min_size: int) -> None:
    if n_clients < 1:
        raise PartitionError(f"n_clients must be >= 1, got {n_clients}")
    if len(labels) < n_clients * min_size:
        raise PartitionError(
            f"{len(labels)} samples cannot give {n_clients} clients >= {min_size} samples each "
            "(lower federation.clients or use a larger dataset)"
        )


def iid_partition(
    labels: np.ndarray, n_clients: int, rng: np.random.Generator, *, min_size: int = 1
) -> list[np.ndarray]:
    """Shuffle and deal samples into ``n_clients`` near-equal shares."""
    _check(labels, n_clients, min_size)
    order = rng.permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, n_clients)]


def dirichlet_partition(
    labels: np.ndarray,
    n_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Label skew: each class is split across clients with proportions ~ Dirichlet(alpha).

    Small ``alpha`` concentrates each class on few clients; large ``alpha`` tends to IID.
    Draws are repeated until every client holds at least ``min_size`` samples.
    """
    _check(labels, n_clients, min_size)
    if alpha <= 0:
        raise PartitionError(f"alpha must be > 0, got {alpha}")
    classes = np.unique(labels)
    for _ in range(MAX_TRIES):
        shares: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for label in classes:
            members = rng.permutation(np.flatnonzero(labels == label))
            proportions = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for client, part in enumerate(np.split(members, cuts)):
                shares[client].append(part)
        parts = [np.sort(np.concatenate(share)) for share in shares]
        if min(len(part) for part in parts) >= min_size:
            return parts
    raise PartitionError(
        f"federation.alpha={alpha} gives some client < {min_size} samples in {MAX_TRIES} "
        "draws; raise federation.alpha or lower federation.clients"
    )


def quantity_partition(
    labels: np.ndarray,
    n_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Quantity skew: client sizes ~ Dirichlet(alpha) (each >= ``min_size``), labels IID."""
    _check(labels, n_clients, min_size)
    if alpha <= 0:
        raise PartitionError(f"alpha must be > 0, got {alpha}")
    n = len(labels)
    spare = n - n_clients * min_size
    proportions = rng.dirichlet(np.full(n_clients, alpha))
    extra = np.floor(proportions * spare).astype(int)
    # Hand the rounding remainder to the clients with the largest fractional parts.
    remainder = spare - int(extra.sum())
    fractional = proportions * spare - extra
    extra[np.argsort(-fractional, kind="stable")[:remainder]] += 1
    sizes = extra + min_size
    order = rng.permutation(n)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


Partitioner = Callable[..., list[np.ndarray]]

PARTITIONERS: dict[str, Partitioner] = {
    "iid": iid_partition,
    "dirichlet": dirichlet_partition,
    "quantity": quantity_partition,
}


def partition(
    name: str,
    labels: np.ndarray,
    n_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Partition with the named scheme (``iid`` ignores ``alpha``)."""
    if name not in PARTITIONERS:
        raise PartitionError(f"federation.partition must be one of {list(PARTITIONERS)}")
    if name == "iid":
        return iid_partition(labels, n_clients, rng, min_size=min_size)
    return PARTITIONERS[name](labels, n_clients, rng, alpha=alpha, min_size=min_size)


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    classes = np.unique(labels)
    overall = np.array([(labels == c).mean() for c in classes])
    distances = []
    for part in parts:
        local = np.array([(labels[part] == c).mean() for c in classes])
        distances.append(0.5 * np.abs(local - overall).sum())
    return float(np.mean(distances))
