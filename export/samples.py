"""Data an export is validated and calibrated on.

Validation wants real model inputs, not noise: parity on noise says little about the decisions a
deployed model makes. Segmenters of spectrograms are checked on synthetic LTE/NR frames, classifiers
and encoders on synthetic signal captures, all run through ``radiofm.signal.prepare`` exactly as the
SDK does at inference; CSI models with the generator's three antennas on synthetic csi-har
recordings. Where no generator fits the model (CSI of another antenna count), the set falls back to
standard-normal inputs (the scale of normalised input) and says so in the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiofm import signal
from radiofm.config import ModelConfig


@dataclass
class Samples:
    images: np.ndarray  # (N, C, H, W) float32, model input
    targets: np.ndarray | None  # (N,) class indices or (N, H, W) class maps; None when unlabelled
    source: str  # where the samples came from, for the report


def validation_set(cfg: ModelConfig, count: int, seed: int = 0) -> Samples:
    """``count`` model inputs for ``cfg``: LTE/NR frames for segmenters, signal captures for
    classifiers and encoders of spectrograms, csi-har recordings for 3-antenna CSI models,
    standard-normal inputs otherwise."""
    from radiofm.training.synth.csi_har import ANTENNAS

    rng = np.random.default_rng(seed)
    if cfg.preprocess.kind == "spectrogram" and cfg.in_chans == 1:
        make = _lte_nr_frames if cfg.task == "segment" else _signal_captures
        return make(cfg, count, rng, seed)
    if cfg.preprocess.kind == "csi" and cfg.in_chans == ANTENNAS:
        return _csi_recordings(cfg, count, rng, seed)
    images = rng.standard_normal((count, cfg.in_chans, *cfg.img_size), dtype=np.float32)
    return Samples(images, None, "standard-normal inputs (no synthetic generator fits this model)")


def _signal_captures(cfg: ModelConfig, count: int, rng: np.random.Generator, seed: int) -> Samples:
    from radiofm.training.synth.signals import CLASSES, SNR_RANGE, generate_signal

    kinds = np.arange(count) % len(CLASSES)  # balanced, as the synthetic datasets are
    specs = [signal.spectrogram(generate_signal(CLASSES[k], rng, float(rng.uniform(*SNR_RANGE))), cfg.preprocess)
             for k in kinds]
    images = signal.prepare(np.stack(specs), cfg.preprocess, cfg.img_size)
    targets = kinds if cfg.task == "classify" and cfg.labels == CLASSES else None
    return Samples(images, targets, f"synthetic signal captures (signals generator, {SNR_RANGE[0]:g} to "
                                    f"{SNR_RANGE[1]:g} dB SNR, seed {seed})")


def _csi_recordings(cfg: ModelConfig, count: int, rng: np.random.Generator, seed: int) -> Samples:
    from radiofm.training.synth.csi_har import CLASSES, SNR_RANGE, generate_csi

    activities = np.arange(count) % len(CLASSES)
    images = signal.prepare(np.stack([generate_csi(CLASSES[a], rng, float(rng.uniform(*SNR_RANGE))) for a in activities]),
                            cfg.preprocess, cfg.img_size)
    targets = activities if cfg.task == "classify" and cfg.labels == CLASSES else None
    return Samples(images, targets, f"synthetic CSI recordings (csi-har generator, {SNR_RANGE[0]:g} to "
                                    f"{SNR_RANGE[1]:g} dB SNR, seed {seed})")


def _lte_nr_frames(cfg: ModelConfig, count: int, rng: np.random.Generator, seed: int) -> Samples:
    from radiofm.training.synth.lte_nr import CLASSES, make_lte_nr_frame

    # 10 ms frames: as representative as 40 ms ones for parity, and four times faster to make.
    frames = [make_lte_nr_frame(rng, duration_ms=10, pre=cfg.preprocess) for _ in range(count)]
    images = signal.prepare(np.stack([f[0] for f in frames]), cfg.preprocess, cfg.img_size)
    labelled = cfg.labels == CLASSES
    targets = signal.resize_labels(np.stack([f[1] for f in frames]), cfg.img_size) if labelled else None
    return Samples(images, targets, f"synthetic LTE/NR frames (lte-nr generator, 10 ms, seed {seed})")


def calibration_set(folder: str | os.PathLike, cfg: ModelConfig, limit: int = 256) -> Samples:
    """Up to ``limit`` samples of a dataset folder, prepared as model input, with their labels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder {folder} does not exist")
    from radiofm.training.datasets import open_dataset

    dataset = open_dataset(folder)
    n = min(limit, len(dataset))
    if n == 0:
        raise ValueError(f"calibration folder {folder} holds no samples")
    pairs = [dataset[i] for i in range(n)]
    check_calibration_kind(folder, pairs[0][0], cfg)
    # Items may differ in size (recordings, TIFFs): prepare each to the model grid, then stack.
    images = np.concatenate([signal.prepare(x, cfg.preprocess, cfg.img_size) for x, _ in pairs])
    targets = None
    same_classes = not cfg.labels or list(dataset.classes) == cfg.labels
    if all(t is not None for _, t in pairs) and dataset.task == cfg.task and same_classes:
        targets = np.stack([np.asarray(t) for _, t in pairs])
        if cfg.task == "segment":
            targets = signal.resize_labels(targets, cfg.img_size)
    return Samples(images, targets, f"{n} samples of {folder}")


KIND_WORDS = {"spectrogram": "spectrograms", "csi": "CSI amplitude"}


def check_calibration_kind(folder: Path, item: np.ndarray, cfg: ModelConfig) -> None:
    """Refuse calibration data of another kind (or channel count) than the model's input: int8 ranges
    calibrated on it would be those of data the model never sees."""
    from radiofm.training.prepared import item_kind  # the rule training sets a model's input kind by

    kind, wanted = item_kind(item), cfg.preprocess.kind
    if kind != wanted:
        raise ValueError(
            f"--calib {folder} holds {KIND_WORDS[kind]} ({kind} data), but the model takes {KIND_WORDS[wanted]} "
            f"(preprocess kind {wanted!r}): calibrate on a dataset of the model's own kind of input"
            + (", e.g. `radiofm data synth --task csi-har`" if wanted == "csi" else
               ", e.g. `radiofm data synth --task signals`")
        )
    channels = int(np.shape(item)[0]) if np.ndim(item) == 3 else 1
    if wanted == "csi" and channels != cfg.in_chans:
        raise ValueError(f"--calib {folder} holds CSI of {channels} channel(s), but the model takes {cfg.in_chans}: "
                         f"calibrate on CSI recorded with the model's number of antennas")
