"""A stand-in for NTU-Fi HAR: WiFi CSI amplitude (3 antennas x 114 subcarriers x time) of six activities.

It tests the CSI pipeline end to end (reader shapes, 3-channel preprocessing, fine-tuning); it is
not the NTU-Fi benchmark and accuracy on it says nothing about accuracy on real CSI.

Model: a 40 MHz channel at 5.32 GHz (114 subcarriers, 312.5 kHz apart) seen by a 3-antenna
receiver. Static paths (walls, furniture) give a fixed frequency-selective response; the person
adds reflections whose path length d(t) moves with the activity, each contributing
``a * exp(-j 2 pi (fc + f_k) d(t) / c)`` with an angle-of-arrival phase across the antennas.
The moving paths beat against the static ones, which gives the Doppler stripes real CSI shows.
Sampled at 500 packets/s for 2000 packets and kept every 4th (``[:, :, ::4]``, as the original
loader does): 3 x 114 x 500 amplitudes, plus measurement noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radiofm.config import PreprocessConfig

from .common import sample_rng, save_npz

CLASSES = ["run", "walk", "fall", "box", "circle", "clean"]  # NTU-Fi HAR's activities
KIND = "classify"
CARRIER_HZ = 5.32e9
SUBCARRIER_HZ = (np.arange(114) - 56.5) * 312.5e3
PACKET_RATE = 500.0
PACKETS = 2000
DECIMATE = 4
ANTENNAS = 3
LIGHT = 299_792_458.0


def _gait(rng: np.random.Generator, t: np.ndarray, speed: tuple[float, float], step_hz: tuple[float, float],
          swing_m: float) -> list[tuple[float, np.ndarray]]:
    """Torso walking back and forth across the room plus two limbs swinging at the step rate."""
    v = rng.uniform(*speed)
    room = rng.uniform(2.0, 4.0)
    travel = (v * t + rng.uniform(0, room)) % (2 * room)
    torso = 2 * (1.0 + np.minimum(travel, 2 * room - travel))  # reflected path = 2 x distance
    f = rng.uniform(*step_hz)
    limbs = [torso + swing_m * np.sin(2 * np.pi * f * t + p) for p in (0.0, np.pi)]
    return [(rng.uniform(0.2, 0.4), torso)] + [(rng.uniform(0.05, 0.15), limb) for limb in limbs]


def _paths(activity: str, rng: np.random.Generator, t: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(amplitude, path length over time) of each moving reflection for ``activity``."""
    d0 = rng.uniform(3.0, 8.0)
    sway = 0.01 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
    if activity == "walk":
        return _gait(rng, t, (0.8, 1.4), (1.6, 2.2), 0.3)
    if activity == "run":
        return _gait(rng, t, (2.0, 3.5), (2.6, 3.2), 0.6)
    if activity == "fall":
        start, length = rng.uniform(0.5, 2.5), rng.uniform(0.4, 0.8)
        progress = np.clip((t - start) / length, 0, 1) ** 2  # accelerating drop, then still
        body = d0 + sway + rng.uniform(0.8, 1.4) * progress
        return [(rng.uniform(0.2, 0.4), body), (rng.uniform(0.05, 0.15), body + 0.4 * progress)]
    if activity == "box":
        f = rng.uniform(1.5, 3.0)
        punches = [0.4 * np.clip(np.sin(2 * np.pi * f * t + p), 0, None) ** 3 for p in (0.0, np.pi)]
        return [(rng.uniform(0.2, 0.4), d0 + sway)] + [(rng.uniform(0.05, 0.15), d0 + p) for p in punches]
    if activity == "circle":
        f, r = rng.uniform(0.5, 1.5), rng.uniform(0.2, 0.4)
        return [(rng.uniform(0.2, 0.4), d0 + sway), (rng.uniform(0.1, 0.2), d0 + r * np.sin(2 * np.pi * f * t))]
    if activity == "clean":
        return []
    raise ValueError(f"unknown activity {activity!r}; choose one of {', '.join(CLASSES)}")


def generate_csi(activity: str, rng: np.random.Generator, snr_db: float = 25.0) -> np.ndarray:
    """CSI amplitude (3, 114, 500) float32 of one ``activity`` recording."""
    t = np.arange(0, PACKETS, DECIMATE) / PACKET_RATE
    n_static = 6
    delays = np.sort(rng.uniform(0, 150e-9, n_static))
    static = (rng.rayleigh(1.0, n_static) * np.exp(1j * rng.uniform(0, 2 * np.pi, (ANTENNAS, n_static))))
    h = static @ np.exp(-2j * np.pi * delays[:, None] * SUBCARRIER_HZ[None, :])  # (antennas, subcarriers)
    h = np.repeat(h[:, :, None], t.size, axis=2)
    wavenumber = 2 * np.pi * (CARRIER_HZ + SUBCARRIER_HZ[:, None]) / LIGHT
    for amp, length in _paths(activity, rng, t):
        arrival = np.exp(1j * np.pi * np.arange(ANTENNAS) * np.sin(rng.uniform(-1.2, 1.2)))  # half-wave array
        h += amp * arrival[:, None, None] * np.exp(-1j * wavenumber * length[None, :])[None]
    # Small environmental flutter, then receiver noise at snr_db against the mean channel power.
    h *= 1 + 0.02 * rng.standard_normal((1, 1, t.size))
    noise_power = np.mean(np.abs(h) ** 2) / 10 ** (snr_db / 10)
    h += np.sqrt(noise_power / 2) * (rng.standard_normal(h.shape) + 1j * rng.standard_normal(h.shape))
    return (np.abs(h) * rng.uniform(15.0, 25.0)).astype(np.float32)  # receiver gain: NTU-Fi-like magnitudes


def generator_params() -> dict[str, Any]:
    return dict(carrier_hz=CARRIER_HZ, subcarriers=114, antennas=ANTENNAS, packet_rate=PACKET_RATE,
                packets=PACKETS, decimate=DECIMATE, snr_db=[15, 35], label="index % 6",
                note="moving-scatterer stand-in for NTU-Fi HAR; tests the pipeline, not the benchmark")


def sample_paths(out: Path, i: int) -> list[Path]:
    return [out / f"sample_{i:06d}.npz"]


def write_sample(out: Path, i: int, seed: int, pre: PreprocessConfig) -> None:
    rng = sample_rng(seed, i)
    label = i % len(CLASSES)
    snr_db = float(rng.uniform(15, 35))
    x = generate_csi(CLASSES[label], rng, snr_db)
    save_npz(sample_paths(out, i)[0], x=x, label=np.int64(label), snr_db=np.float64(snr_db))
