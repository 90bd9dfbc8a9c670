"""Download a file from a list of mirrors and check its SHA-256 before using it.

Every download in the companion goes through :func:`fetch_verified`, as in d2l's
``download`` helper: a file is only ever put in place once its checksum matches, so a
half-finished or tampered download can never be mistaken for the real data.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

__all__ = ["fetch_verified", "sha256_file"]

_CHUNK_BYTES = 1 << 20
_USER_AGENT = "companion/0.1 (python urllib)"
_HEX_DIGITS = frozenset("0123456789abcdef")


class _MirrorFailed(Exception):
    """One mirror could not deliver the file (network trouble, HTTP error,
    cut-off transfer)."""


def sha256_file(path: Path, *, chunk_bytes: int = _CHUNK_BYTES) -> str:
    """Return the SHA-256 of a file's contents as 64 lowercase hex digits.

    :param path: the file to hash; read in chunks of ``chunk_bytes`` bytes, so large
        files are never held in memory.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_verified(
    *,
    urls: Sequence[str],
    destination: Path,
    sha256: str,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> Path:
    """Make sure ``destination`` holds the file with SHA-256 ``sha256``,
    downloading it if needed.

    If ``destination`` already exists with the right checksum it is returned without
    touching the network; if it exists with the wrong checksum it is deleted and
    downloaded again. The mirrors in ``urls`` are tried in order. Each download streams
    into a hidden ``.part`` file next to ``destination`` while being hashed, and is
    moved into place with an atomic :func:`os.replace` only once the hash matches, so
    neither a partial nor a corrupt file is ever left behind.

    :param urls: full URLs of the same file, tried in order until one answers.
    :param destination: where the verified file ends up; its parent is created.
    :param sha256: expected SHA-256, 64 hex digits (case-insensitive).
    :param timeout_s: socket timeout in seconds for connecting and for each read.
    :param progress: show a transient tqdm progress bar (bytes).
    :returns: ``destination``.
    :raises ValueError: if ``sha256`` is not 64 hex digits, ``urls`` is empty, or a
        mirror delivered a file whose hash does not match (the download is removed).
    :raises ConnectionError: if no mirror could be reached or completed the transfer;
        the message names the mirrors and the offline alternatives.
    """
    destination = Path(destination)
    expected = sha256.strip().lower()
    if len(expected) != 64 or not set(expected) <= _HEX_DIGITS:
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if not urls:
        raise ValueError(f"no URLs given to download {destination.name}")

    if destination.exists():
        if sha256_file(destination) == expected:
            return destination
        destination.unlink()

    destination.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    last_error: BaseException | None = None
    for url in urls:
        try:
            _download_to(
                url=url,
                destination=destination,
                expected=expected,
                timeout_s=timeout_s,
                progress=progress,
            )
        except _MirrorFailed as exc:
            failures.append(f"  {url}: {exc}")
            last_error = exc.__cause__ or exc
            continue
        return destination

    tried = "\n".join(failures)
    raise ConnectionError(
        f"could not download {destination.name}; every mirror failed:\n{tried}\n"
        "Offline? Use the embedded real MNIST digits `mnist_5k` (e.g. set "
        'COMPANION_PROFILE=quick, or call load_images(name="mnist_5k", ...)), '
        f"or place the file by hand at {destination} (its sha256 must be {expected})."
    ) from last_error


def _download_to(
    *, url: str, destination: Path, expected: str, timeout_s: float, progress: bool
) -> None:
    """Stream ``url`` into a temporary file beside ``destination``, verify it,
    move it in place.

    :raises _MirrorFailed: on any network-side failure (the temporary file is removed).
    :raises ValueError: on a checksum mismatch (the temporary file is removed).
    """
    part = tempfile.NamedTemporaryFile(
        delete=False,
        dir=destination.parent,
        prefix="." + destination.name,
        suffix=".part",
    )
    part_path = Path(part.name)
    try:
        with part:
            actual = _stream(
                url=url,
                sink=part,
                desc=destination.name,
                timeout_s=timeout_s,
                progress=progress,
            )
        if actual != expected:
            raise ValueError(
                f"corrupt download from {url}: expected sha256 {expected}, got "
                f"{actual}; the downloaded file was removed"
            )
        os.chmod(part_path, 0o644)  # NamedTemporaryFile creates 0o600
        os.replace(part_path, destination)
    finally:
        part_path.unlink(missing_ok=True)


def _stream(
    *, url: str, sink: IO[bytes], desc: str, timeout_s: float, progress: bool
) -> str:
    """Copy the body of ``url`` into ``sink`` and return its SHA-256 hex digest.

    Only failures on the network side become :class:`_MirrorFailed`; a failing write to
    ``sink`` (a full disk, say) propagates unchanged.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError holds the open error response
        raise _MirrorFailed(_describe(exc)) from exc

    digest = hashlib.sha256()
    received = 0
    with response:
        length_header = response.headers.get("Content-Length")
        total = (
            int(length_header) if length_header and length_header.isdigit() else None
        )
        with tqdm(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            leave=False,
            disable=not progress,
        ) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise _MirrorFailed(
                        f"transfer failed after {received} bytes: {_describe(exc)}"
                    ) from exc
                if not chunk:
                    break
                sink.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _MirrorFailed(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _describe(exc: BaseException) -> str:
    """A one-line reason for a network error, e.g. ``HTTP 404 Not Found``."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
