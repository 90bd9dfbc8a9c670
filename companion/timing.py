"""Wall-clock time of a block of work, honest on a GPU.

CUDA kernels run asynchronously: ``time.perf_counter()`` around a call on a GPU measures
how long Python took to queue the kernels, not how long they ran. :class:`Stopwatch`
waits for the device (``torch.cuda.synchronize``) when the block starts and when it
ends, so the chapters' cost figures and the benchmarks mean the same thing on a CPU and
on a GPU::

    with Stopwatch(device=device) as clock:
        result = expensive(...)
    print(f"{clock.seconds:.1f} s")
"""

from __future__ import annotations

import time
from types import TracebackType

import torch

__all__ = ["Stopwatch"]


class Stopwatch:
    """Context manager: ``seconds`` is the wall-clock time of its ``with`` block.

    Args:
        device: where the block's work runs; on a CUDA device the clock starts and stops
            only once that device has finished its queued kernels. ``None`` or a CPU
            device: no synchronisation.
    """

    def __init__(self, *, device: torch.device | str | None = None) -> None:
        self.device = None if device is None else torch.device(device)
        self._start: float | None = None
        self._seconds: float | None = None

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._seconds = None
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._sync()
        assert self._start is not None
        self._seconds = time.perf_counter() - self._start

    @property
    def seconds(self) -> float:
        """Seconds the last finished ``with`` block took (float, wall clock)."""
        if self._seconds is None:
            raise RuntimeError(
                "the stopwatch has not finished timing a block: read `seconds` after "
                "its `with Stopwatch() as clock:` block has ended"
            )
        return self._seconds
