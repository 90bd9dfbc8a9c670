"""Tests for companion.train: training with early stopping, reproducibility, validation
of inputs, and safetensors checkpoints."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from companion import train as train_module
from companion.data import binarize, load_images
from companion.models import ConvVAE, VAEConfig
from companion.objectives import ELBOTerms
from companion.train import (
    History,
    TrainConfig,
    evaluate_elbo,
    load_checkpoint,
    save_checkpoint,
    train_vae,
)

CONFIG = VAEConfig(image_size=8, z_dim=4, channels=(8, 16))


def _vae(config: VAEConfig = CONFIG, seed: int = 0) -> ConvVAE:
    torch.manual_seed(seed)
    return ConvVAE(config)


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """200 training and 60 validation digits, 8×8 grey."""
    return (
        load_images(name="digits", split="train").images[:200],
        load_images(name="digits", split="valid").images[:60],
    )


def _train(images, *, seed: int = 0, **overrides) -> tuple[ConvVAE, History]:
    model = _vae()
    settings = (
        dict(epochs=4, batch_size=32, lr=3e-3, patience=10, seed=seed, progress=False)
        | overrides
    )
    history = train_vae(
        model=model,
        train_images=images[0],
        valid_images=images[1],
        config=TrainConfig(**settings),
    )
    return model, history


@pytest.fixture(scope="module")
def trained(images) -> tuple[ConvVAE, History]:
    return _train(images)


def test_training_lowers_the_training_and_validation_loss(trained) -> None:
    _, history = trained
    assert len(history.train_loss) == len(history.valid_loss) == 4
    assert history.train_loss[-1] < history.train_loss[0]
    assert min(history.valid_loss) < history.valid_loss[0]
    assert history.seconds > 0


def test_kept_epoch_is_the_one_with_the_lowest_validation_loss(trained) -> None:
    _, history = trained
    assert history.best_epoch == min(range(4), key=history.valid_loss.__getitem__)
    assert history.stopped_early == (history.best_epoch < 3)


def test_returned_model_scores_the_recorded_best_validation_loss_up_to_noise(
    images, trained
) -> None:
    model, history = trained
    # train_vae validates on one fixed binarisation:
    # the first draw of a generator seeded alike
    valid = binarize(images[1], generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    losses = torch.stack(
        [-evaluate_elbo(model=model, images=valid).mean() for _ in range(20)]
    )
    assert not model.training
    # the recorded value is one draw of the same one-sample estimate
    assert (
        abs(float(losses.mean()) - history.valid_loss[history.best_epoch])
        <= 5 * float(losses.std()) + 1e-3
    )


def test_same_seed_gives_an_identical_history_and_weights(images, trained) -> None:
    model, history = trained
    again_model, again = _train(images)
    assert again.train_loss == history.train_loss
    assert again.valid_loss == history.valid_loss
    for k, v in model.state_dict().items():
        assert torch.equal(v, again_model.state_dict()[k]), k


def test_another_seed_gives_another_history(images, trained) -> None:
    _, history = trained
    _, other = _train(images, seed=1, epochs=1)
    assert other.train_loss[0] != history.train_loss[0]


def test_early_stopping_restores_the_weights_of_the_best_epoch(
    images, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = [5.0, 3.0, 4.0, 6.0, 7.0, 1.0, 1.0]
    snapshots: list[dict[str, torch.Tensor]] = []

    def fake_evaluate(*, model, images, beta=1.0, batch_size=500):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return torch.full((len(images),), -scripted[len(snapshots) - 1])

    monkeypatch.setattr(train_module, "evaluate_elbo", fake_evaluate)
    model, history = _train(images, epochs=len(scripted), patience=3)

    assert (
        history.valid_loss == scripted[:5]
    )  # 3 epochs without improvement after epoch 1
    assert history.best_epoch == 1 and history.stopped_early
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k
    assert any(
        not torch.equal(v, snapshots[-1][k]) for k, v in model.state_dict().items()
    )


def test_a_diverging_step_raises_floating_point_error_advising_a_lower_learning_rate(
    images, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_elbo = train_module.elbo
    calls = []

    def diverging_once(
        **kwargs,
    ) -> ELBOTerms:  # the first step's loss blows up, as at too high a lr
        terms = real_elbo(**kwargs)
        calls.append(1)
        scale = float("nan") if len(calls) == 1 else 1.0
        return terms._replace(log_likelihood=terms.log_likelihood * scale)

    monkeypatch.setattr(train_module, "elbo", diverging_once)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        _train(images, epochs=2)


def test_training_on_grey_images_without_binarisation_gives_finite_losses(
    images,
) -> None:
    _, history = _train(images, epochs=1, binarize=False)
    assert all(torch.isfinite(torch.tensor(history.train_loss + history.valid_loss)))


def test_images_of_the_wrong_size_are_rejected_before_training(images) -> None:
    big = load_images(name="digits", split="valid", image_size=16).images[:10]
    with pytest.raises(ValueError, match=r"expected \(N, 1, 8, 8\)"):
        train_vae(
            model=_vae(),
            train_images=big,
            valid_images=images[1],
            config=TrainConfig(progress=False),
        )
    with pytest.raises(ValueError, match=r"expected \(N, 1, 8, 8\)"):
        train_vae(
            model=_vae(),
            train_images=images[0],
            valid_images=big,
            config=TrainConfig(progress=False),
        )


def test_unscaled_eight_bit_images_are_rejected(images) -> None:
    with pytest.raises(ValueError, match="divide 8-bit images by 255"):
        train_vae(
            model=_vae(),
            train_images=images[0] * 255,
            valid_images=images[1],
            config=TrainConfig(),
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epochs=0),
        dict(batch_size=0),
        dict(patience=0),
        dict(lr=0.0),
        dict(lr=-1e-3),
        dict(lr=float("nan")),
    ],
    ids=["epochs", "batch_size", "patience", "lr-zero", "lr-negative", "lr-nan"],
)
def test_train_config_rejects_non_positive_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="invalid TrainConfig"):
        TrainConfig(**kwargs)


# --- checkpoints ----------------------------------------------------------------------


# --- training aids against posterior collapse -----------------------------------------


def test_history_records_the_kl_of_every_group_for_every_epoch(images) -> None:
    from companion.models import HierarchicalVAE, HVAEConfig

    torch.manual_seed(0)
    model = HierarchicalVAE(
        HVAEConfig(image_size=8, z_dims=(2, 3, 4), channels=(8,), width=16)
    )
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, progress=False)
    history = train_vae(
        model=model, train_images=images[0], valid_images=images[1], config=config
    )
    assert len(history.kl_groups) == 3 and all(
        len(epoch) == 3 for epoch in history.kl_groups
    )
    assert all(kl >= 0 for epoch in history.kl_groups for kl in epoch)


def test_free_bits_let_the_encoder_use_more_nats_than_the_plain_elbo(images) -> None:
    _, plain = _train(images, epochs=3)
    _, free = _train(images, epochs=3, free_bits=50.0)
    # on 200 tiny digits the plain ELBO drives the KL towards 0 (collapse);
    # free bits do not
    assert free.kl_groups[-1][0] > 2 * plain.kl_groups[-1][0], (
        free.kl_groups,
        plain.kl_groups,
    )


def test_warm_up_epochs_are_never_kept_as_the_best(images) -> None:
    _, history = _train(images, epochs=4, kl_warmup_epochs=3, patience=1)
    assert history.best_epoch == 3
    # warm-up lowers the KL weight, so the first epoch's KL is above the plain run's
    _, plain = _train(images, epochs=4)
    assert history.kl_groups[0][0] > plain.kl_groups[0][0]


def test_gradient_spikes_above_the_threshold_are_skipped_and_counted(images) -> None:
    _, history = _train(images, epochs=2, skip_grad_norm=1e9)
    assert history.skipped_steps == 0
    with pytest.raises(FloatingPointError, match="every update of epoch 0 was skipped"):
        _train(images, epochs=2, skip_grad_norm=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kl_warmup_epochs=4),
        dict(kl_warmup_epochs=-1),
        dict(free_bits=-0.1),
        dict(skip_grad_norm=0.0),
    ],
    ids=["warmup>=epochs", "warmup<0", "free_bits<0", "skip<=0"],
)
def test_train_config_rejects_bad_collapse_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="invalid TrainConfig"):
        TrainConfig(epochs=4, **kwargs)


def test_checkpoint_round_trip_restores_weights_and_metadata(tmp_path: Path) -> None:
    source, target = _vae(seed=0), _vae(seed=1)
    metadata = {
        "config": {"z_dim": 4, "channels": [8, 16]},
        "test_nll": 41.5,
        "profile": "quick",
        "ok": True,
    }
    path = save_checkpoint(
        source, tmp_path / "nested" / "dir" / "vae.safetensors", metadata=metadata
    )

    assert path == tmp_path / "nested" / "dir" / "vae.safetensors"
    assert load_checkpoint(target, path) == metadata
    for k, v in source.state_dict().items():
        assert torch.equal(v, target.state_dict()[k]), k


def test_checkpoint_without_metadata_loads_an_empty_dict(tmp_path: Path) -> None:
    path = save_checkpoint(_vae(), tmp_path / "vae.safetensors")
    assert load_checkpoint(_vae(seed=1), path) == {}


def test_saving_leaves_no_temporary_part_files_and_overwrites_in_place(
    tmp_path: Path,
) -> None:
    path = tmp_path / "vae.safetensors"
    save_checkpoint(_vae(seed=0), path, metadata={"round": 1})
    save_checkpoint(_vae(seed=1), path, metadata={"round": 2})
    assert list(tmp_path.iterdir()) == [path]
    assert load_checkpoint(_vae(), path) == {"round": 2}


def test_saved_checkpoint_has_ordinary_file_permissions(tmp_path: Path) -> None:
    ordinary = tmp_path / "ordinary"
    ordinary.write_bytes(b"")
    path = save_checkpoint(_vae(), tmp_path / "vae.safetensors")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(
        os.stat(ordinary).st_mode
    )


def test_loading_a_missing_checkpoint_raises_file_not_found_with_advice(
    tmp_path: Path,
) -> None:
    with pytest.raises(FileNotFoundError, match="save_checkpoint"):
        load_checkpoint(_vae(), tmp_path / "absent.safetensors")


@pytest.mark.parametrize("damage", ["random", "truncated", "empty", "header-only"])
def test_corrupt_checkpoint_raises_value_error(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(_vae(), tmp_path / "vae.safetensors")
    data = path.read_bytes()
    damaged = {
        "random": bytes(
            torch.randint(
                0, 256, (len(data),), generator=torch.Generator().manual_seed(0)
            ).tolist()
        ),
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "header-only": data[:8],
    }[damage]
    path.write_bytes(damaged)
    model = _vae(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="not a valid safetensors checkpoint"):
        load_checkpoint(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_checkpoint_of_other_widths_is_rejected_naming_the_wrong_shapes(
    tmp_path: Path,
) -> None:
    path = save_checkpoint(_vae(), tmp_path / "vae.safetensors")
    wider = _vae(VAEConfig(image_size=8, z_dim=4, channels=(8, 32)))
    with pytest.raises(ValueError, match=r"wrong shapes \['decoder.head.0.bias'"):
        load_checkpoint(wider, path)


def test_checkpoint_of_another_depth_is_rejected_naming_missing_and_unexpected_keys(
    tmp_path: Path,
) -> None:
    path = save_checkpoint(_vae(), tmp_path / "vae.safetensors")
    deeper = _vae(VAEConfig(image_size=8, z_dim=4, channels=(8, 16, 16)))
    missing = (
        r"missing \['decoder.net.6.bias', 'decoder.net.6.weight', "
        r"'encoder.net.4.bias', 'encoder.net.4.weight'\]"
    )
    with pytest.raises(ValueError, match=missing + r", unexpected \[\]") as info:
        load_checkpoint(deeper, path)
    assert "build the model with the config it was trained with" in str(info.value)

    deeper_path = save_checkpoint(deeper, tmp_path / "deeper.safetensors")
    with pytest.raises(
        ValueError, match=r"missing \[\], unexpected \['decoder.net.6.bias'"
    ):
        load_checkpoint(_vae(), deeper_path)
