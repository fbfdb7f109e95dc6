"""A grid of dataset samples with their labels or masks, written as a PNG, PDF or SVG (matplotlib, Agg)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from radiofm.plotting import PLOT_SUFFIXES

from .datasets import SigmfDataset, open_dataset

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
    """Draw ``n`` samples spread evenly over the dataset at ``path`` into ``out`` (PNG, PDF or SVG by its suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from radiofm.checkpoint import atomic_path

    out = Path(out)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"picture {out} must end in {', '.join(PLOT_SUFFIXES)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    ds = open_dataset(path)
    if len(ds) == 0:
        raise ValueError(_too_short(ds) if isinstance(ds, SigmfDataset) else f"{path} holds no samples to show")
    n = min(n, len(ds))
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
    kind = out.suffix.lstrip(".").lower()
    try:
        with atomic_path(out) as tmp:
            if kind == "png":
                buffer = io.BytesIO()
                fig.savefig(buffer, dpi=DPI)
                # A 64-colour palette: noise textures make full-colour PNGs 3-4x larger for no visible gain.
                with Image.open(buffer) as img:
                    img.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG",
                                                                                                optimize=True)
            else:
                fig.savefig(tmp, format=kind, dpi=DPI)
    finally:
        plt.close(fig)
    return out


def _too_short(ds: SigmfDataset) -> str:
    """Why SigMF recordings gave no crop: each one's length against the crop's."""
    import sigmf

    parts = []
    for meta, rec in ds._recordings.items():
        rate = float(rec.get_global_field(sigmf.SAMPLE_RATE_KEY))
        crop = int(round(ds.crop_ms * 1e-3 * rate))
        parts.append(f"{meta} is {rec.sample_count} samples ({1e3 * rec.sample_count / rate:g} ms at {rate:g} Hz), "
                     f"shorter than one {ds.crop_ms:g} ms crop ({crop} samples)")
    return "; ".join(parts) + ": nothing to show"
