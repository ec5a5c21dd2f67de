"""Get the real datasets: download from the official sources, or import local copies.

``secagg data fetch heart_disease|breastmnist|pneumoniamnist`` puts each file of a dataset
into ``<root>/<folder>/`` where the loaders look for it (:mod:`experiments._datasets`):
``root`` is ``--dir``, else ``$SECAGG_DATA_DIR``, else the per-user cache
``$XDG_CACHE_HOME/secagg-fl`` (``~/.cache/secagg-fl`` when unset). ``--from DIR`` imports
files the user already has instead of downloading.

Every file is checked before it is kept: its md5 against the checksum its publisher pins
(MedMNIST's ``INFO`` for the ``.npz`` files, FLamby's download script for the UCI Heart
Disease files), or its sha256 against a list of accepted copies (the UCI originals, and the
rebuilt MedMNIST copies some test machines carry, which are not byte-identical to the
official files). A download goes to a temporary file in the target folder, is verified,
fsynced and renamed into place, so a reader never sees a partial or unverified file.

Failures are named errors: :class:`FetchError` when a source cannot be reached (offline,
HTTP error, timeout), :class:`~experiments._errors.ChecksumError` when the bytes are not a
known version, :class:`~experiments._errors.DatasetNotFoundError` when ``--from`` lacks a
file. The command line prints what failed and exits 2.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments._errors import ChecksumError, DatasetNotFoundError, ExperimentError

DATA_DIR_ENV = "SECAGG_DATA_DIR"
CACHE_DIR_NAME = "secagg-fl"
DEFAULT_TIMEOUT_S = 60.0
MAX_FILE_BYTES = 256 * 1024 * 1024  # the largest file (pneumoniamnist.npz) is ~4 MB
USER_AGENT = "secagg-fl-data-fetch/1"

__all__ = [
    "DATASET_SOURCES",
    "DataFileSource",
    "DatasetSource",
    "FetchError",
    "FetchedFile",
    "cache_dir",
    "data_root",
    "fetch_dataset",
    "import_dataset",
    "main",
    "matches_known_version",
    "verify_file",
]


class FetchError(ExperimentError, OSError):
    """A dataset file could not be downloaded (offline, HTTP error, timeout, too large)."""


@dataclass(frozen=True)
class DataFileSource:
    """One file of a dataset: its name, where it is published and its accepted checksums."""

    name: str
    urls: tuple[str, ...]
    md5: tuple[str, ...] = ()  # published by the source (or its benchmark)
    sha256: tuple[str, ...] = ()  # accepted copies; the first is the one tests pin

    def __post_init__(self) -> None:
        if not self.urls or not (self.md5 or self.sha256):
            raise ValueError(f"{self.name}: a source needs a URL and at least one checksum")


@dataclass(frozen=True)
class DatasetSource:
    """A dataset the command line can fetch: the files of one loader's data folder."""

    name: str
    folder: str
    files: tuple[DataFileSource, ...]
    homepage: str
    licence: str


@dataclass(frozen=True)
class FetchedFile:
    """A verified file in place: where it is, its sha256, and where it came from."""

    path: Path
    sha256: str
    origin: str  # the URL or the imported path; "already present" when kept as it was


_UCI_HEART = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/"
# MedMNIST v2's 28x28 files: the current Zenodo record first (MedMNIST INFO >= 3.0), then the
# v2 record (INFO 2.x); the published md5 of each 28x28 file is the same in both.
_MEDMNIST_RECORDS = (
    "https://zenodo.org/records/10519652/files/",
    "https://zenodo.org/record/6496656/files/",
)


def _heart(center: str, md5: str, sha256: str) -> DataFileSource:
    name = f"processed.{center}.data"
    return DataFileSource(name=name, urls=(_UCI_HEART + name,), md5=(md5,), sha256=(sha256,))


def _medmnist(subset: str, md5: str, rebuilt_sha256: str) -> DatasetSource:
    name = f"{subset}.npz"
    return DatasetSource(
        name=subset,
        folder="medmnist",
        files=(
            DataFileSource(
                name=name,
                urls=tuple(f"{record}{name}?download=1" for record in _MEDMNIST_RECORDS),
                md5=(md5,),
                sha256=(rebuilt_sha256,),
            ),
        ),
        homepage="https://medmnist.com (Yang et al., Scientific Data 2023)",
        licence="CC BY 4.0",
    )


DATASET_SOURCES: dict[str, DatasetSource] = {
    # md5: FLamby's Fed-Heart-Disease download script; sha256: the same (byte-identical) files.
    "heart_disease": DatasetSource(
        name="heart_disease",
        folder="heart_disease",
        files=(
            _heart(
                "cleveland",
                "2d91a8ff69cfd9616aa47b59d6f843db",
                "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8",
            ),
            _heart(
                "hungarian",
                "22e96bee155b5973568101c93b3705f6",
                "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796",
            ),
            _heart(
                "switzerland",
                "9a87f7577310b3917730d06ba9349e20",
                "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314",
            ),
            _heart(
                "va",
                "4249d03ca7711e84f4444768c9426170",
                "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f",
            ),
        ),
        homepage="https://archive.ics.uci.edu/dataset/45/heart+disease "
        "(Janosi, Steinbrunn, Pfisterer, Detrano 1988)",
        licence="CC BY 4.0",
    ),
    # md5: MedMNIST's INFO; sha256: the rebuilt copies (same arrays' shapes, other bytes).
    "breastmnist": _medmnist(
        "breastmnist",
        "750601b1f35ba3300ea97c75c52ff8f6",
        "0f599db83baf94298d600419608e3ebebcc491d1e5d6031d2ffcf5629e919481",
    ),
    "pneumoniamnist": _medmnist(
        "pneumoniamnist",
        "28209eda62fecd6e6a2d98b1501bb15f",
        "9d78c87f97c1f593a05c61d60eda235a49cfd607d193dffa21e6e609e0dd0e96",
    ),
}
_FILES_BY_NAME: dict[str, DataFileSource] = {
    spec.name: spec for source in DATASET_SOURCES.values() for spec in source.files
}


def cache_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/secagg-fl``, else ``~/.cache/secagg-fl``."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / CACHE_DIR_NAME


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where fetched data goes: ``explicit``, else ``$SECAGG_DATA_DIR``, else the cache."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else cache_dir()


def _source(name: str) -> DatasetSource:
    if name not in DATASET_SOURCES:
        raise DatasetNotFoundError(
            f"unknown dataset {name!r}: secagg data fetch knows {sorted(DATASET_SOURCES)}"
        )
    return DATASET_SOURCES[name]


class _Hashes:
    """md5 and sha256 of a byte stream, computed in one pass."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.sha256.update(chunk)

    @classmethod
    def of_file(cls, path: Path) -> _Hashes:
        hashes = cls()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                hashes.update(chunk)
        return hashes


def _check(hashes: _Hashes, spec: DataFileSource, what: str) -> str:
    md5, sha256 = hashes.md5.hexdigest(), hashes.sha256.hexdigest()
    if md5 in spec.md5 or sha256 in spec.sha256:
        return sha256
    raise ChecksumError(
        f"{what} has md5 {md5} and sha256 {sha256}, which match no known version of "
        f"{spec.name} (published md5 {sorted(spec.md5)}, accepted sha256 "
        f"{sorted(spec.sha256)}): the file is corrupt, truncated or another release"
    )


def verify_file(path: Path, spec: DataFileSource) -> str:
    """Check ``path`` against ``spec``'s checksums; its sha256, or :class:`ChecksumError`."""
    return _check(_Hashes.of_file(path), spec, str(path))


def matches_known_version(path: Path) -> bool:
    """True when ``path`` is a published or accepted version of the data file of its name."""
    spec = _FILES_BY_NAME.get(path.name)
    if spec is None or not path.is_file():
        return False
    try:
        verify_file(path, spec)
    except ChecksumError:
        return False
    return True


def _write_verified(chunks: Iterable[bytes], target: Path, spec: DataFileSource, what: str) -> str:
    """Write ``chunks`` to a temporary file beside ``target``, verify, fsync, rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            hashes = _Hashes()
            size = 0
            for chunk in chunks:
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise FetchError(f"{what} is larger than {MAX_FILE_BYTES} bytes; refused")
                hashes.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        sha256 = _check(hashes, spec, what)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return sha256


def _download_chunks(url: str, timeout: float) -> Iterable[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                yield chunk
    except urllib.error.HTTPError as error:
        raise FetchError(f"{url} answered HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise FetchError(f"cannot reach {url}: {error.reason}") from error
    except (TimeoutError, OSError) as error:
        raise FetchError(f"download of {url} failed: {error}") from error


def _offline_hint(source: DatasetSource) -> str:
    return (
        f"if this machine is offline, download the files elsewhere ({source.homepage}) and "
        f"import them with `secagg data fetch {source.name} --from DIR`"
    )


def _download(spec: DataFileSource, target: Path, urls: Sequence[str], timeout: float) -> str:
    failures: list[str] = []
    for url in urls:
        try:
            return _write_verified(_download_chunks(url, timeout), target, spec, url)
        except FetchError as error:
            failures.append(str(error))
    raise FetchError("; ".join(failures))


def fetch_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
) -> tuple[FetchedFile, ...]:
    """Download every file of dataset ``name`` into ``<root>/<folder>/``, verified.

    ``mirror`` replaces the official sources by ``<mirror>/<file name>`` (an institutional
    mirror, or a local test server); checksums are checked all the same. A file already
    in place and verified is kept unless ``force``. Raises :class:`FetchError` naming every
    URL tried and why it failed, or :class:`ChecksumError` for bytes of no known version.
    """
    source = _source(name)
    folder = data_root(root) / source.folder
    fetched = []
    for spec in source.files:
        target = folder / spec.name
        if not force and target.is_file():
            try:
                fetched.append(FetchedFile(target, verify_file(target, spec), "already present"))
                continue
            except ChecksumError:
                pass  # an unknown version in place: replaced by a verified download
        urls = (f"{mirror.rstrip('/')}/{spec.name}",) if mirror else spec.urls
        try:
            sha256 = _download(spec, target, urls, timeout)
        except FetchError as error:
            raise FetchError(f"{spec.name}: {error}; {_offline_hint(source)}") from error
        fetched.append(FetchedFile(target, sha256, urls[0] if len(urls) == 1 else "/".join(urls)))
    return tuple(fetched)


def import_dataset(
    name: str,
    source_dir: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
) -> tuple[FetchedFile, ...]:
    """Copy the files of dataset ``name`` the user already has into ``<root>/<folder>/``.

    Each file is looked for in ``source_dir`` and in ``source_dir/<folder>``, verified like
    a download, and written atomically. Missing files raise
    :class:`DatasetNotFoundError` naming every path tried.
    """
    source = _source(name)
    origin_dir = Path(source_dir).expanduser()
    folder = data_root(root) / source.folder
    located: list[tuple[DataFileSource, Path]] = []
    for spec in source.files:
        candidates = [origin_dir / spec.name, origin_dir / source.folder / spec.name]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise DatasetNotFoundError(
                f"{spec.name} is not in {' or '.join(str(c.parent) for c in candidates)}"
            )
        located.append((spec, found))
    fetched = []
    for spec, found in located:
        target = folder / spec.name
        if target.exists() and target.resolve() == found.resolve():
            fetched.append(FetchedFile(target, verify_file(target, spec), "already present"))
            continue
        with found.open("rb") as stream:
            chunks = iter(functools.partial(stream.read, 1 << 20), b"")
            sha256 = _write_verified(chunks, target, spec, str(found))
        fetched.append(FetchedFile(target, sha256, str(found)))
    return tuple(fetched)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secagg data",
        description="Download the real datasets from their official sources, or import "
        "local copies, into the folder the loaders read.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch",
        help="download (or --from DIR: import) datasets, verified against pinned checksums",
        description=f"Datasets: {', '.join(DATASET_SOURCES)}. Files go to "
        f"DIR/<folder>/ for --dir DIR, else ${DATA_DIR_ENV}/<folder>/, else "
        f"{cache_dir()}/<folder>/. Exit 0 when every file is in place and verified, 2 "
        "otherwise (with what failed).",
    )
    fetch.add_argument("datasets", nargs="+", metavar="DATASET", help=" | ".join(DATASET_SOURCES))
    fetch.add_argument(
        "--from", dest="source_dir", metavar="DIR", help="import the files from this folder"
    )
    fetch.add_argument(
        "--dir", dest="root", metavar="DIR", help=f"data root (default ${DATA_DIR_ENV} or cache)"
    )
    fetch.add_argument("--mirror", metavar="URL", help="download from MIRROR/<file name> instead")
    fetch.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    fetch.add_argument("--force", action="store_true", help="download even if present")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``secagg data fetch ...``: 0 when every dataset is in place and verified, else 2."""
    args = build_parser().parse_args(argv)
    status = 0
    for name in args.datasets:
        try:
            if args.source_dir is not None:
                files = import_dataset(name, args.source_dir, root=args.root)
            else:
                files = fetch_dataset(
                    name, root=args.root, mirror=args.mirror, timeout=args.timeout, force=args.force
                )
        except (FetchError, ChecksumError, DatasetNotFoundError) as error:
            print(f"secagg data fetch {name}: FAILED: {error}", file=sys.stderr)
            status = 2
            continue
        for item in files:
            print(f"{name}: {item.path} sha256 {item.sha256} ({item.origin})")
    return status


if __name__ == "__main__":
    sys.exit(main())
