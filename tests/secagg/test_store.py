"""The content-addressed artifact store, including hostile contents (FIFOs, links, huge
files, stray names): a read never blocks and fails only with a named error."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg._digest import keccak256
from secagg._errors import CommitmentMismatchError
from secagg._store import (
    ArtifactConflictError,
    ArtifactNotFoundError,
    LocalDirectoryStore,
    MemoryStore,
    StoreConfigError,
    UnsafeArtifactError,
)


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


# --------------------------------------------------------------------- hostile store contents
def _name_of(data: bytes, store: LocalDirectoryStore):
    digest = keccak256(data)
    return digest, store.root / digest.hex()


def test_a_fifo_under_an_artifact_name_is_refused_without_blocking(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    digest, path = _name_of(b"blob", store)
    os.mkfifo(path)  # no writer ever opens it: a blocking read would wait forever
    with pytest.raises(UnsafeArtifactError, match="not a regular file"):
        store.get(digest)
    with pytest.raises(ArtifactConflictError):
        store.put(b"blob")


def test_a_symbolic_link_is_refused_even_to_the_right_bytes(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"blob")
    store = LocalDirectoryStore(tmp_path / "store")
    digest, path = _name_of(b"blob", store)
    path.symlink_to(outside)
    with pytest.raises(UnsafeArtifactError, match="symbolic link"):
        store.get(digest)
    (store.root / keccak256(b"dev").hex()).symlink_to("/dev/zero")
    with pytest.raises(UnsafeArtifactError, match="symbolic link"):
        store.get(keccak256(b"dev"))


def test_a_directory_under_an_artifact_name_is_refused(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    digest, path = _name_of(b"blob", store)
    path.mkdir()
    with pytest.raises(UnsafeArtifactError, match="not a regular file"):
        store.get(digest)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    digest, path = _name_of(b"blob", store)
    with path.open("wb") as handle:
        handle.truncate(2**40)  # sparse: one TiB that takes no disk
    with pytest.raises(UnsafeArtifactError, match="more than the cap"):
        store.get(digest)


def test_the_size_cap_is_configurable_and_per_read(tmp_path):
    store = LocalDirectoryStore(tmp_path, max_artifact_bytes=8)
    with pytest.raises(UnsafeArtifactError):
        store.put(b"123456789")
    digest = store.put(b"12345678")
    assert store.get(digest) == b"12345678"
    with pytest.raises(UnsafeArtifactError):
        store.get(digest, max_bytes=4)
    with pytest.raises(StoreConfigError):
        LocalDirectoryStore(tmp_path, max_artifact_bytes=0)


def test_stray_names_are_not_listed_as_digests(tmp_path):
    store = LocalDirectoryStore(tmp_path)
    digest = store.put(b"kept")
    (tmp_path / ("z" * 64)).write_bytes(b"not hex")
    (tmp_path / digest.hex().upper()).write_bytes(b"upper case")
    assert list(store.digests()) == [digest]


_KINDS = st.sampled_from(["file", "fifo", "dir", "link-in", "link-out", "dangling", "none"])


@settings(max_examples=40, deadline=None, database=None)
@given(kind=_KINDS, content=st.binary(max_size=64), cap=st.integers(1, 80))
def test_reads_never_block_and_fail_only_with_named_errors(kind, content, cap):
    with tempfile.TemporaryDirectory() as root:
        store = LocalDirectoryStore(Path(root) / "store", max_artifact_bytes=cap)
        digest = keccak256(b"expected")
        path = store.root / digest.hex()
        outside = Path(root) / "outside"
        outside.write_bytes(content)
        inside = store.root / "inside"
        inside.write_bytes(content)
        if kind == "file":
            path.write_bytes(content)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "link-in":
            path.symlink_to(inside)
        elif kind == "link-out":
            path.symlink_to(outside)
        elif kind == "dangling":
            path.symlink_to(Path(root) / "nowhere")
        try:
            data = store.get(digest)
        except ArtifactNotFoundError:
            assert kind == "none"
        except UnsafeArtifactError:
            assert kind != "none"
            assert kind != "file" or len(content) > cap
        except CommitmentMismatchError:
            assert kind == "file" and len(content) <= cap
        else:
            raise AssertionError(f"{kind} gave {data!r} for a digest it does not match")


def test_the_memory_store_keeps_the_same_rules():
    """``MemoryStore`` (chain=none's default): digests as names, immutability, the cap."""
    store = MemoryStore(max_artifact_bytes=8)
    digest = store.put(b"abc")
    assert digest == keccak256(b"abc") and digest in store and store.get(digest) == b"abc"
    assert store.put(b"abc") == digest and list(store.digests()) == [digest]
    with pytest.raises(ArtifactConflictError):
        store.put_named(digest, b"abd")
    with pytest.raises(UnsafeArtifactError):
        store.put(b"123456789")  # over the cap
    with pytest.raises(UnsafeArtifactError):
        store.get(digest, max_bytes=2)
    with pytest.raises(ArtifactNotFoundError):
        store.get(keccak256(b"absent"))
    with pytest.raises(StoreConfigError):
        MemoryStore(max_artifact_bytes=0)
