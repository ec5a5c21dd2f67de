"""``secagg data fetch``: downloads from a local HTTP server, verified and atomic; imports.

No test reaches the network: a ``http.server`` on 127.0.0.1 (a free port) serves copies of
the shared data files, tampered copies, or nothing (a closed port: connection refused).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from experiments._config import FederationConfig, HeartDiseaseConfig, MedMNISTConfig
from experiments._datasets import (
    HEART_DISEASE_SHA256,
    MEDMNIST_SHA256,
    load_heart_disease_data,
    load_medmnist_data,
    resolve_data_dir,
    sha256_file,
)
from experiments._errors import ChecksumError, DatasetNotFoundError
from experiments._fetch import (
    DATA_DIR_ENV,
    DATASET_SOURCES,
    DataFileSource,
    FetchError,
    cache_dir,
    data_root,
    fetch_dataset,
    import_dataset,
    verify_file,
)
from secagg.cli import main as secagg_main


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """Start a file server on 127.0.0.1 for a folder; returns its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def _serve(folder: Path) -> str:
        server = ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield _serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL whose port nothing listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def mirror_dir(heart_dir: Path, medmnist_dir: Path, tmp_path: Path) -> Path:
    """A flat folder holding copies of every shared data file, as a mirror would."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in HEART_DISEASE_SHA256:
        shutil.copy(heart_dir / name, folder / name)
    for subset in MEDMNIST_SHA256:
        shutil.copy(medmnist_dir / f"{subset}.npz", folder / f"{subset}.npz")
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_fetch_downloads_verifies_and_the_loader_finds_it(
    mirror_dir: Path,
    serve: Callable[[Path], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "root"
    files = fetch_dataset("heart_disease", root=root, mirror=serve(mirror_dir))
    folder = root / "heart_disease"
    assert [f.path for f in files] == [folder / name for name in HEART_DISEASE_SHA256]
    for item in files:
        assert item.sha256 == HEART_DISEASE_SHA256[item.path.name] == sha256_file(item.path)
    assert _leftovers(folder) == []
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    data = load_heart_disease_data(
        HeartDiseaseConfig(), FederationConfig(clients=4), np.random.default_rng(0)
    )
    assert len(data.clients) == 4


def test_cli_fetches_medmnist_into_the_cache_by_default(
    mirror_dir: Path,
    serve: Callable[[Path], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = serve(mirror_dir)
    assert secagg_main(["data", "fetch", "breastmnist", "--mirror", url]) == 0
    target = tmp_path / "cache" / "secagg-fl" / "medmnist" / "breastmnist.npz"
    assert sha256_file(target) == MEDMNIST_SHA256["breastmnist"]
    assert str(target) in capsys.readouterr().out
    # The loader now finds it in the cache, with nothing configured.
    assert resolve_data_dir(None, "medmnist", "") == target.parent
    data = load_medmnist_data(
        MedMNISTConfig(subset="breastmnist"), FederationConfig(clients=2), np.random.default_rng(0)
    )
    assert len(data.pooled_test) == 156


def test_checksum_mismatch_keeps_nothing_and_names_the_file(
    mirror_dir: Path,
    serve: Callable[[Path], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tampered = mirror_dir / "processed.va.data"
    tampered.write_text(tampered.read_text().replace("63", "64", 1))
    url = serve(mirror_dir)
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match=r"processed\.va\.data"):
        fetch_dataset("heart_disease", root=root, mirror=url)
    folder = root / "heart_disease"
    assert not (folder / "processed.va.data").exists()
    assert _leftovers(folder) == []
    assert secagg_main(["data", "fetch", "heart_disease", "--mirror", url, "--dir", str(root)]) == 2
    error = capsys.readouterr().err
    assert "FAILED" in error and "processed.va.data" in error and "md5" in error


def test_a_tampered_file_in_place_is_replaced_by_a_verified_download(
    mirror_dir: Path, serve: Callable[[Path], str], tmp_path: Path
) -> None:
    folder = tmp_path / "root" / "medmnist"
    folder.mkdir(parents=True)
    (folder / "breastmnist.npz").write_bytes(b"not the data")
    fetch_dataset("breastmnist", root=tmp_path / "root", mirror=serve(mirror_dir))
    assert sha256_file(folder / "breastmnist.npz") == MEDMNIST_SHA256["breastmnist"]


def test_connection_refused_is_a_named_error_with_the_offline_remedy(
    refused_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_dataset("pneumoniamnist", root=tmp_path, mirror=refused_url)
    message = str(caught.value)
    assert "pneumoniamnist.npz" in message and "cannot reach" in message
    assert "--from DIR" in message
    assert not (tmp_path / "medmnist" / "pneumoniamnist.npz").exists()
    argv = ["data", "fetch", "pneumoniamnist", "--mirror", refused_url, "--dir", str(tmp_path)]
    assert secagg_main(argv) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_http_error_is_a_named_error(serve: Callable[[Path], str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_dataset("breastmnist", root=tmp_path / "root", mirror=serve(empty))


def test_verified_files_in_place_need_no_network(
    mirror_dir: Path, serve: Callable[[Path], str], refused_url: str, tmp_path: Path
) -> None:
    fetch_dataset("heart_disease", root=tmp_path, mirror=serve(mirror_dir))
    again = fetch_dataset("heart_disease", root=tmp_path, mirror=refused_url)
    assert {item.origin for item in again} == {"already present"}
    with pytest.raises(FetchError):
        fetch_dataset("heart_disease", root=tmp_path, mirror=refused_url, force=True)


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_import_from_a_folder_the_user_has(
    mirror_dir: Path, heart_dir: Path, tmp_path: Path, layout: str
) -> None:
    source = mirror_dir if layout == "flat" else heart_dir.parent
    files = import_dataset("heart_disease", source, root=tmp_path / "root")
    for item in files:
        assert item.path.parent == tmp_path / "root" / "heart_disease"
        assert sha256_file(item.path) == HEART_DISEASE_SHA256[item.path.name]


def test_import_names_a_missing_or_tampered_file(
    mirror_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mirror_dir / "processed.hungarian.data").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"processed\.hungarian\.data"):
        import_dataset("heart_disease", mirror_dir, root=tmp_path / "root")
    assert not (tmp_path / "root" / "heart_disease").exists()  # nothing half-imported
    npz = mirror_dir / "breastmnist.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    argv = ["data", "fetch", "breastmnist", "--from", str(mirror_dir), "--dir", str(tmp_path)]
    assert secagg_main(argv) == 2
    assert "breastmnist.npz" in capsys.readouterr().err


def test_unknown_dataset_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert secagg_main(["data", "fetch", "mnist", "--mirror", "http://127.0.0.1:9"]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err


def test_published_md5_or_accepted_sha256_each_suffice(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"published bytes")
    md5 = hashlib.md5(b"published bytes").hexdigest()
    sha256 = hashlib.sha256(b"published bytes").hexdigest()
    urls = ("http://127.0.0.1:9/file.bin",)
    assert verify_file(path, DataFileSource("file.bin", urls, md5=(md5,))) == sha256
    assert verify_file(path, DataFileSource("file.bin", urls, sha256=(sha256,))) == sha256
    with pytest.raises(ChecksumError, match="match no known version"):
        verify_file(path, DataFileSource("file.bin", urls, md5=("0" * 32,), sha256=("0" * 64,)))


def test_lookup_order_config_then_environment_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = tmp_path / "xdg" / "secagg-fl" / "heart_disease"
    cached.mkdir(parents=True)
    assert cache_dir() == tmp_path / "xdg" / "secagg-fl" == data_root()
    assert resolve_data_dir(None, "heart_disease", "") == cached
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(None, "heart_disease", "") == tmp_path / "env" / "heart_disease"
    assert data_root() == tmp_path / "env"
    assert resolve_data_dir(str(tmp_path / "cfg"), "heart_disease", "") == tmp_path / "cfg"
    assert data_root(tmp_path / "cli") == tmp_path / "cli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "secagg-fl"


def test_every_source_pins_an_official_url_and_a_checksum() -> None:
    for source in DATASET_SOURCES.values():
        for spec in source.files:
            assert all(url.startswith("https://") for url in spec.urls)
            assert spec.md5 and spec.sha256
