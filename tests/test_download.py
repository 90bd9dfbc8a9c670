"""Tests for companion.download, against a loopback HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from companion.download import fetch_verified, sha256_file

if TYPE_CHECKING:
    from conftest import LoopbackServer

PAYLOAD = b"companion test payload\n" * 1000
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(loopback_server: LoopbackServer) -> LoopbackServer:
    """The shared loopback server (see conftest.py),
    under the short name these tests use."""
    return loopback_server


@pytest.fixture
def refused_url(refused_base_url: str) -> str:
    """A URL on 127.0.0.1 whose port is bound but not listening,
    so connections are refused."""
    return refused_base_url + "payload.bin"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "nested"  # fetch_verified must create missing parents


def _serve(server: LoopbackServer, name: str, data: bytes) -> str:
    (server.root / name).write_bytes(data)
    return server.url(name)


def test_good_file_is_downloaded_verified_and_placed_without_leftovers(
    server: LoopbackServer, cache: Path
) -> None:
    url = _serve(server, "payload.bin", PAYLOAD)
    destination = cache / "payload.bin"

    result = fetch_verified(urls=[url], destination=destination, sha256=PAYLOAD_SHA256)

    assert result == destination
    assert destination.read_bytes() == PAYLOAD
    assert list(cache.iterdir()) == [destination]  # no .part file left over
    assert server.requests == ["/payload.bin"]


def test_second_call_uses_the_cache_without_touching_the_network(
    server: LoopbackServer, cache: Path, refused_url: str
) -> None:
    url = _serve(server, "payload.bin", PAYLOAD)
    destination = cache / "payload.bin"
    fetch_verified(
        urls=[url], destination=destination, sha256=PAYLOAD_SHA256, progress=False
    )
    assert len(server.requests) == 1

    again = fetch_verified(urls=[url], destination=destination, sha256=PAYLOAD_SHA256)
    offline = fetch_verified(
        urls=[refused_url], destination=destination, sha256=PAYLOAD_SHA256
    )

    assert again == offline == destination
    assert len(server.requests) == 1


def test_checksum_is_compared_case_insensitively(
    server: LoopbackServer, cache: Path
) -> None:
    url = _serve(server, "payload.bin", PAYLOAD)
    destination = cache / "payload.bin"
    fetch_verified(
        urls=[url],
        destination=destination,
        sha256=PAYLOAD_SHA256.upper(),
        progress=False,
    )
    assert destination.read_bytes() == PAYLOAD


def test_corrupt_download_is_rejected_and_nothing_is_left_on_disk(
    server: LoopbackServer, cache: Path
) -> None:
    corrupt = PAYLOAD[:-1] + b"!"
    url = _serve(server, "payload.bin", corrupt)
    destination = cache / "payload.bin"

    with pytest.raises(ValueError, match="corrupt download") as info:
        fetch_verified(
            urls=[url], destination=destination, sha256=PAYLOAD_SHA256, progress=False
        )

    message = str(info.value)
    assert url in message
    assert PAYLOAD_SHA256 in message
    assert hashlib.sha256(corrupt).hexdigest() in message
    assert "removed" in message
    assert not destination.exists()
    assert list(cache.iterdir()) == []  # neither destination nor temporary file


def test_first_mirror_answering_404_falls_back_to_the_second(
    server: LoopbackServer, cache: Path
) -> None:
    good = _serve(server, "payload.bin", PAYLOAD)
    missing = server.url("missing/payload.bin")
    destination = cache / "payload.bin"

    fetch_verified(
        urls=[missing, good],
        destination=destination,
        sha256=PAYLOAD_SHA256,
        progress=False,
    )

    assert destination.read_bytes() == PAYLOAD
    assert server.requests == ["/missing/payload.bin", "/payload.bin"]
    assert list(cache.iterdir()) == [destination]


def test_connection_dropped_mid_transfer_falls_back_and_leaves_no_part_file(
    server: LoopbackServer, cache: Path
) -> None:
    good = _serve(server, "payload.bin", PAYLOAD)
    destination = cache / "payload.bin"

    fetch_verified(
        urls=[server.url("truncated/payload.bin"), good],
        destination=destination,
        sha256=PAYLOAD_SHA256,
        progress=False,
    )

    assert destination.read_bytes() == PAYLOAD
    assert list(cache.iterdir()) == [destination]


def test_connection_dropped_on_every_mirror_is_a_connection_error_not_corruption(
    server: LoopbackServer, cache: Path
) -> None:
    destination = cache / "payload.bin"
    with pytest.raises(ConnectionError, match="10 of 1000 bytes"):
        fetch_verified(
            urls=[server.url("truncated/payload.bin")],
            destination=destination,
            sha256=PAYLOAD_SHA256,
            progress=False,
        )
    assert list(cache.iterdir()) == []


def test_unreachable_mirrors_raise_connection_error_pointing_to_the_offline_mnist_5k(
    server: LoopbackServer, refused_url: str, cache: Path
) -> None:
    missing = server.url("missing/payload.bin")
    destination = cache / "payload.bin"

    with pytest.raises(ConnectionError) as info:
        fetch_verified(
            urls=[refused_url, missing],
            destination=destination,
            sha256=PAYLOAD_SHA256,
            timeout_s=2.0,
            progress=False,
        )

    message = str(info.value)
    assert "payload.bin" in message
    assert refused_url in message and missing in message
    assert "HTTP 404" in message
    assert "mnist_5k" in message and "COMPANION_PROFILE=quick" in message
    assert str(destination) in message and PAYLOAD_SHA256 in message
    assert list(cache.iterdir()) == []


def test_existing_corrupt_cached_file_is_replaced_by_a_fresh_download(
    server: LoopbackServer, cache: Path
) -> None:
    url = _serve(server, "payload.bin", PAYLOAD)
    destination = cache / "payload.bin"
    cache.mkdir(parents=True)
    destination.write_bytes(b"stale or truncated")

    fetch_verified(
        urls=[url], destination=destination, sha256=PAYLOAD_SHA256, progress=False
    )

    assert destination.read_bytes() == PAYLOAD
    assert server.requests == ["/payload.bin"]
    assert list(cache.iterdir()) == [destination]


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, PAYLOAD_SHA256 + "0"])
def test_malformed_expected_checksum_is_rejected_before_any_request(
    server: LoopbackServer, cache: Path, bad: str
) -> None:
    url = _serve(server, "payload.bin", PAYLOAD)
    with pytest.raises(ValueError, match="64 hex digits"):
        fetch_verified(urls=[url], destination=cache / "payload.bin", sha256=bad)
    assert server.requests == []


def test_empty_mirror_list_is_rejected(cache: Path) -> None:
    with pytest.raises(ValueError, match="no URLs"):
        fetch_verified(
            urls=[], destination=cache / "payload.bin", sha256=PAYLOAD_SHA256
        )


def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == PAYLOAD_SHA256
    assert sha256_file(path, chunk_bytes=7) == PAYLOAD_SHA256
