"""Downloads against a local HTTP server on 127.0.0.1 serving small generated IDX files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import stat
import tempfile
import threading

import numpy as np
import pytest
from conftest import write_fake_idx_dataset

from gpucnn.cli import main
from gpucnn.data import download as dl
from gpucnn.data.datasets import load_dataset


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def served(tmp_path):
    """(base URL, folder) of an HTTP server on loopback, stopped after the test."""
    folder = write_fake_idx_dataset(tmp_path / "served", 12, 6)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 5
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def local_mnist(served, monkeypatch):
    """Point the mnist download at the local server, with the served files' real checksums."""
    url, folder = served
    files = {p.name: dl.sha256_of(p) for p in folder.iterdir()}
    monkeypatch.setitem(dl.SOURCES, "mnist", (url, files))
    return url, folder


def test_fetch_verifies_the_checksum(served, tmp_path):
    url, folder = served
    name = "train-labels-idx1-ubyte.gz"
    good = dl.sha256_of(folder / name)
    dest = dl.fetch(url + name, tmp_path / "out" / name, good, timeout=5)
    assert dest.read_bytes() == (folder / name).read_bytes()
    assert dl.fetch("http://127.0.0.1:9/unused", dest, good) == dest  # already there: no request


def test_fetch_refuses_a_bad_checksum_and_leaves_nothing(served, tmp_path):
    url, _ = served
    out = tmp_path / "out"
    with pytest.raises(dl.DownloadError, match="checksum mismatch") as info:
        dl.fetch(url + "train-labels-idx1-ubyte.gz", out / "labels.gz", "0" * 64, timeout=5)
    assert "download failed" not in str(info.value)  # it arrived, and was refused
    assert not out.exists()  # nor the folder made for it


def test_files_of_several_chunks_are_fetched_and_hashed_whole(served, tmp_path):
    """Downloads and checksums go by 1 MiB chunks: a file of several, the last one short,
    arrives whole and hashes as hashlib does over all its bytes."""
    url, folder = served
    data = np.random.default_rng().bytes(5 * 2**19 + 7)
    (folder / "big.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    dest = dl.fetch(url + "big.bin", tmp_path / "big.bin", digest, timeout=5)
    assert dest.read_bytes() == data and dl.sha256_of(dest) == digest


def test_a_download_gets_the_permissions_of_an_ordinary_file(served, tmp_path, umask):
    url, folder = served
    name = "train-labels-idx1-ubyte.gz"
    umask(0o022)
    dest = dl.fetch(url + name, tmp_path / name, dl.sha256_of(folder / name), timeout=5)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644  # readable by a shared folder's users


def test_fetch_reports_http_errors(served, tmp_path):
    url, _ = served
    with pytest.raises(dl.DownloadError, match="download failed.*404"):
        dl.fetch(url + "missing.gz", tmp_path / "missing.gz", "0" * 64, timeout=5)
    assert not (tmp_path / "missing.gz").exists()


def test_a_server_that_does_not_answer_times_out(tmp_path):
    """fetch and download give up after ``timeout`` seconds of silence (a server that takes the
    connection and sends nothing), leaving nothing behind."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        hang_up = threading.Timer(5.0, silent.close)  # ends a wait that ignores the timeout
        hang_up.start()
        try:
            with pytest.raises(dl.DownloadError, match="download failed.*timed out"):
                dl.fetch(url + "x.gz", tmp_path / "f" / "x.gz", "0" * 64, timeout=0.3)
            with pytest.raises(dl.DownloadError, match="download failed.*timed out"):
                dl.download("mnist", tmp_path / "d", base_url=url, timeout=0.3)
        finally:
            hang_up.cancel()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_leaves_no_new_folder(local_mnist, tmp_path):
    """The data folder it had made was left, empty, when the first file could not be fetched."""
    url, folder = local_mnist
    missing = tmp_path / "data" / "mnist"
    with pytest.raises(dl.DownloadError, match="download failed.*404"):
        dl.download("mnist", missing, base_url=url + "none/", timeout=5)
    assert not (tmp_path / "data").exists()
    assert dl.download("mnist", missing, base_url=url, timeout=5) == missing
    assert {p.name for p in missing.iterdir()} == {p.name for p in folder.iterdir()}


def test_a_damaged_file_is_fetched_again_and_a_complete_folder_is_kept(local_mnist, tmp_path):
    """download into a folder holding the dataset: a file whose checksum does not match (cut
    short, say) is fetched again; a run over the complete folder asks the server for nothing
    (and does not take the dataset's own files for another dataset's)."""
    _, served = local_mnist
    folder = dl.download("mnist", tmp_path / "d", timeout=5)
    damaged = folder / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert dl.download("mnist", folder, timeout=5) == folder
    assert damaged.read_bytes() == (served / damaged.name).read_bytes()
    assert dl.download("mnist", folder, base_url="http://127.0.0.1:9/", timeout=5) == folder


def test_download_then_load(local_mnist, tmp_path):
    folder = dl.download("mnist", tmp_path / "mnist", timeout=5)
    data = load_dataset("mnist", data_dir=folder)
    assert data.train_x.shape == (12, 1, 28, 28) and len(data.test_y) == 6
    np.testing.assert_array_equal(data.train_y, np.arange(12) % 10)


def test_download_cli(local_mnist, tmp_path, capsys):
    assert main(["download", "mnist", "--data-dir", str(tmp_path / "d")]) == 0
    assert "files verified" in capsys.readouterr().out


def test_download_cli_from_a_base_url_without_a_trailing_slash(
    served, tmp_path, capsys, monkeypatch
):
    """--base-url replaces the official mirror, given with or without its final slash."""
    url, folder = served
    sums = {p.name: dl.sha256_of(p) for p in folder.iterdir()}
    monkeypatch.setitem(dl.SOURCES, "mnist", ("http://127.0.0.1:9/", sums))  # unreachable
    argv = ["download", "mnist", "--data-dir", str(tmp_path / "d"), "--base-url", url.rstrip("/")]
    assert main(argv) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == {
        p.name: p.read_bytes() for p in folder.iterdir()
    }


def test_download_cli_bad_checksum_is_one_line(served, tmp_path, capsys, monkeypatch):
    url, folder = served
    monkeypatch.setitem(dl.SOURCES, "mnist", (url, {p.name: "f" * 64 for p in folder.iterdir()}))
    assert main(["download", "mnist", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum mismatch" in err


def test_a_download_does_not_replace_another_datasets_files(local_mnist, tmp_path):
    url, _ = local_mnist
    folder = dl.download("mnist", tmp_path / "d", timeout=5)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(dl.DownloadError, match=r"is mnist's, .*--data-dir .*d/fashion-mnist"):
        dl.download("fashion-mnist", folder, base_url=url, timeout=5)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_download_names_a_data_dir_it_cannot_write(tmp_path, capsys):
    """A --data-dir through a file is the folder's error, not a failed download of the URL."""
    (tmp_path / "file").write_text("")
    assert main(["download", "mnist", "--data-dir", str(tmp_path / "file" / "d")]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {tmp_path}/file/d: {tmp_path}/file is a file, not a folder" in err
    assert "download failed" not in err
    assert main(["download", "mnist", "--data-dir", str(tmp_path / "file")]) == 2
    assert f"--data-dir {tmp_path}/file: is a file, not a folder" in capsys.readouterr().err


def test_download_names_a_data_dir_that_refuses_new_files(tmp_path, capsys, monkeypatch):
    """A folder that is there but takes no new files (its permissions, a read-only disk) is
    named as such, not as a file."""

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    assert main(["download", "mnist", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {tmp_path}: cannot write files in that folder (Permission denied)" in err


def test_download_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="no download for 'lines'"):
        dl.download("lines", tmp_path)


@pytest.mark.parametrize(
    "timeout, error, message",
    [(0, ValueError, "got 0"), (-1, ValueError, "got -1"), (float("nan"), ValueError, "got nan"),
     (float("inf"), ValueError, "got inf"), ("5", TypeError, "got '5'"),
     (True, TypeError, "got True")],
)  # fmt: skip
def test_a_timeout_that_is_no_wait_is_refused_by_name(tmp_path, timeout, error, message):
    """0 made the socket non-blocking ("Operation now in progress", a failed download), and -1
    or "5" gave the socket's own words, or a DownloadError wrapping them; inf is no number of
    seconds a socket takes (None is no timeout), True no number at all."""
    message = f"timeout must be a number of seconds > 0 or None, {message}"
    with pytest.raises(error, match=message):
        dl.fetch("http://127.0.0.1:9/x.gz", tmp_path / "x.gz", "0" * 64, timeout=timeout)
    with pytest.raises(error, match=message):
        dl.download("mnist", tmp_path, base_url="http://127.0.0.1:9/", timeout=timeout)


def test_a_bad_timeout_is_refused_even_with_every_file_already_there(local_mnist, tmp_path):
    """download checks its timeout before it looks at the folder: a complete folder (nothing
    to fetch) does not let a timeout of 0 pass, to fail on the first file that is missing."""
    folder = dl.download("mnist", tmp_path / "d", timeout=5)
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0 or None"):
        dl.download("mnist", folder, timeout=0)


def test_no_timeout_is_urlopens_none(tmp_path):
    """timeout=None is urlopen's "no timeout" (it blocks): taken, as before the check."""
    (tmp_path / "x.gz").write_bytes(b"kept")
    digest = dl.sha256_of(tmp_path / "x.gz")  # already there: nothing is fetched
    assert dl.fetch("http://127.0.0.1:9/x.gz", tmp_path / "x.gz", digest, timeout=None).is_file()
