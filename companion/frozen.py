"""A context in which a module's parameters need no gradients.

Attacks, per-example variational optimisation and the HMC defence all differentiate with
respect to inputs or codes, never the model's weights: freezing them saves the weight
gradients' memory and time, and restores each parameter's own flag afterwards (also on
error), so a caller's partly frozen model comes back exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["frozen"]


@contextmanager
def frozen(*modules: nn.Module, keep: Iterable[nn.Parameter] = ()) -> Iterator[None]:
    """Turn off ``requires_grad`` of every parameter of ``modules`` for the duration.

    Args:
        modules: the modules to freeze.
        keep: parameters among them to leave as they are (an encoder trained inside a
            model whose other weights stay fixed).
    """
    kept = {id(p) for p in keep}
    params = [p for m in modules for p in m.parameters() if id(p) not in kept]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
