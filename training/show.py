"""A grid of dataset samples with their labels or masks, written as a PNG (matplotlib, Agg)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import open_dataset

TILE_PX = 200
DPI = 100
MASK_COLOURS = ["#000000", "#ff8c00", "#00bfff", "#7fff00", "#ff1493", "#ffffff"]  # noise, NR, LTE, ...


def grid_size(n: int, task: str) -> tuple[int, int]:
    """(width, height) in pixels of the grid ``show_grid`` draws for ``n`` samples of ``task``."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    per_sample = 2 if task == "segment" else 1  # spectrogram and its mask side by side
    return cols * per_sample * TILE_PX, rows * TILE_PX


def show_grid(path: str | Path, out: str | Path, n: int = 16) -> Path:
    """Draw ``n`` samples spread evenly over the dataset at ``path`` into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    ds = open_dataset(path)
    n = min(n, len(ds))
    if n < 1:
        raise ValueError(f"{path} holds no samples to show")
    width, height = grid_size(n, ds.task)
    cols = math.ceil(math.sqrt(n)) * (2 if ds.task == "segment" else 1)
    fig, axes = plt.subplots(height // TILE_PX, cols, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    mask_cmap = ListedColormap(MASK_COLOURS[: max(len(ds.classes), 2)])
    for slot, i in enumerate(np.linspace(0, len(ds) - 1, n).round().astype(int)):
        x, target = ds[int(i)]
        image = x[0] if x.ndim == 3 else x  # CSI: the first antenna (subcarriers x time)
        shown = image if x.ndim == 3 else 10 * np.log10(image + 1e-12)
        snr = ds.snr_db(int(i))
        snr_text = "" if snr is None else f" {snr:.0f} dB"
        if ds.task == "segment":
            ax, mask_ax = axes.flat[2 * slot], axes.flat[2 * slot + 1]
            mask_ax.imshow(target, origin="lower", aspect="auto", cmap=mask_cmap, vmin=0,
                           vmax=mask_cmap.N - 1, interpolation="nearest")
            present = [ds.classes[c] for c in np.unique(target) if c]
            mask_ax.set_title(", ".join(present) or "noise", fontsize=8)
            title = f"#{i}{snr_text}"
        else:
            ax = axes.flat[slot]
            title = f"#{i} {ds.classes[target] if target is not None else tuple(x.shape)}{snr_text}"
        # Colour from just under the noise floor (the median) up, so weak signals stay visible.
        floor = float(np.median(shown))
        spread = 5.0 if x.ndim == 2 else float(np.std(shown))
        ax.imshow(shown, origin="lower", aspect="auto", cmap="viridis", interpolation="antialiased",
                  vmin=floor - spread, vmax=max(float(shown.max()), floor + 4 * spread))
        ax.set_title(title, fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.05, hspace=0.15)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI)
    plt.close(fig)
    # A 64-colour palette: noise textures make full-colour PNGs 3-4x larger for no visible gain.
    with Image.open(buffer) as img:
        img.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out
