"""Shared fixtures of the CKKS tests: one key holder per preset, built once per session."""

from __future__ import annotations

import numpy as np
import pytest

from secagg.ckks import CKKSClient, KeyHolder, RevealPolicy, aggregation_params


@pytest.fixture(scope="session")
def key_holder() -> KeyHolder:
    return KeyHolder(params=aggregation_params(), policy=RevealPolicy(min_clients=2))


@pytest.fixture(scope="session")
def public_context(key_holder: KeyHolder) -> bytes:
    return key_holder.public_context_bytes()


@pytest.fixture(scope="session")
def client(public_context: bytes) -> CKKSClient:
    return CKKSClient(public_context)


@pytest.fixture(scope="session")
def small_blobs(client: CKKSClient) -> tuple[np.ndarray, list[bytes]]:
    """Three client updates of 3000 values (two ciphertexts each) and their blobs."""
    rng = np.random.default_rng(7)
    updates = rng.uniform(-1.0, 1.0, size=(3, 3000))
    return updates, [client.protect(update) for update in updates]
