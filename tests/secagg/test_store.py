"""The content-addressed artifact store."""

from __future__ import annotations

import threading

import pytest

from secagg._digest import keccak256
from secagg._errors import CommitmentMismatchError
from secagg._store import ArtifactConflictError, ArtifactNotFoundError, LocalDirectoryStore


def test_put_get_roundtrip_names_files_by_digest(tmp_path):
    store = LocalDirectoryStore(tmp_path / "store")
    digest = store.put(b"ciphertext bytes")
    assert digest == keccak256(b"ciphertext bytes")
    assert (tmp_path / "store" / digest.hex()).read_bytes() == b"ciphertext bytes"
    assert store.get(digest) == b"ciphertext bytes"
    assert digest in store
    assert list(store.digests()) == [digest]


def test_put_is_idempotent_for_identical_bytes(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    assert store.put(b"x") == store.put(b"x")
    assert len(list(store.digests())) == 1


def test_different_bytes_under_existing_name_are_refused(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    digest = store.put(b"original")
    with pytest.raises(ArtifactConflictError):
        store.put_named(digest, b"replacement")
    assert store.get(digest) == b"original"


def test_tampered_file_fails_the_digest_check(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    digest = store.put(b"original")
    (tmp_path / digest.hex()).write_bytes(b"tampered")
    with pytest.raises(CommitmentMismatchError):
        store.get(digest)


def test_missing_artifact_is_a_named_error(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    with pytest.raises(ArtifactNotFoundError):
        store.get(keccak256(b"never stored"))


def test_concurrent_writers_leave_one_complete_file_and_no_temporaries(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    payload = bytes(range(256)) * 4096
    threads = [threading.Thread(target=store.put, args=(payload,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [path.name for path in tmp_path.iterdir()]
    assert names == [keccak256(payload).hex()]
    assert store.get(keccak256(payload)) == payload
