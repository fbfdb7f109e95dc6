"""Wideband LTE + NR captures with per-pixel labels, in the MATLAB spectrum-sensing example's layout.

One frame: 10 to 40 ms at 61.44 MS/s holding one to four LTE/NR carriers side by side (random
bandwidths, small random guards), each with its own fading and in-band SNR (0-40 dB), a
receiver LO offset of up to 2 kHz, plus unit-power white noise. The stored spectrogram is :func:`radiofm.signal.spectrogram`
of the capture, area-averaged to 256x256 (mean power per pixel); labels mark the pixels where a
carrier carries energy: all of an LTE carrier's band at all times (reference signals never stop),
the resource blocks and slots an NR carrier actually transmits in.

On disk (the MATLAB example's layout, so one reader serves both): ``LTE_NR_spect_frame_{i}.mat``
with ``rxSpectrogram`` (256x256 float32 linear power; rows = frequency from -fs/2 up, columns =
time) plus ``snr_db``, ``duration_ms`` and ``carriers`` (one row per carrier: class index, centre Hz,
bandwidth Hz, SCS Hz, SNR dB); ``LTE_NR_labels_frame_{i}.mat`` with ``data`` (uint8 0 noise,
127 NR, 255 LTE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radiofm import signal
from radiofm.config import PreprocessConfig

from .common import sample_rng, save_mat
from .ofdm import Carrier, carrier, draw_lte, draw_nr, frequency_shift, modulate_carriers

SAMPLE_RATE = 61.44e6
FRAME_SIZE = (256, 256)
CLASSES = ["noise", "NR", "LTE"]
LABEL_VALUES = (0, 127, 255)  # MATLAB example's uint8 codes for CLASSES
USABLE_BAND = 0.9  # carriers stay inside 90 % of the sampled band, clear of the anti-alias edges


def draw_scene(rng: np.random.Generator, snr_db: float | None, n_carriers: int | None, fs: float) -> list:
    """Carrier specs placed side by side across the band, with a random start and guards."""
    n = int(rng.integers(1, 5)) if n_carriers is None else n_carriers
    frame_snr = rng.uniform(0, 40) if snr_db is None else snr_db
    specs = []
    for _ in range(n):
        jitter = 0.0 if snr_db is not None else rng.uniform(-3, 3)
        snr = float(np.clip(frame_snr + jitter, 0, 40)) if snr_db is None else float(snr_db)
        max_bw = USABLE_BAND * fs / 1e6
        specs.append(draw_lte(rng, snr_db=snr, max_bw_mhz=max_bw) if rng.random() < 0.5
                     else draw_nr(rng, snr_db=snr, max_bw_mhz=max_bw))
    guards = rng.uniform(0, 2e6, n)
    widths = np.array([s.bandwidth_mhz * 1e6 for s in specs]) + guards
    while widths.sum() > USABLE_BAND * fs and len(specs) > 1:
        specs, guards, widths = specs[:-1], guards[:-1], widths[:-1]
    left = -USABLE_BAND * fs / 2 + rng.uniform(0, USABLE_BAND * fs - widths.sum())
    for spec, width, guard in zip(specs, widths, guards):
        spec.fc_hz = float(left + guard + (width - guard) / 2)
        left += width
    return specs


def _label_map(c: Carrier, timing: tuple, n_frames: int, hop: int, fs: float, size: tuple[int, int]) -> np.ndarray:
    """Pixels (frequency rows x time columns of the resized spectrogram) at least half covered by
    carrier ``c``'s active resource elements."""
    rows, cols = size
    edges_hz = (np.linspace(0, 1, rows + 1) - 0.5) * fs
    lo, hi = np.searchsorted(c.subcarrier_hz, edges_hz[:-1]), np.searchsorted(c.subcarrier_hz, edges_hz[1:])
    counts = np.concatenate([np.zeros((len(c.active), 1), np.int32), np.cumsum(c.active, 1, dtype=np.int32)], 1)
    row_cover = (counts[:, hi] - counts[:, lo]) / ((fs / rows) / (c.spec.scs_khz * 1e3))  # (symbols, rows)
    # STFT slice p is centred on sample p*hop; output column j averages slices [j, j+1) * n_frames/cols.
    col_edges = (np.linspace(0, n_frames, cols + 1) - 0.5) * hop
    start, end = timing
    overlap = np.clip(np.minimum(end[None, :], col_edges[1:, None]) - np.maximum(start[None, :], col_edges[:-1, None]), 0, None)
    cover = (overlap / np.diff(col_edges)[:, None]) @ row_cover  # (cols, rows)
    return cover.T >= 0.5


def lte_nr_capture(
    rng: np.random.Generator,
    *,
    snr_db: float | None = None,
    n_carriers: int | None = None,
    duration_ms: float | None = None,
    fs: float = SAMPLE_RATE,
    size: tuple[int, int | None] = FRAME_SIZE,
    pre: PreprocessConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(IQ complex64 at ``fs``, labels (H,W) uint8 class index, info): a frame before its spectrogram.
    A ``size`` width of None labels each STFT frame of the capture (W = its frame count)."""
    pre = pre or PreprocessConfig()
    duration_ms = int(rng.integers(10, 41)) if duration_ms is None else duration_ms
    specs = draw_scene(rng, snr_db, n_carriers, fs)
    n = int(round(duration_ms * 1e-3 * fs))
    carriers = [carrier(rng, spec, duration_ms) for spec in specs]
    iq, timing = modulate_carriers(carriers, fs, n)
    frequency_shift(iq, rng.uniform(-2e3, 2e3), fs, round(fs * 5e-4))  # the receiver's LO offset
    iq += (rng.standard_normal(2 * n, dtype=np.float32) * np.float32(np.sqrt(0.5))).view(np.complex64)
    n_frames = signal.num_frames(n, pre.n_fft, pre.hop)
    size = (size[0], n_frames if size[1] is None else size[1])
    labels = np.zeros(size, np.uint8)
    for c in carriers:
        labels[_label_map(c, timing[c.spec.scs_khz], n_frames, pre.hop, fs, size)] = CLASSES.index(c.spec.kind)
    info = dict(
        snr_db=float(np.mean([s.snr_db for s in specs])),
        duration_ms=float(duration_ms),
        carriers=[[CLASSES.index(s.kind), s.fc_hz, s.bandwidth_mhz * 1e6, s.scs_khz * 1e3, s.snr_db] for s in specs],
    )
    return iq, labels, info


def lte_nr_frame(rng: np.random.Generator, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(spectrogram (H,W) float32 linear power, labels (H,W) uint8 class index, info); keyword
    arguments as :func:`lte_nr_capture`, whose IQ this is, area-averaged to ``size``."""
    iq, labels, info = lte_nr_capture(rng, **kwargs)
    spectrogram = signal.spectrogram(iq, kwargs.get("pre") or PreprocessConfig())
    return signal.resize(spectrogram, kwargs.get("size", FRAME_SIZE), "area"), labels, info


def make_lte_nr_frame(rng: np.random.Generator, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """A fresh (spectrogram, labels) pair in memory; keyword arguments as :func:`lte_nr_frame`."""
    spec_img, labels, _ = lte_nr_frame(rng, **kwargs)
    return spec_img, labels


KIND = "segment"


def generator_params() -> dict[str, Any]:
    return dict(sample_rate=SAMPLE_RATE, frame_size=list(FRAME_SIZE), duration_ms=[10, 40], carriers=[1, 4],
                snr_db=[0, 40], resize="area", label_values=dict(zip(CLASSES, LABEL_VALUES)))


def sample_paths(out: Path, i: int) -> list[Path]:
    """MATLAB example layout: labels first, so a frame is complete once its spectrogram exists."""
    return [out / f"LTE_NR_labels_frame_{i}.mat", out / f"LTE_NR_spect_frame_{i}.mat"]


def write_sample(out: Path, i: int, seed: int, pre: PreprocessConfig) -> None:
    spec_img, labels, info = lte_nr_frame(sample_rng(seed, i), pre=pre)
    labels_path, spect_path = sample_paths(out, i)
    save_mat(labels_path, data=np.asarray(LABEL_VALUES, np.uint8)[labels])
    save_mat(spect_path, rxSpectrogram=spec_img, snr_db=info["snr_db"], duration_ms=info["duration_ms"],
             carriers=np.asarray(info["carriers"], np.float64).reshape(-1, 5))
