"""Optional download of MNIST / Fashion-MNIST IDX files, each verified against its SHA-256."""

from __future__ import annotations

import hashlib
import math
import os
import urllib.request
from pathlib import Path
from typing import BinaryIO

from ..atomic import atomic_write, check_writable_folder
from ..shapes import is_real

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# dataset -> (official mirror, {file name: SHA-256}), hashes in the order of FILES
SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        dict(zip(FILES, (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ), strict=True)),
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        dict(zip(FILES, (
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ), strict=True)),
    ),
}  # fmt: skip


class DownloadError(OSError):
    """A download failed or its checksum did not match; nothing was left in the target folder."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def official_dataset_of(sha256: str) -> str | None:
    """The dataset one of whose official files has this SHA-256, or None: MNIST and
    Fashion-MNIST files look alike (28x28, ten classes) and would train one as the other."""
    return next((name for name, (_, sums) in SOURCES.items() if sha256 in sums.values()), None)


def _check_timeout(timeout: float | None) -> None:
    """A TypeError or ValueError unless ``timeout`` is a number of seconds > 0 or None (no
    timeout, as urlopen takes it): 0 made the socket non-blocking ("Operation now in progress"),
    -1 or "x" gave the socket's own words."""
    if timeout is None:
        return
    if not is_real(timeout):
        raise TypeError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
    if not 0 < timeout < math.inf:  # NaN too
        raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")


def fetch(url: str, dest: str | os.PathLike, sha256: str, timeout: float | None = 60.0) -> Path:
    """Download ``url`` to ``dest``; refuse it unless its SHA-256 matches.

    Written atomically (:mod:`gpucnn.atomic`): a failed or refused download leaves nothing. A
    file already at ``dest`` with the right checksum is kept without downloading.
    """
    _check_timeout(timeout)
    dest = Path(dest)
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest

    def download(out: BinaryIO) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DownloadError(
                f"{url}: checksum mismatch (sha256 {digest.hexdigest()}, expected {sha256}); "
                "file refused"
            )

    try:
        atomic_write(dest, download)
    except DownloadError:
        raise
    except OSError as err:  # URLError, HTTPError and timeouts are OSErrors too
        raise DownloadError(f"{url}: download failed: {err}") from err
    return dest


def download(
    name: str,
    data_dir: str | os.PathLike,
    base_url: str | None = None,
    timeout: float | None = 60.0,
) -> Path:
    """Fetch the four IDX files of dataset ``name`` into ``data_dir``; returns the folder.

    ``base_url`` replaces the official mirror (a local copy, or a test server).
    """
    _check_timeout(timeout)  # now, not after the files already there are hashed
    if name not in SOURCES:
        raise ValueError(f"no download for {name!r}; downloadable: {', '.join(sorted(SOURCES))}")
    default_url, files = SOURCES[name]
    base = (base_url or default_url).rstrip("/") + "/"
    folder = check_writable_folder(data_dir, "--data-dir")
    have = {f: sha256_of(folder / f) for f in files if (folder / f).is_file()}  # hashed once
    for filename, digest in have.items():
        other = official_dataset_of(digest)
        if other and other != name:
            raise DownloadError(
                f"{folder / filename} is {other}'s, which would be replaced by {name}'s: "
                f"download {name} into another folder (--data-dir {folder / name}, say)"
            )
    for filename, sha256 in files.items():
        if have.get(filename) != sha256:  # a file already there with the right checksum stays
            fetch(base + filename, folder / filename, sha256, timeout)
    return folder
