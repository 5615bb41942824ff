"""Files written whole or not at all: checkpoints, metrics and downloads.

A temporary file beside the target is written, flushed to disk and renamed over the target, so
a crash, a Ctrl-C or a failed check leaves the previous file (or none) rather than a torn one.
Files that describe each other (a checkpoint and its metrics) are written with Ctrl-C held off
(:func:`interrupts_held`), so that it cannot fall between them.
The file gets the permissions an ordinary ``open`` would give it (0666 less the umask), not the
0600 of a temporary file, so a shared data or runs folder stays readable to its other users.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .shapes import file_path


def _umask() -> int:
    """The process's umask: read from /proc where Linux shows it, else set and put back (which
    leaves it 0 for an instant, in which another thread's new file would get 0666)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, rename over ``path``.

    If ``write`` raises (a failed checksum, say), the temporary file is removed and ``path`` is
    left as it was, as are the folders above it: those made for it are removed again.
    """
    path = Path(path)
    with _made_folder(path.parent):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) and SIGTERM wait: one that comes is delivered to the
    handler of before as the block ends (also when it ends in an error), so files written
    together are all written or (after a crash) all as before, never some of them. Only the main
    thread takes signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():  # None: a handler set outside Python, unknown
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(held):  # each once, in the order they came
            signal.raise_signal(signum)


@contextlib.contextmanager
def _made_folder(folder: Path) -> Iterator[list[Path]]:
    """Create ``folder`` and the missing folders above it for the block, which gets those it
    made (deepest first); if the block fails, they are removed again."""
    made = list(itertools.takewhile(lambda p: not p.exists(), (folder, *folder.parents)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield made
    except BaseException:
        _remove_empty(made)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders``, deepest first, up to the first that is not empty. One that is not
    there is passed over: making it failed (a name too long, say) after the folders above it
    were made, and those are removed all the same."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            if os.path.lexists(folder):  # False for a name no file system could hold, too
                return


def check_writable_folder(folder: str | os.PathLike, option: str) -> Path:
    """Check that a file can be written in ``folder``, so that a bad folder option fails before
    any work, with an error naming ``option`` (not, say, the URL being downloaded or the epoch
    just trained). A missing folder is made for the check and removed again: the first file
    written in it (:func:`atomic_write`) makes it for good, so a command that fails before then
    leaves no empty folder behind."""
    folder = file_path(folder, option)
    try:
        with _made_folder(folder) as made, tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(f"{option} {folder}: {_unwritable(folder, err)}") from err
    _remove_empty(made)
    return folder


def _unwritable(folder: Path, err: OSError) -> str:
    """Why no file can be written in ``folder``: a file where it (or a folder above it) should
    be, else ``err``."""
    file = next((p for p in (folder, *folder.parents) if _is_file(p)), None)
    if file is None:
        return f"cannot write files in that folder ({err.strerror or err})"
    return f"{'' if file == folder else f'{file} '}is a file, not a folder"


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False rather than an OSError for a name too long to look up (which
    would take the place of the error being explained, naming no option)."""
    try:
        return path.is_file()
    except OSError:
        return False
