"""What every generator shares: per-sample seeds, atomic writes, the manifest, noise and SNR scaling."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from radiofm.checkpoint import deferred_signals

MANIFEST = "dataset.json"
MANIFEST_FORMAT = "radiofm-dataset"


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """Sample ``index``'s generator: the same whatever the worker count or the order of writing."""
    return np.random.default_rng([seed, index])


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through a temporary file in the same folder and rename: never a half-written ``path``,
    nor a temporary file left by a stop (a worker's SIGTERM) at any point of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = f = None
    try:
        with deferred_signals():  # a stop arriving while the file is made is raised once it is named
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            f = os.fdopen(fd, "wb")
        with f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if f is not None:
            f.close()
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # gone already where the stop came just after the rename
        raise


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_mat(path: Path, **arrays: np.ndarray) -> None:
    from scipy.io import savemat

    atomic_write(path, lambda f: savemat(f, arrays, do_compression=False))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2).encode()
    atomic_write(folder / MANIFEST, lambda f: f.write(text))


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and re-run `radiofm data synth`") from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a radiofm dataset manifest (no \"format\": \"{MANIFEST_FORMAT}\")")
    return manifest


def complex_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-power circular complex white Gaussian noise, complex64."""
    return (rng.standard_normal(2 * n, dtype=np.float32) * np.float32(np.sqrt(0.5))).view(np.complex64)


def scale_to_snr(x: np.ndarray, snr_db: float, bandwidth_hz: float, fs: float, on: np.ndarray | None = None) -> np.ndarray:
    """Scale ``x`` so its in-band SNR against unit-power white noise is ``snr_db``.

    In-band SNR: signal power while on, over the noise power inside the occupied bandwidth
    (noise power x bandwidth / fs). Bursty signals are measured while transmitting (``on``).
    """
    active = x[on] if on is not None and on.any() else x
    power = float(np.mean(np.abs(active) ** 2)) or 1.0
    target = 10 ** (snr_db / 10) * min(bandwidth_hz, fs) / fs
    return (x * np.float32(np.sqrt(target / power))).astype(np.complex64)
