"""The IDX file format of MNIST and Fashion-MNIST: read (raw or gzip) and write.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per dimension,
then the values in big-endian row-major order.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..functional import check_flag
from ..shapes import file_path

# IDX type code -> big-endian dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(ValueError):
    """An IDX file that is truncated, corrupt or not as expected; the message names the file."""


def read_file(path: Path) -> bytes:
    """The file's bytes as stored (gzip-compressed or raw); an IdxError naming it if unreadable."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise IdxError(f"{path}: cannot read: {err.strerror or err}") from err


def _decompressed(raw: bytes, path: Path) -> bytes:
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise IdxError(f"{path}: corrupt or truncated gzip data ({err})") from err


def read_idx(
    path: str | os.PathLike, ndim: int | None = None, raw: bytes | None = None
) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian array.

    ``ndim``: the number of dimensions the caller expects (3 for images, 1 for labels), checked.
    ``raw``: the file's bytes when the caller has read them already (:func:`read_file`).
    Raises :class:`IdxError` naming the file for a bad magic number, wrong dimensions or a length
    that does not match the header.
    """
    path = file_path(path, "read_idx: path")
    data = _decompressed(read_file(path) if raw is None else raw, path)
    if len(data) < 4:
        raise IdxError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, code, nd = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_DTYPES:
        raise IdxError(f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()})")
    if nd == 0:
        raise IdxError(f"{path}: IDX header declares 0 dimensions")
    if ndim is not None and nd != ndim:
        raise IdxError(f"{path}: expected {ndim} dimensions, the file has {nd}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise IdxError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{nd}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a corrupt header cannot wrap
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise IdxError(f"{path}: {what}: shape {shape} needs {expected} data bytes, found {found}")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, gzipped if ``compress`` (default: name ends in .gz)."""
    if compress is not None:  # "no" would compress
        check_flag(compress, "compress")
    path = file_path(path, "write_idx: path")
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot store dtype {array.dtype}")
    body = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body += np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body, mtime=0)
    path.write_bytes(body)
    return path
