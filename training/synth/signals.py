"""Emitter classification: eight signal types a spectrum-sensing app meets, -10 to 30 dB in-band SNR.

Each capture is 32768 samples (1.07 ms) at 30.72 MS/s, one emitter at a random centre frequency
plus unit-power white noise; the stored item is exactly :func:`radiofm.signal.spectrogram` of it
(1024 x 65, linear power), so a classifier's ``predict_iq(iq)`` sees what training saw.

SNR is in-band: the emitter's power while it transmits over the noise power in its occupied
bandwidth (one STFT bin's noise bandwidth for a CW tone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy.signal import resample_poly

from radiofm import signal
from radiofm.config import PreprocessConfig

from .common import complex_noise, sample_rng, save_npz, scale_to_snr
from .ofdm import carrier, draw_lte, draw_nr, modulate_carriers

SAMPLE_RATE = 30.72e6
NUM_SAMPLES = 32768
SNR_RANGE = (-10.0, 30.0)
USABLE = 0.45 * SAMPLE_RATE  # keep emitters inside +-45 % of the band
CLASSES = ["noise", "LTE", "NR", "WiFi", "Bluetooth", "radar", "FM", "CW"]
KIND = "classify"


def _time(n: int, fs: float) -> np.ndarray:
    return np.arange(n) / fs


def _centre(rng: np.random.Generator, bandwidth_hz: float) -> float:
    room = max(USABLE - bandwidth_hz / 2, 0.0)
    return float(rng.uniform(-room, room))


def _ofdm_carrier(rng: np.random.Generator, kind: str, snr_db: float, n: int, fs: float) -> np.ndarray:
    """One LTE or NR carrier cropped at a random instant; retried until the crop holds a transmission."""
    for _ in range(20):
        draw = draw_lte if kind == "LTE" else draw_nr
        spec = draw(rng, snr_db=snr_db, max_bw_mhz=20 if kind == "LTE" else 25)
        scs = spec.scs_khz * 1e3
        spec.fc_hz = round(_centre(rng, spec.occupied_hz) / scs) * scs
        duration_ms = int(np.ceil(n / fs * 1e3)) + 1
        iq, _ = modulate_carriers([carrier(rng, spec, duration_ms)], fs, duration_ms * round(fs * 1e-3))
        start = int(rng.integers(0, len(iq) - n + 1))
        crop = iq[start : start + n]
        if np.any(crop):
            return crop
    raise RuntimeError("could not draw an LTE/NR crop that transmits; this is a bug in the generator")


def lte(rng, snr_db, n, fs):
    return _ofdm_carrier(rng, "LTE", snr_db, n, fs)


def nr(rng, snr_db, n, fs):
    return _ofdm_carrier(rng, "NR", snr_db, n, fs)


def wifi(rng: np.random.Generator, snr_db: float, n: int, fs: float) -> np.ndarray:
    """802.11a/g-like bursts: 20 MS/s OFDM (64 subcarriers, 52 used, 0.8 us CP), short + long
    training fields, 10-200 data symbols, SIFS/DIFS-plus-backoff gaps; resampled to ``fs``."""
    rate = 20e6
    skip = int(rng.integers(0, 2000))  # start mid-stream
    need = int(n * rate / fs) + 200 + skip
    used = np.r_[-26:0, 1:27]
    out, on, pos = [], [], 0
    while pos < need:
        n_sym = int(rng.integers(10, 201))
        grid = np.zeros((n_sym + 2, 64), np.complex64)
        grid[0, np.r_[-24:0:4, 4:25:4] % 64] = np.sqrt(13 / 6) * (rng.choice([-1, 1], 12) * (1 + 1j))
        grid[1, used % 64] = rng.choice([-1, 1], 52)
        order = int(rng.choice([2, 4, 16, 64]))
        if order == 2:
            grid[2:, used % 64] = rng.choice([-1, 1], (n_sym, 52))
        else:
            m = int(np.sqrt(order))
            levels = 2 * rng.integers(0, m, (2, n_sym, 52)) - (m - 1)
            grid[2:, used % 64] = (levels[0] + 1j * levels[1]) * np.sqrt(1.5 / (order - 1))
        sym = np.fft.ifft(grid, axis=1) * 8
        stf = np.tile(sym[0, :16], 10)
        ltf = np.r_[sym[1, 32:], sym[1], sym[1]]
        data = np.concatenate([sym[2:, 48:], sym[2:]], axis=1).ravel()
        burst = np.r_[stf, ltf, data]
        gap = int(rng.choice([320, 680 + 180 * int(rng.integers(0, 16))]))  # SIFS, or DIFS + backoff
        out += [burst, np.zeros(gap)]
        on += [np.ones(burst.size, bool), np.zeros(gap, bool)]
        pos += burst.size + gap
    x = np.concatenate(out)
    mask = np.concatenate(on)
    x, mask = x[skip:need], mask[skip:need]
    x = resample_poly(x, 192, 125)[:n]  # 20 -> 30.72 MS/s
    mask = mask[np.minimum((np.arange(n) * rate / fs).astype(int), mask.size - 1)]
    x = x * np.exp(2j * np.pi * _centre(rng, 20e6) * _time(n, fs))
    return scale_to_snr(x, snr_db, 52 * 312.5e3, fs, mask)


def bluetooth(rng: np.random.Generator, snr_db: float, n: int, fs: float) -> np.ndarray:
    """Basic-rate Bluetooth: GFSK (BT 0.5, h 0.32) at 1 Msym/s, hopping over 1 MHz channels every
    625 us slot, packets of 126-366 us in 70 % of the slots."""
    t = _time(n, fs) + rng.uniform(0, 625e-6)
    slot = (t // 625e-6).astype(int)
    slot -= slot[0]
    n_slots = slot[-1] + 1
    channels = rng.integers(-int(USABLE // 1e6) + 1, int(USABLE // 1e6), n_slots) * 1e6
    in_slot = t - (t // 625e-6) * 625e-6
    on = np.zeros(n, bool)
    while not on.any():  # a capture labelled Bluetooth holds at least one packet
        length = rng.uniform(126e-6, 366e-6, n_slots) * (rng.random(n_slots) < 0.7)
        on = in_slot < length[slot]
    symbols = rng.choice([-1.0, 1.0], int(t[-1] * 1e6) + 2)
    nrz = symbols[(t * 1e6).astype(int) - int(t[0] * 1e6)]
    sigma = np.sqrt(np.log(2)) / (2 * np.pi * 0.5) * fs / 1e6  # Gaussian filter, BT = 0.5, in samples
    taps = np.exp(-0.5 * (np.arange(-int(4 * sigma), int(4 * sigma) + 1) / sigma) ** 2)
    freq = np.convolve(nrz, taps / taps.sum(), mode="same") * 0.32 / 2 * 1e6 + channels[slot]
    x = np.exp(2j * np.pi * np.cumsum(freq) / fs) * on
    return scale_to_snr(x, snr_db, 1e6, fs, on)


def radar(rng: np.random.Generator, snr_db: float, n: int, fs: float) -> np.ndarray:
    """Pulsed LFM radar: 2-50 us chirps over 1-20 MHz (up or down), PRI 50-400 us."""
    width = rng.uniform(2e-6, 50e-6)
    bandwidth = rng.uniform(1e6, 20e6) * rng.choice([-1, 1])
    pri = rng.uniform(max(50e-6, 2 * width), 400e-6)
    t = _time(n, fs) + rng.uniform(0, pri)
    tau = t % pri
    on = tau < width
    phase = np.pi * bandwidth / width * (tau - width / 2) ** 2 + 2 * np.pi * _centre(rng, abs(bandwidth)) * t
    return scale_to_snr(np.exp(1j * phase) * on, snr_db, abs(bandwidth), fs, on)


def fm(rng: np.random.Generator, snr_db: float, n: int, fs: float) -> np.ndarray:
    """Wideband (broadcast) FM: one to three audio tones (300 Hz-15 kHz), peak deviation 40-75 kHz.

    Narrowband FM (2.5-5 kHz deviation) is not drawn: its whole Carson bandwidth fits inside one
    30 kHz bin of the 1024-point spectrogram, where nothing tells it from a CW carrier.
    """
    t = _time(n, fs)
    tones = rng.uniform(300, 15e3, int(rng.integers(1, 4)))
    amps = rng.uniform(0.3, 1, tones.size)
    phases = rng.uniform(0, 2 * np.pi, tones.size)
    # Integral of sum a*cos(2 pi f t + p), normalised so that the peak frequency deviation is `deviation`.
    integral = (amps / (2 * np.pi * tones) * np.sin(2 * np.pi * tones * t[:, None] + phases)).sum(1) / amps.sum()
    deviation = rng.uniform(40e3, 75e3)
    x = np.exp(1j * (2 * np.pi * deviation * integral + 2 * np.pi * _centre(rng, 200e3) * t))
    return scale_to_snr(x, snr_db, 2 * (deviation + tones.max()), fs)


def cw(rng: np.random.Generator, snr_db: float, n: int, fs: float) -> np.ndarray:
    """An unmodulated carrier with a little random-walk phase noise."""
    phase = 2 * np.pi * _centre(rng, 0) * _time(n, fs) + np.cumsum(rng.normal(0, 1e-3, n))
    return scale_to_snr(np.exp(1j * phase), snr_db, 1.5 * fs / 1024, fs)  # Hann ENBW of one bin


def silence(rng, snr_db, n, fs):
    return np.zeros(n, np.complex64)


GENERATORS: dict[str, Callable[..., np.ndarray]] = dict(
    zip(CLASSES, [silence, lte, nr, wifi, bluetooth, radar, fm, cw])
)


def generate_signal(kind: str, rng: np.random.Generator, snr_db: float, n_samples: int = NUM_SAMPLES,
                    fs: float = SAMPLE_RATE) -> np.ndarray:
    """A fresh capture in memory: one ``kind`` emitter at ``snr_db`` in-band SNR plus unit-power noise."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown signal type {kind!r}; choose one of {', '.join(CLASSES)}")
    x = GENERATORS[kind](rng, snr_db, n_samples, fs).astype(np.complex64)
    return x + complex_noise(rng, n_samples)


def generator_params() -> dict[str, Any]:
    return dict(sample_rate=SAMPLE_RATE, num_samples=NUM_SAMPLES, snr_db=list(SNR_RANGE), label="index % 8")


def sample_paths(out: Path, i: int) -> list[Path]:
    return [out / f"sample_{i:06d}.npz"]


def sample_capture(seed: int, i: int, n_samples: int = NUM_SAMPLES) -> tuple[np.ndarray, int, float]:
    """Sample ``i`` of a set of ``seed`` before its spectrogram: (IQ, class index, in-band SNR dB).
    Another ``n_samples`` gives a capture of that length of the same class at the same SNR."""
    rng = sample_rng(seed, i)
    label = i % len(CLASSES)  # balanced classes whatever n is
    snr_db = float(rng.uniform(*SNR_RANGE))
    return generate_signal(CLASSES[label], rng, snr_db, n_samples), label, snr_db


def write_sample(out: Path, i: int, seed: int, pre: PreprocessConfig) -> None:
    iq, label, snr_db = sample_capture(seed, i)
    x = np.ascontiguousarray(signal.spectrogram(iq, pre))
    save_npz(sample_paths(out, i)[0], x=x, label=np.int64(label), snr_db=np.float64(snr_db if label else np.nan))
