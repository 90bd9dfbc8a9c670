"""Parse the IDX binary format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number, a list of big-endian ``uint32`` dimensions and
then the array itself, big-endian, in C order (LeCun et al., "The MNIST database",
http://yann.lecun.com/exdb/mnist/, section "File formats")::

    byte 0-1   0x00 0x00
    byte 2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                             0x0D float32, 0x0E float64
    byte 3     number of dimensions d
    4 * d      the dimensions, big-endian uint32
    rest       prod(dims) elements, big-endian

The distributed files are gzip-compressed; :func:`parse_idx` accepts either form.
"""

from __future__ import annotations

import gzip
import math
import zlib

import numpy as np

__all__ = ["IDX_DTYPES", "parse_idx"]

#: IDX element-type code -> big-endian numpy dtype of the stored data.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 4
_DIM_BYTES = 4


def parse_idx(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode one IDX file held in memory.

    :param data: the raw file contents, either plain IDX or gzip-compressed IDX
        (recognised by the gzip magic ``1f 8b``).
    :returns: a new, writable, C-contiguous array with native byte order, of the
        shape and element type the header declares, e.g. ``(60000, 28, 28) uint8``
        for MNIST training images or ``(60000,) uint8`` for its labels.
    :raises ValueError: if the gzip stream is corrupt, the magic or element type is
        unknown, the header is truncated, or the payload size does not match the
        declared shape (too short or with trailing bytes).
    """
    raw = bytes(data)
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"corrupt gzip stream in IDX data: {exc}") from exc

    if len(raw) < _HEADER_BYTES:
        raise ValueError(
            f"IDX data too short: need a {_HEADER_BYTES}-byte header, got {len(raw)} "
            "bytes"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"bad magic: IDX data must start with bytes 00 00, got {raw[:2].hex(' ')}"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"unknown IDX element type 0x{code:02X}; expected one of {known}"
        )
    dtype = IDX_DTYPES[code]

    data_start = _HEADER_BYTES + _DIM_BYTES * ndim
    if len(raw) < data_start:
        raise ValueError(
            f"truncated IDX header: {ndim} dimensions need {data_start} header bytes, "
            f"got {len(raw)}"
        )
    shape = tuple(
        int.from_bytes(raw[start : start + _DIM_BYTES], "big")
        for start in range(_HEADER_BYTES, data_start, _DIM_BYTES)
    )
    count = math.prod(shape)
    expected = count * dtype.itemsize
    got = len(raw) - data_start
    if got != expected:
        raise ValueError(
            f"expected {expected} bytes of data for shape {shape} ({dtype.name}), got "
            f"{got}"
        )
    stored = np.frombuffer(raw, dtype=dtype, count=count, offset=data_start).reshape(
        shape
    )
    # astype always copies here: the result owns its memory,
    # is writable and native-endian.
    return stored.astype(dtype.newbyteorder("="), copy=True)
