"""How many decoder evaluations per pass the IWAE loops should use,
measured side by side.

`companion.objectives.iwae_curve` evaluates importance samples for a batch of images in
passes of `evals_per_pass` decoder evaluations (samples × images). Too small a pass
wastes time on per-call overhead; too large a pass leaves the cache (on 2 CPU cores,
chapter 2's 28×28 decoder in passes of 512 and 4 096 ran 2.1× and 2.4× slower than in
passes of 128, and passes of 32 1.4× slower). This script times
the default against other pass sizes and against a per-image Python loop, interleaved in
one run, and checks that the default is within 1.25× of the fastest. Run: `make bench`.
"""

from __future__ import annotations

import statistics

import torch

from companion import data
from companion.models import ConvVAE
from companion.objectives import default_evals_per_pass, iwae_bound, iwae_curve
from companion.timing import Stopwatch
from timing import book_vae

N_IMAGES, K, REPEATS = 64, 1_000, 3
# The largest pass compared. One pass of all N_IMAGES · K evaluations held 14 GB of the
# 28×28 decoder's activations (and minutes per call); 4 096 already shows what large
# passes cost on a CPU.
LARGEST_PASS = 4_096


def per_image_loop(model: ConvVAE, images: torch.Tensor) -> None:
    for i in range(len(images)):
        iwae_bound(model=model, x=images[i : i + 1], k=K)


def batched(evals: int):
    def run(model: ConvVAE, images: torch.Tensor) -> None:
        iwae_curve(
            model=model,
            images=images,
            ks=(K,),
            batch_size=len(images),
            evals_per_pass=evals,
            progress=False,
        )

    return run


def main() -> None:
    torch.manual_seed(0)
    model, label = book_vae()
    size = model.config.image_size
    images = data.binarize(
        data.load_images(name="mnist_5k", split="test", image_size=size).images[
            :N_IMAGES
        ]
    )
    default = default_evals_per_pass(torch.device("cpu"))
    candidates = {
        f"passes of {e}": batched(e) for e in (32, default, 512, LARGEST_PASS)
    }
    candidates["per-image loop"] = per_image_loop
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.no_grad():
        for _ in range(REPEATS):  # interleaved, so drift in machine load hits all alike
            for name, fn in candidates.items():
                with Stopwatch() as clock:
                    fn(model, images)
                times[name].append(clock.seconds)
    med = {name: statistics.median(t) for name, t in times.items()}
    best = min(med.values())
    print(
        f"IWAE of {N_IMAGES} test images, {label}, k = {K}, {torch.get_num_threads()} "
        f"threads (median of {REPEATS})"
    )
    for name, t in med.items():
        mark = "  <- default" if name == f"passes of {default}" else ""
        print(f"  {name:>20}: {t * 1e3:8.0f} ms  ({t / best:4.2f}× the fastest){mark}")
    ratio = med[f"passes of {default}"] / best
    if ratio > 1.25:
        raise SystemExit(
            f"the default pass size is {ratio:.2f}× slower than the fastest "
            "(target <= 1.25)"
        )


if __name__ == "__main__":
    main()
