"""A briefly trained classifier of any preset size, for speed/accuracy benchmarks on a CPU.

Training a ViT-S end to end takes hours on a small CPU. This fits only the head: the encoder keeps
its seeded random initialisation, its pooled features of the training samples are computed once,
and a linear layer is fitted on them (the feature standardisation is folded into the head). The
result is a real classifier of the preset's size and shape, with non-trivial accuracy and logit
margins, which is what measuring int8 or bf16 label agreement against fp32 needs. It says nothing
about the accuracy a pretrained model reaches.

    python -m radiofm.benchmarks.probe_classifier --data data/signals-train --preset vit-s \\
        --samples 768 --out /tmp/signals-vit-s-probe
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def fit_probe(data: str, preset_name: str, samples: int, out: str, seed: int = 0, batch: int = 16,
              steps: int = 1500, log=print) -> float:
    """Write the model folder ``out``; returns the head's training accuracy."""
    import torch

    from radiofm import signal
    from radiofm.checkpoint import save_model
    from radiofm.config import preset
    from radiofm.model import build_model
    from radiofm.training.datasets import open_dataset

    dataset = open_dataset(data)
    if dataset.task != "classify":
        raise ValueError(f"{data} is a {dataset.task!r} dataset; the probe fits classifiers")
    torch.manual_seed(seed)
    cfg = preset(preset_name, task="classify", num_classes=len(dataset.classes), labels=dataset.classes)
    model = build_model(cfg).eval()
    n = min(samples, len(dataset))
    features, labels = [], []
    with torch.inference_mode():
        for start in range(0, n, batch):
            pairs = [dataset[i] for i in range(start, min(start + batch, n))]
            x = signal.prepare(np.stack([p[0] for p in pairs]), cfg.preprocess, cfg.img_size)
            features.append(model.pooled(torch.from_numpy(x)))
            labels += [p[1] for p in pairs]
            log(f"features {min(start + batch, n)}/{n}")
    f, y = torch.cat(features), torch.tensor(labels)
    mean, std = f.mean(0), f.std(0) + 1e-6
    z = (f - mean) / std
    head = torch.nn.Linear(f.shape[1], cfg.num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(z), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        train_acc = float((head(z).argmax(1) == y).float().mean())
        # head((f - mean) / std) == (W / std) f + (b - (W / std) . mean): one Linear on raw features.
        weight = head.weight / std
        model.head.weight.copy_(weight)
        model.head.bias.copy_(head.bias - weight @ mean)
    save_model(model, out, cfg)
    log(f"wrote {out}: {preset_name} classifier, head fitted on {n} samples, training accuracy {100 * train_acc:.1f} %")
    return train_acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="labelled classification dataset folder")
    parser.add_argument("--preset", default="vit-s")
    parser.add_argument("--samples", type=int, default=768, help="training samples the head is fitted on")
    parser.add_argument("--seed", type=int, default=0, help="seeds the encoder's random initialisation")
    parser.add_argument("--out", required=True, help="model folder to write")
    args = parser.parse_args(argv)
    fit_probe(args.data, args.preset, args.samples, args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
