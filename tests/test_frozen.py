"""Tests for companion.frozen: parameters frozen for the duration,
flags restored exactly."""

from __future__ import annotations

import pytest
import torch

from companion.frozen import frozen


def test_parameters_are_frozen_inside_and_each_flag_is_restored_even_on_error() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    a.bias.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"), frozen(a, b):
        assert not any(p.requires_grad for m in (a, b) for p in m.parameters())
        raise RuntimeError("boom")
    assert a.weight.requires_grad and not a.bias.requires_grad
    assert all(p.requires_grad for p in b.parameters())


def test_kept_parameters_stay_trainable_while_the_rest_of_the_module_is_frozen() -> (
    None
):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with frozen(model, keep=model[1].parameters()):
        assert not any(p.requires_grad for p in model[0].parameters())
        assert all(p.requires_grad for p in model[1].parameters())
    assert all(p.requires_grad for p in model.parameters())
