"""Pictures of predictions: what the model saw and what it said, one row per input file.

Each input is a run of units (the windows of a long IQ recording, or the items of a batch), drawn
side by side: the spectrogram in dB with the predicted label (and its probability) above each unit,
then, for a segmenter, the predicted class map, or, for a classifier, each unit's class
probabilities as a stacked bar. Windows of a recording follow each other in time, so their
spectrograms read as the recording's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_UNITS = 32  # per input: a longer recording shows its first windows, and says so
MAX_INPUTS = 8
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


@dataclass
class Unit:
    spectrogram: np.ndarray  # (H, W) linear power (a model input that is not a spectrogram: as it is)
    title: str  # the predicted label and its probability, or the segmenter's class shares
    probs: np.ndarray | None = None  # (K,) class probabilities (classifier)
    classes: np.ndarray | None = None  # (H, W) class map (segmenter)


@dataclass
class Row:
    name: str
    units: list[Unit] = field(default_factory=list)
    total: int = 0  # units predicted; more than len(units) when the row was cut at MAX_UNITS


def plot_predictions(out: str | Path, rows: list[Row], classes: list[str], task: str, title: str) -> list[list[str]]:
    """Draw ``rows`` into ``out`` (PNG, PDF or SVG by its suffix); returns the unit titles drawn, row by row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from PIL import Image

    from radiofm.checkpoint import atomic_path
    from radiofm.training.show import MASK_COLOURS

    if Path(out).suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"plot file {out} must end in {', '.join(PLOT_SUFFIXES)}")
    if not rows:
        raise ValueError("nothing to plot")
    shown_rows = rows[:MAX_INPUTS]
    segment = task == "segment"
    colours = MASK_COLOURS[: len(classes)] if segment else plt.get_cmap("tab10").colors[: len(classes)]
    cmap = ListedColormap(colours)
    width = max(len(r.units) for r in shown_rows)
    # A class map is worth the spectrogram's size; a probability strip less.
    per_unit, ratios = (3.0, [3, 3]) if segment else (1.6, [3, 2])
    fig, axes = plt.subplots(2 * len(shown_rows), 1, figsize=(min(4 + per_unit * width, 24), 1.2 * sum(ratios) * len(shown_rows)),
                             squeeze=False, gridspec_kw={"height_ratios": ratios * len(shown_rows)})
    drawn = []
    for r, row in enumerate(shown_rows):
        top, bottom = axes[2 * r, 0], axes[2 * r + 1, 0]
        edges = np.cumsum([0] + [u.spectrogram.shape[1] for u in row.units])
        db = np.concatenate([10 * np.log10(np.maximum(u.spectrogram, 1e-12)) for u in row.units], axis=1)
        floor = float(np.median(db))  # colour from just under the noise floor up, so weak signals show
        top.imshow(db, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                   vmin=floor - 5, vmax=max(float(db.max()), floor + 20))
        for x in edges[1:-1]:
            top.axvline(x - 0.5, color="white", lw=0.8)
        top.set_xticks((edges[:-1] + edges[1:]) / 2 - 0.5)
        top.set_xticklabels([u.title for u in row.units], fontsize=7, rotation=30 if width > 4 else 0)
        top.xaxis.tick_top()
        top.set_yticks([])
        cut = f" (first {len(row.units)} of {row.total})" if row.total > len(row.units) else ""
        top.set_ylabel(Path(row.name).name + cut, fontsize=8)
        drawn.append([u.title for u in row.units])
        if segment:
            rows_shown = db.shape[0]
            for u, a, b in zip(row.units, edges[:-1], edges[1:]):  # each map over its own spectrogram's extent
                bottom.imshow(u.classes, origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=len(classes) - 1,
                              interpolation="nearest", extent=(a - 0.5, b - 0.5, -0.5, rows_shown - 0.5))
            bottom.set_xlim(top.get_xlim())
            bottom.set_ylim(top.get_ylim())
            bottom.set_yticks([])
        else:
            probs = np.stack([u.probs for u in row.units])  # (units, K)
            below = np.zeros(len(probs))
            centres = (edges[:-1] + edges[1:]) / 2 - 0.5
            for k in range(len(classes)):
                bottom.bar(centres, probs[:, k], width=np.diff(edges) * 0.9, bottom=below, color=colours[k])
                below += probs[:, k]
            bottom.set_xlim(top.get_xlim())
            bottom.set_ylim(0, 1)
            bottom.set_ylabel("probability", fontsize=7)
        bottom.set_xticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours]
    fig.legend(handles, classes, loc="lower center", ncol=min(len(classes), 8), fontsize=8, frameon=False)
    more = f" (first {MAX_INPUTS} of {len(rows)} inputs)" if len(rows) > MAX_INPUTS else ""
    fig.suptitle(title + more, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    kind = Path(out).suffix.lstrip(".").lower()
    with atomic_path(out) as tmp:
        if kind == "png":  # a 64-colour palette: noise textures make full-colour PNGs several times larger
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90)
            with Image.open(buffer) as img:
                img.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG",
                                                                                            optimize=True)
        else:
            fig.savefig(tmp, format=kind, dpi=90)
    plt.close(fig)
    return drawn


def prediction_row(path, item, preds, runner, rate: float | None = None) -> Row:
    """The row ``plot_predictions`` draws for one input file (``radiofm.io.Input``) and the predictions
    ``runner`` (a Classifier or Segmenter) made on it: one Prediction per window of a long recording
    (``stream_iq``, ``stream_csi``), or one for the whole file."""
    from radiofm import signal

    pre = runner.cfg.preprocess
    if item.is_iq and preds[0].start is not None:  # windows of a long recording
        window = pre.capture_samples
        spectra = [signal.spectrogram(item.data[p.start:p.start + window], pre) for p in preds[:MAX_UNITS]]
        results = [(p, 0) for p in preds]
        fs = rate or pre.sample_rate
        when = [f"{p.start / fs * 1e3:.2f} ms: " if fs else f"sample {p.start}: " for p in preds]
    elif preds[0].start is not None:  # windows of a long CSI recording: antenna 0 of each
        window = pre.capture_samples
        spectra = [item.data[0, :, p.start:p.start + window] for p in preds[:MAX_UNITS]]
        results = [(p, 0) for p in preds]
        when = [f"packet {p.start}: " for p in preds]
    elif (edges := _segment_windows(runner, item)) is not None:
        # One long capture segmented window by window: each window's spectrogram (at the stored grid,
        # as the model saw it) under its part of the map, computed a window at a time.
        k, width = len(edges) - 1, preds[0].indices.shape[-1] // (len(edges) - 1)
        windows = list(zip(edges[:-1], edges[1:]))[:MAX_UNITS]
        spectra = [runner._stored(signal.spectrogram(item.data, pre, (int(a), int(b)))[None])[0] for a, b in windows]
        p = preds[0]
        results = [(type(p)(p.indices[:, :, j * width:(j + 1) * width], p.probs, p.labels[:, :, j * width:(j + 1) * width]), 0)
                   for j in range(k)]
        fs = rate or pre.sample_rate
        when = [f"{a * pre.hop / fs * 1e3:.1f} ms: " if fs else f"frame {a}: " for a, _ in windows]
    else:
        captures = [item.data] if item.is_iq and item.data.ndim == 1 else item.data
        spectra = np.stack([signal.spectrogram(c, pre) for c in captures]) if item.is_iq else np.asarray(item.data)
        spectra = spectra.reshape(-1, *spectra.shape[-2:]) if spectra.ndim < 4 else spectra[:, 0]  # first channel
        results = [(preds[0], i) for i in range(len(preds[0]))]
        when = [""] * len(results)
    row = Row(str(path), total=len(results))
    for spec, (pred, i), at in zip(spectra, results[:MAX_UNITS], when):
        if runner.cfg.task == "segment":
            shares = sorted(((float((pred.indices[i] == k).mean()), name) for k, name in enumerate(runner.classes)),
                            reverse=True)
            title = at + ", ".join(f"{name} {share:.0%}" for share, name in shares[:3] if share > 0)
            row.units.append(Unit(np.asarray(spec, float), title, classes=pred.indices[i]))
        else:
            row.units.append(Unit(np.asarray(spec, float), f"{at}{pred.labels[i]} {pred.probs[i].max():.2f}",
                                  probs=pred.probs[i]))
    return row


def _segment_windows(runner, item) -> "np.ndarray | None":
    """The window edges (STFT frames) a Segmenter cut one long IQ capture into, or None."""
    if not (item.is_iq and runner.cfg.task == "segment" and item.data.ndim == 1):
        return None
    return runner._capture_windows(item.data.size)
