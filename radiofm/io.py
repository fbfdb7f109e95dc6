"""Reading inference inputs from files: ``.npy`` arrays, MATLAB ``.mat`` files and SigMF recordings.

Each reader gives an ``Input``: complex IQ (with its sample rate where the file records one) or real
spectrograms / CSI. Nothing here unpickles: ``.npy`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIGMF_SUFFIXES = (".sigmf-meta", ".sigmf-data", ".sigmf")
MAT_KEYS = ("rxSpectrogram", "CSIamp", "spectrogram", "iq", "x")


@dataclass
class Input:
    path: Path
    data: np.ndarray
    sample_rate: float | None = None

    @property
    def is_iq(self) -> bool:
        return np.iscomplexobj(self.data)


def read_input(path: str | Path) -> Input:
    """An inference input from a file, chosen by suffix; errors name the file and what was wrong."""
    path = Path(path)
    if path.suffix in SIGMF_SUFFIXES:
        return _read_sigmf(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path} is not a plain numeric .npy array ({e})") from e
    elif path.suffix == ".mat":
        data = _read_mat(path)
    else:
        raise ValueError(f"{path}: unsupported input type {path.suffix!r}; use .npy, .mat or SigMF (.sigmf-meta)")
    if not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"{path} holds {data.dtype} data, expected numbers")
    return Input(path, data)


def _read_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types for damaged files
        raise ValueError(f"{path} is not a readable MATLAB file ({e})") from e
    arrays = {k: v for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    for key in MAT_KEYS:
        if key in arrays:
            return np.asarray(arrays[key])
    if len(arrays) == 1:
        return np.asarray(next(iter(arrays.values())))
    raise ValueError(f"{path}: no array under the keys {', '.join(MAT_KEYS)} (found: {', '.join(arrays) or 'none'})")


def _read_sigmf(path: Path) -> Input:
    import sigmf
    from sigmf import sigmffile

    meta = path.with_suffix(".sigmf-meta") if path.suffix == ".sigmf-data" else path
    if not meta.exists():
        raise FileNotFoundError(f"SigMF recording {meta} does not exist")
    try:
        rec = sigmffile.fromfile(str(meta))
        iq = rec.read_samples()
    except Exception as e:  # sigmf raises its own error types for bad metadata or data
        raise ValueError(f"{meta} is not a readable SigMF recording ({type(e).__name__}: {e})") from e
    rate = rec.get_global_field(sigmf.SAMPLE_RATE_KEY)
    return Input(meta, np.asarray(iq, dtype=np.complex64), float(rate) if rate else None)
