"""Tests for companion.rng: seeded draws with a generator on another device."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from companion import rng

PACKAGE = Path(__file__).resolve().parent.parent / "companion"


def test_with_a_generator_on_the_target_device_the_draws_are_torchs_own() -> None:
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(rng.randn((4, 2), generator=g1), torch.randn(4, 2, generator=g2))
    assert torch.equal(rng.rand((3,), generator=g1), torch.rand(3, generator=g2))
    assert torch.equal(
        rng.randint(0, 9, (5,), generator=g1), torch.randint(0, 9, (5,), generator=g2)
    )
    assert torch.equal(rng.randperm(7, generator=g1), torch.randperm(7, generator=g2))
    p = torch.full((6,), 0.5)
    assert torch.equal(rng.bernoulli(p, generator=g1), torch.bernoulli(p, generator=g2))


@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("randn", lambda g, d: rng.randn((2, 3), generator=g, device=d)),
        ("rand", lambda g, d: rng.rand((2, 3), generator=g, device=d)),
        ("randint", lambda g, d: rng.randint(0, 4, (2, 3), generator=g, device=d)),
        ("randperm", lambda g, d: rng.randperm(6, generator=g, device=d)),
    ],
)
def test_a_cpu_generator_draws_on_its_own_device_and_the_result_moves(
    monkeypatch: pytest.MonkeyPatch, name: str, draw
) -> None:
    # On CUDA, torch refuses a CPU generator for a draw on the GPU ("Expected a 'cuda'
    # device type for generator"). This CPU-only build cannot show that, so a spy
    # checks where the draw is made; the meta device stands in for the GPU.
    real, seen = getattr(torch, name), []

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out.device.type)
        return out

    monkeypatch.setattr(torch, name, spy)
    out = draw(torch.Generator().manual_seed(0), torch.device("meta"))
    assert seen == ["cpu"]
    assert out.device.type == "meta" and out.numel() == 6


def test_without_a_generator_the_draw_is_made_on_the_device() -> None:
    out = rng.randn((2,), device="meta")
    assert out.device.type == "meta" and out.shape == (2,)


def _device_bound_seeded_draws(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
            and node.func.attr in {"randn", "rand", "randint", "randperm", "bernoulli"}
        ):
            keywords = {k.arg for k in node.keywords}
            if {"generator", "device"} <= keywords:
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_module_draws_with_a_generator_on_a_device_it_may_not_live_on() -> None:
    offenders = [
        site
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "rng.py"
        for site in _device_bound_seeded_draws(path)
    ]
    assert offenders == [], f"use companion.rng for these seeded draws: {offenders}"
