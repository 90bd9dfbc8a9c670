"""One attack step against one encoder forward + input-gradient backward, side by side.

An attack step of `companion.attacks.pgd` (unsupervised SKL objective, L∞ sign step,
projection) should cost little more than the encoder pass it cannot avoid. The step's
time is measured inside the library: (pgd with S steps − pgd with 0 steps) / S, which
removes the random start and the final scoring. Both are timed interleaved in one run at
batch sizes 1, 64 and 1024. Target (issue 4): ratio at most 1.3 at batch 64 and above.
"""

from __future__ import annotations

import statistics
from functools import partial

import torch

from companion.attacks import AttackConfig, pgd, symmetric_kl
from companion.models import ConvVAE
from timing import book_vae, median_time

STEPS, REPEATS = 20, 5


def encoder_pass(model: ConvVAE, x: torch.Tensor) -> None:
    x = x.detach().requires_grad_(True)
    q = model.encode(x)
    torch.autograd.grad((q.mean.sum() + q.stddev.sum()), x)


def attack(model: ConvVAE, x: torch.Tensor, steps: int) -> None:
    with torch.no_grad():
        q_ref = model.encode(x)
    config = AttackConfig(radius=0.1, steps=steps, restarts=1)
    pgd(
        lambda xa: symmetric_kl(model.encode(xa), q_ref),
        x_ref=x,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )


def measure(
    model: ConvVAE,
    *,
    device: torch.device,
    batches: tuple[int, ...] = (1, 64, 1024),
    steps: int = STEPS,
    repeats: int = REPEATS,
) -> list[dict[str, float]]:
    """Encoder pass and attack step (seconds) and their ratio at each batch size.

    ``model`` is moved to ``device``; the two are timed interleaved, so that drift in
    the machine's load hits both alike.
    """
    model = model.to(device)
    rows = []
    for batch in batches:
        x = torch.rand(
            batch, *model.image_shape, generator=torch.Generator().manual_seed(1)
        ).to(device)
        reps = repeats if batch < 1024 else min(repeats, 3)
        enc, step = [], []
        for _ in range(reps):
            enc.append(median_time(partial(encoder_pass, model, x), 3, device=device))
            full = median_time(partial(attack, model, x, steps), 1, device=device)
            empty = median_time(partial(attack, model, x, 0), 1, device=device)
            step.append((full - empty) / steps)
        e, s = statistics.median(enc), statistics.median(step)
        rows.append(dict(batch=batch, encoder_s=e, step_s=s, ratio=s / e))
    return rows


def main() -> None:
    torch.manual_seed(0)
    model, label = book_vae()
    model.requires_grad_(False)
    print(
        f"attack step / encoder forward+backward, {label}, {torch.get_num_threads()} "
        "threads"
    )
    rows = measure(model, device=torch.device("cpu"))
    for r in rows:
        print(
            f"  batch {r['batch']:>5}: encoder pass {r['encoder_s'] * 1e3:7.2f} ms, "
            f"attack step {r['step_s'] * 1e3:7.2f} ms, ratio {r['ratio']:4.2f}"
        )
    failed = [r["batch"] for r in rows if r["batch"] >= 64 and r["ratio"] > 1.3]
    if failed:
        raise SystemExit(
            f"attack step more than 1.3× an encoder pass at batch sizes {failed}"
        )


if __name__ == "__main__":
    main()
