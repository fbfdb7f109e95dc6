"""Masked Spectrogram Modeling: pretrain an MAE on unlabelled spectrograms.

``pretrain(...)`` builds the MAE of a size preset, calibrates the input Normalize on the data
(recorded in the model's config, so inference repeats it), and runs the shared training loop with
the masked-patch MSE loss. Every ``sample_every`` epochs it draws ``RUN/samples/epoch_XXX.png``:
original, masked input, and reconstruction (visible patches pasted back, as MAE shows it). CSI data
(antennas as channels) pretrains a model with as many input channels; the PNG shows the first.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import torch

from radiofm.config import preset
from radiofm.model import build_model, patchify, unpatchify

from .loop import TrainConfig, check_resume, train
from .prepared import capture_of, fit_preprocess, open_data, prepare_data

SAMPLES_SHOWN = 4


def pretrain(data: str | Path, model: str, mask_ratio: float, tc: TrainConfig, sample_every: int = 5,
             norm_pix_loss: bool = False) -> Path | None:
    tc.validate()
    if not (isinstance(mask_ratio, numbers.Real) and 0 < mask_ratio < 1):
        raise ValueError(f"--mask-ratio (mask_ratio) must be in (0, 1), the share of patches hidden; "
                         f"got {mask_ratio!r}")
    if not (isinstance(sample_every, int) and sample_every >= 0):
        raise ValueError(f"--sample-every must be 0 (no reconstruction PNGs) or a number of epochs, "
                         f"got {sample_every!r}")
    size = preset(model).img_size  # an unknown preset fails here, before any data work
    settings = {"command": "pretrain", "--data": str(Path(data).resolve()), "--model": model,
                "--mask-ratio": mask_ratio, "--norm-pix-loss": bool(norm_pix_loss)}
    check_resume(tc, settings)
    dataset = open_data(data, "mae")
    pre = capture_of(dataset, fit_preprocess(dataset, size, seed=tc.seed))
    # CSI items carry their antennas as channels: the model takes as many as the fitted Normalize has.
    chans = len(pre.mean) if pre.kind == "csi" else 1
    cfg = preset(model, task="mae", mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, preprocess=pre,
                 in_chans=chans)
    prepared = prepare_data(dataset, cfg, progress=tc.progress)
    torch.manual_seed(tc.seed)
    net = build_model(cfg)

    def loss_fn(m, x, _y, generator):
        return m(x, mask_ratio, generator)[0]

    def on_epoch_end(m, epoch: int):
        if sample_every and (epoch % sample_every == 0 or epoch == tc.epochs):
            x = prepared.x[:SAMPLES_SHOWN].to(next(m.parameters()).device)
            save_reconstructions(m, x, mask_ratio, Path(tc.out) / "samples" / f"epoch_{epoch:03d}.png", tc.seed)
        return None

    return train(net, cfg, prepared, loss_fn, tc, on_epoch_end, settings)


def save_reconstructions(model, x: torch.Tensor, mask_ratio: float, path: Path, seed: int = 0) -> Path:
    """A PNG grid: one column per sample; rows original, masked, reconstruction + visible patches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radiofm.checkpoint import atomic_path

    p, grid, chans = model.cfg.patch_size, model.cfg.grid_size, model.cfg.in_chans
    _, pred, mask = model(x, mask_ratio, torch.Generator(x.device).manual_seed(seed))
    if model.cfg.norm_pix_loss:  # predictions are per-patch normalised: undo with the true patch statistics
        target = patchify(x, p)
        pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
    keep = (1 - mask).unsqueeze(-1).expand(-1, -1, p * p * chans)
    masked = unpatchify(patchify(x, p) * keep, p, grid, chans)
    masked = torch.where(unpatchify(keep, p, grid, chans) > 0, masked, torch.full_like(masked, float("nan")))
    recon = unpatchify(pred * (1 - keep) + patchify(x, p) * keep, p, grid, chans)
    rows = [("original", x), (f"masked {mask_ratio:.0%}", masked), ("reconstruction", recon)]
    n = x.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 6.6), squeeze=False)
    lo, hi = float(x[:, 0].min()), float(x[:, 0].max())
    for r, (title, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.asarray(imgs[c, 0].float().cpu()), origin="lower", aspect="auto", vmin=lo, vmax=hi,
                      cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path
