"""A stand-in for NTU-Fi HAR: WiFi CSI amplitude (3 antennas x 114 subcarriers x time) of six activities.

It tests the CSI pipeline end to end (reader shapes, 3-channel preprocessing, fine-tuning); it is
not the NTU-Fi benchmark and accuracy on it says nothing about accuracy on real CSI.

Model: a 40 MHz channel at 5.32 GHz (114 subcarriers, 312.5 kHz apart) between a transmitter and a
3-antenna receiver (half-wave spacing) 3-5 m apart, 1 m above the floor. The room gives a fixed
frequency-selective response: the line of sight plus five weaker static paths. The person is a few
scattering points in 3-D (torso, two limbs) that move with the activity. Each point adds a path of
length ``d(t) = |p(t) - tx| + |p(t) - rx_a|`` to each antenna ``a``, entering as
``g * exp(-j 2 pi (fc + f_k) d(t) / c)``; it beats against the static paths and gives the Doppler
stripes real CSI shows. A torso near the line of sight also shadows it, which dims every subcarrier
at once when someone walks through the link. Sampled at 500 packets/s for 2000 packets and kept every
4th (``[:, :, ::4]``, as the original loader does): 3 x 114 x 500 amplitudes, plus measurement noise.
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
SNR_RANGE = (15.0, 35.0)  # measurement SNR of a recording, dB
WAVENUMBER = 2 * np.pi * (CARRIER_HZ + SUBCARRIER_HZ) / LIGHT  # per subcarrier, rad/m
HEIGHT_M = 1.0  # transmitter and receiver above the floor
SHADOW_WIDTH_M = 0.3  # a torso this far from the line of sight still dims it by 1/e of the full depth

Points = list[tuple[float, np.ndarray]]  # (reflection gain, position (T, 3) in metres)


def _walker(rng: np.random.Generator, t: np.ndarray, link_m: float, speed: tuple[float, float],
            step_hz: tuple[float, float], swing_m: float) -> Points:
    """Back and forth along a line through the link (so the torso crosses the line of sight), with the
    two arms swinging in opposition at the step rate."""
    v, lane = rng.uniform(*speed), rng.uniform(2.0, 4.0)
    centre = np.array([rng.uniform(0.3, 0.7) * link_m, rng.uniform(-0.5, 0.5)])
    heading = rng.uniform(0.25, 0.75) * np.pi  # across the link rather than along it
    along = np.array([np.cos(heading), np.sin(heading)])
    travel = (v * t + rng.uniform(0, 2 * lane)) % (2 * lane)
    s = np.minimum(travel, 2 * lane - travel) - lane / 2  # triangle wave on [-lane/2, lane/2]
    direction = np.sign(np.gradient(s))
    torso = np.column_stack([centre + s[:, None] * along, np.full(t.size, 1.2)])
    phase = 2 * np.pi * rng.uniform(*step_hz) * t + rng.uniform(0, 2 * np.pi)
    arms = []
    for side in (1.0, -1.0):
        swing = side * swing_m * np.sin(phase) * direction
        arms.append(torso + np.column_stack([swing[:, None] * along, np.full(t.size, 0.0)])
                    + np.array([0.0, 0.0, -0.2]))
    return [(rng.uniform(0.4, 0.7), torso)] + [(rng.uniform(0.15, 0.3), arm) for arm in arms]


def _standing(rng: np.random.Generator, t: np.ndarray, link_m: float) -> tuple[np.ndarray, np.ndarray]:
    """A torso standing in the room, off the line of sight, swaying slightly; and which way it faces."""
    x, y = rng.uniform(0.2, 0.8) * link_m, rng.choice([-1, 1]) * rng.uniform(0.6, 2.0)
    sway = 0.02 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
    torso = np.column_stack([np.full(t.size, x) + sway, np.full(t.size, y), np.full(t.size, 1.2)])
    facing = rng.uniform(0, 2 * np.pi)
    return torso, np.array([np.cos(facing), np.sin(facing), 0.0])


def _points(activity: str, rng: np.random.Generator, t: np.ndarray, link_m: float) -> Points:
    """The moving scatterers of ``activity``: (gain, position over time)."""
    if activity == "walk":
        return _walker(rng, t, link_m, (0.8, 1.4), (1.6, 2.2), 0.25)
    if activity == "run":
        return _walker(rng, t, link_m, (2.0, 3.5), (2.6, 3.2), 0.5)
    torso, facing = _standing(rng, t, link_m)
    torso_gain = rng.uniform(0.4, 0.7)
    if activity == "fall":
        start, length = rng.uniform(0.5, 2.5), rng.uniform(0.4, 0.8)
        progress = np.clip((t - start) / length, 0, 1) ** 2  # accelerating drop, then lying still
        reach = rng.uniform(0.8, 1.4)  # how far from the feet the torso lands
        body = torso + progress[:, None] * (reach * facing - np.array([0.0, 0.0, 1.0]))
        head = body + np.array([0.0, 0.0, 0.4]) * (1 - progress)[:, None] + 0.4 * progress[:, None] * facing
        return [(torso_gain, body), (rng.uniform(0.15, 0.3), head)]
    if activity == "box":
        f = rng.uniform(1.5, 3.0)
        fists = [torso + np.array([0.0, 0.0, 0.2]) + 0.45 * (np.clip(np.sin(2 * np.pi * f * t + p), 0, None) ** 3)[:, None]
                 * facing for p in (0.0, np.pi)]
        return [(torso_gain, torso)] + [(rng.uniform(0.15, 0.3), fist) for fist in fists]
    if activity == "circle":
        f, r = rng.uniform(0.5, 1.5), rng.uniform(0.25, 0.45)
        side = np.cross(facing, [0.0, 0.0, 1.0])
        angle = 2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)
        hand = torso + 0.3 * side + r * (np.cos(angle)[:, None] * facing + np.sin(angle)[:, None] * np.array([0, 0, 1.0]))
        return [(torso_gain, torso), (rng.uniform(0.2, 0.35), hand)]
    if activity == "clean":
        return []
    raise ValueError(f"unknown activity {activity!r}; choose one of {', '.join(CLASSES)}")


def _shadow(torso: np.ndarray, link_m: float, depth: float) -> np.ndarray:
    """Line-of-sight amplitude factor over time: a torso (upright) within about SHADOW_WIDTH_M of the
    link in the horizontal plane blocks up to ``depth`` of it."""
    x = np.clip(torso[:, 0], 0, link_m)
    gap = np.hypot(torso[:, 0] - x, torso[:, 1])
    upright = np.clip((torso[:, 2] - 0.4) / 0.6, 0, 1)
    return 1 - depth * upright * np.exp(-((gap / SHADOW_WIDTH_M) ** 2))


def _antennas(link_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Transmitter (3,) and receive antenna (antennas, 3) positions: half-wave spacing across the link."""
    spacing = LIGHT / CARRIER_HZ / 2
    return (np.array([0.0, 0.0, HEIGHT_M]),
            np.array([[link_m, (a - 1) * spacing, HEIGHT_M] for a in range(ANTENNAS)]))


def _room(rng: np.random.Generator, link_m: float) -> tuple[np.ndarray, np.ndarray]:
    """The static channel (antennas, subcarriers): the line of sight (exact geometry, so its phase across
    the antennas is right, and unit gain) and five weaker paths with random delays and angles."""
    tx, rx = _antennas(link_m)
    los = np.exp(-1j * np.linalg.norm(rx - tx, axis=1)[:, None] * WAVENUMBER[None, :])
    delays = rng.uniform(5e-9, 150e-9, 5)
    gains = rng.rayleigh(0.35, 5) * np.exp(1j * rng.uniform(0, 2 * np.pi, 5))
    arrival = np.exp(1j * np.pi * np.arange(ANTENNAS)[:, None] * np.sin(rng.uniform(-1.2, 1.2, 5))[None, :])
    multipath = (arrival * gains) @ np.exp(-2j * np.pi * (link_m / LIGHT + delays)[:, None] * (CARRIER_HZ + SUBCARRIER_HZ)[None, :])
    return los, multipath


def _channel(room: tuple[np.ndarray, np.ndarray], points: Points, link_m: float, shadow_depth: float) -> np.ndarray:
    """Complex CSI (antennas, subcarriers, time; time 1 for an empty room): the room with its line of
    sight shadowed by the first point (the torso), plus one path per scattering point (gains relative to
    the line of sight), all scaled so that the empty room has unit mean power."""
    los, multipath = room
    scale = 1 / np.sqrt(np.mean(np.abs(los + multipath) ** 2))
    shadow = _shadow(points[0][1], link_m, shadow_depth) if points else np.ones(1)
    h = scale * (los[:, :, None] * shadow[None, None, :] + multipath[:, :, None])
    tx, rx = _antennas(link_m)
    for gain, p in points:
        length = np.linalg.norm(p - tx, axis=1)[None, :] + np.linalg.norm(p[None] - rx[:, None], axis=2)  # (antennas, T)
        h = h + scale * gain * np.exp(-1j * WAVENUMBER[None, :, None] * length[:, None, :])
    return h


def generate_csi(activity: str, rng: np.random.Generator, snr_db: float = 25.0, packets: int = PACKETS) -> np.ndarray:
    """CSI amplitude (3, 114, packets // 4) float32 of one ``activity`` recording of ``packets`` packets
    (the data sets': 2000, so 500 kept)."""
    t = np.arange(0, packets, DECIMATE) / PACKET_RATE
    link_m = rng.uniform(3.0, 5.0)
    room = _room(rng, link_m)
    points = _points(activity, rng, t, link_m)
    h = _channel(room, points, link_m, rng.uniform(0.4, 0.8) if points else 0.0)
    h = np.broadcast_to(h, (ANTENNAS, SUBCARRIER_HZ.size, t.size)).copy()  # an empty room holds still
    # Small environmental flutter, then receiver noise at snr_db against the mean channel power.
    h *= 1 + 0.02 * rng.standard_normal((1, 1, t.size))
    noise_power = np.mean(np.abs(h) ** 2) / 10 ** (snr_db / 10)
    h += np.sqrt(noise_power / 2) * (rng.standard_normal(h.shape) + 1j * rng.standard_normal(h.shape))
    return (np.abs(h) * rng.uniform(15.0, 25.0)).astype(np.float32)  # receiver gain: NTU-Fi-like magnitudes


def generator_params() -> dict[str, Any]:
    return dict(carrier_hz=CARRIER_HZ, subcarriers=114, antennas=ANTENNAS, packet_rate=PACKET_RATE,
                packets=PACKETS, decimate=DECIMATE, snr_db=list(SNR_RANGE), label="index % 6", link_m=[3.0, 5.0],
                height_m=HEIGHT_M, shadow_width_m=SHADOW_WIDTH_M, model="3-D scatterers with line-of-sight shadowing",
                note="moving-scatterer stand-in for NTU-Fi HAR; tests the pipeline, not the benchmark")


def sample_paths(out: Path, i: int) -> list[Path]:
    return [out / f"sample_{i:06d}.npz"]


def sample_recording(seed: int, i: int, packets: int = PACKETS) -> tuple[np.ndarray, int, float]:
    """Sample ``i`` of a set of ``seed``: (CSI amplitude (3, 114, 500), class index, SNR dB). Another
    ``packets`` gives a recording of that length (``packets // 4`` kept) of the same activity at the same SNR."""
    rng = sample_rng(seed, i)
    label = i % len(CLASSES)  # balanced classes whatever n is
    snr_db = float(rng.uniform(*SNR_RANGE))
    return generate_csi(CLASSES[label], rng, snr_db, packets), label, snr_db


def write_sample(out: Path, i: int, seed: int, pre: PreprocessConfig) -> None:
    x, label, snr_db = sample_recording(seed, i)
    save_npz(sample_paths(out, i)[0], x=x, label=np.int64(label), snr_db=np.float64(snr_db))
