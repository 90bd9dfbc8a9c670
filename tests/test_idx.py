"""Tests for companion.idx: IDX decoding, gzip detection,
and rejection of malformed input."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from companion.idx import parse_idx
from idx_writer import IDX_TYPE_CODES, write_idx


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype(np.uint8), np.dtype(np.float32)]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
    )
)
def test_uint8_and_float32_arrays_of_one_to_three_dims_round_trip(
    array: np.ndarray,
) -> None:
    decoded = parse_idx(write_idx(array))
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("dtype", list(IDX_TYPE_CODES), ids=lambda d: d.name)
def test_every_element_type_round_trips_with_big_endian_payload(
    dtype: np.dtype,
) -> None:
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    array = np.array([[info.min, 0, 1], [info.max, 2, 3]], dtype=dtype)
    decoded = parse_idx(write_idx(array))
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, array)


def test_result_is_native_endian_writable_and_owns_its_memory() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    decoded = parse_idx(write_idx(array))
    assert decoded.dtype.isnative
    assert (
        decoded.flags.writeable and decoded.flags.owndata and decoded.flags.c_contiguous
    )
    decoded[0, 0] = 99.0  # must not raise "assignment destination is read-only"


def test_mnist_like_image_header_decodes_to_n_28_28_uint8() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    data = write_idx(images)
    assert data[:4] == b"\x00\x00\x08\x03"  # the magic 0x00000803 of MNIST image files
    np.testing.assert_array_equal(parse_idx(data), images)


def test_gzip_compressed_input_is_decoded_transparently() -> None:
    array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    np.testing.assert_array_equal(parse_idx(gzip.compress(write_idx(array))), array)


def test_bytearray_and_memoryview_inputs_are_accepted() -> None:
    array = np.arange(6, dtype=np.int16)
    data = write_idx(array)
    np.testing.assert_array_equal(parse_idx(bytearray(data)), array)
    np.testing.assert_array_equal(parse_idx(memoryview(data)), array)


def test_zero_length_dimension_gives_an_empty_array_of_that_shape() -> None:
    decoded = parse_idx(write_idx(np.zeros((0, 28, 28), dtype=np.uint8)))
    assert decoded.shape == (0, 28, 28)


_GOOD = write_idx(np.arange(6, dtype=np.uint8).reshape(2, 3))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (b"\x01\x00" + _GOOD[2:], "bad magic"),
        (b"\x00\x00\x07" + _GOOD[3:], "unknown IDX element type 0x07"),
        (_GOOD[:9], "truncated IDX header"),
        (_GOOD[:-1], r"expected 6 bytes of data for shape \(2, 3\) \(uint8\), got 5"),
        (
            _GOOD + b"\x00",
            r"expected 6 bytes of data for shape \(2, 3\) \(uint8\), got 7",
        ),
        (gzip.compress(_GOOD)[:-8], "corrupt gzip"),
        (b"\x1f\x8b" + b"not really gzip", "corrupt gzip"),
    ],
    ids=[
        "empty",
        "three-bytes",
        "bad-magic",
        "unknown-type",
        "truncated-dims",
        "short-payload",
        "trailing-bytes",
        "truncated-gzip",
        "garbage-gzip",
    ],
)
def test_malformed_input_raises_value_error_saying_what_is_wrong(
    data: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_idx(data)


def test_huge_declared_shape_is_rejected_without_allocating() -> None:
    header = bytes([0, 0, 0x0E, 3]) + struct.pack(
        ">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1
    )
    with pytest.raises(ValueError, match="expected .* bytes of data"):
        parse_idx(header + b"\x00" * 8)
