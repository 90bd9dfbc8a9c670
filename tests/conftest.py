"""Shared fixtures: a static HTTP server on 127.0.0.1, a loopback port that refuses
connections, and one torch thread for the whole session.

Tests never reach the internet; downloads are exercised against these loopback
endpoints.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the recipes' disk cache (companion.cache) out of the user's home: one fresh
    directory for the whole session."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPANION_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
        yield


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: the test models are tiny, and on a busy 2-core machine
    intra-op threads spin against other processes (training tests ran ~10× slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclass
class LoopbackServer:
    """A static file server on 127.0.0.1 serving ``root`` that records the paths it was
    asked for.

    ``/truncated/...`` announces 1000 bytes and sends 10,
    to imitate a dropped connection.
    """

    root: Path
    base_url: str
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"


@pytest.fixture
def loopback_server(tmp_path: Path) -> Iterator[LoopbackServer]:
    """Serve ``tmp_path / "served"`` over HTTP on 127.0.0.1 for the duration of one
    test."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path.startswith("/truncated/"):
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                return
            super().do_GET()

        def log_message(
            self, format: str, *args: object
        ) -> None:  # keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        port = httpd.server_address[1]
        yield LoopbackServer(
            root=root, base_url=f"http://127.0.0.1:{port}", requests=requests
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def refused_base_url() -> Iterator[str]:
    """``http://127.0.0.1:<port>/`` where the port is bound but not listening:
    connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
