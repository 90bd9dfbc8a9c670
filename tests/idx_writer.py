"""Encode arrays as IDX bytes, independently of :mod:`companion.idx`,
for tests to feed it.

Layout (LeCun et al., "The MNIST database", section "File formats"): bytes 00 00, a
one-byte element-type code, a one-byte number of dimensions, the dimensions as
big-endian uint32, then the elements big-endian in C order.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np

__all__ = ["IDX_TYPE_CODES", "write_idx", "write_idx_gz"]

#: numpy dtype -> IDX element-type code.
IDX_TYPE_CODES: dict[np.dtype, int] = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def write_idx(array: np.ndarray) -> bytes:
    """Encode ``array`` (any dtype of :data:`IDX_TYPE_CODES`) as plain IDX bytes."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim])
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_gz(array: np.ndarray) -> bytes:
    """Encode ``array`` as gzip-compressed IDX bytes,
    as the distributed MNIST files are."""
    return gzip.compress(write_idx(array))
