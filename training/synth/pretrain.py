"""Unlabelled spectrograms for masked spectrogram modeling: wideband scenes at random SNRs,
bandwidths and crop lengths.

Half the samples are LTE/NR scenes (one to four carriers side by side, as in ``lte-nr``), half mix
one to four emitters of the ``signals`` catalogue at random frequencies. Captures are 30.72 MS/s,
1 to 8 ms long (crop lengths vary: the model's resize evens them out), each emitter at its own
-10..30 dB in-band SNR; stored as :func:`radiofm.signal.spectrogram` (1024 x 61..481, linear power).
CSI is left out: the MAE is pretrained on 1-channel spectrograms, as in the paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radiofm import signal
from radiofm.config import PreprocessConfig

from . import signals
from .common import complex_noise, sample_rng, save_npz
from .lte_nr import draw_scene
from .ofdm import carrier, modulate_carriers

SAMPLE_RATE = signals.SAMPLE_RATE
DURATION_MS = (1, 8)
SNR_RANGE = (-10.0, 30.0)
CLASSES: list[str] = []
KIND = "pretrain"


def pretrain_capture(rng: np.random.Generator, fs: float = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """(IQ of one mixed capture, mean emitter SNR in dB)."""
    duration_ms = int(rng.integers(DURATION_MS[0], DURATION_MS[1] + 1))
    n = duration_ms * round(fs * 1e-3)
    if rng.random() < 0.5:
        specs = draw_scene(rng, None, None, fs)
        for spec in specs:
            spec.snr_db = float(rng.uniform(*SNR_RANGE))
        iq, _ = modulate_carriers([carrier(rng, s, duration_ms) for s in specs], fs, n)
        snrs = [s.snr_db for s in specs]
    else:
        kinds = rng.choice(signals.CLASSES[1:], int(rng.integers(1, 5)))
        snrs = list(rng.uniform(*SNR_RANGE, kinds.size))
        iq = sum(signals.GENERATORS[k](rng, snr, n, fs).astype(np.complex64) for k, snr in zip(kinds, snrs))
    return iq + complex_noise(rng, n), float(np.mean(snrs))


def generator_params() -> dict[str, Any]:
    return dict(sample_rate=SAMPLE_RATE, duration_ms=list(DURATION_MS), snr_db=list(SNR_RANGE),
                sources=["lte-nr scene", "1-4 signals emitters"])


def sample_paths(out: Path, i: int) -> list[Path]:
    return [out / f"sample_{i:06d}.npz"]


def write_sample(out: Path, i: int, seed: int, pre: PreprocessConfig) -> None:
    iq, snr_db = pretrain_capture(sample_rng(seed, i))
    x = np.ascontiguousarray(signal.spectrogram(iq, pre))
    save_npz(sample_paths(out, i)[0], x=x, label=np.int64(-1), snr_db=np.float64(snr_db))
