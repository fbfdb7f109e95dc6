"""Reading inference inputs from files: ``.npy`` arrays, MATLAB ``.mat`` files and SigMF recordings.

A ``.mat`` file with ``CSIamp`` is an NTU-Fi HAR recording, read as its dataset reader reads it:
(3 antennas, 114 subcarriers, every 4th packet).

Each reader gives an ``Input``: complex IQ (with its sample rate where the file records one) or real
spectrograms / CSI. Nothing here unpickles: ``.npy`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIGMF_SUFFIXES = (".sigmf-meta", ".sigmf-data", ".sigmf")
MAT_KEYS = ("rxSpectrogram", "CSIamp", "spectrogram", "iq", "x")
NTU_FI_ANTENNAS, NTU_FI_SUBCARRIERS, NTU_FI_DECIMATE = 3, 114, 4


def ntu_fi_amplitude(amp: np.ndarray, path: Path, decimate: int = NTU_FI_DECIMATE) -> np.ndarray:
    """NTU-Fi's ``CSIamp`` (342 x packets: antenna-major rows; or already 3 x 114 x packets) ->
    (3, 114, packets / decimate) float32, every ``decimate``-th packet kept, as the original loader does."""
    amp = np.asarray(amp, np.float32)
    rows = NTU_FI_ANTENNAS * NTU_FI_SUBCARRIERS
    if amp.shape[:2] == (NTU_FI_ANTENNAS, NTU_FI_SUBCARRIERS) and amp.ndim == 3:
        amp = amp.reshape(rows, -1)
    if amp.ndim != 2 or amp.shape[0] != rows:
        raise ValueError(f"{path}: CSIamp has shape {amp.shape}, not {rows} x packets "
                         f"({NTU_FI_ANTENNAS} antennas x {NTU_FI_SUBCARRIERS} subcarriers, as NTU-Fi stores it)")
    return amp.reshape(NTU_FI_ANTENNAS, NTU_FI_SUBCARRIERS, -1)[:, :, ::decimate]


@dataclass
class Input:
    path: Path
    data: np.ndarray
    sample_rate: float | None = None

    @property
    def is_iq(self) -> bool:
        return np.iscomplexobj(self.data)


def read_input(path: str | Path) -> Input:
    """An inference input from a file, chosen by suffix; errors name the file and what was wrong.

    A vector stored two-dimensional, (1, N) or (N, 1) as MATLAB stores every vector, is read as the
    1-D array it is (for ``.npy``, where it is complex IQ).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"input {path} is a directory, not a file; give the files in it")
    if path.suffix in SIGMF_SUFFIXES:
        return _read_sigmf(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix == ".npy":
        data = _read_npy(path)
        if np.iscomplexobj(data):
            data = _as_vector(data)
    elif path.suffix == ".mat":
        key, data = _read_mat(path)
        data = ntu_fi_amplitude(data, path) if key == "CSIamp" else _as_vector(data)
    else:
        raise ValueError(f"{path}: unsupported input type {path.suffix!r}; use .npy, .mat or SigMF (.sigmf-meta)")
    if not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"{path} holds {data.dtype} data, expected numbers")
    return Input(path, data)


IQ_ROWS_MIN = 1024  # a real (2, N) array with N this long is I and Q rows, not a 2-row spectrogram


def real_iq_hint(item: Input) -> str | None:
    """Why a real array reads as IQ samples rather than spectrograms (a message naming the file), or None.

    Spectrograms are 2-D or more; a real 1-D array, or two rows (or columns) of many samples, is
    most likely I and Q that were saved as real numbers.
    """
    x = item.data
    if item.is_iq:
        return None
    if x.ndim == 1:
        return (f"{item.path} holds real {x.dtype} samples of shape {x.shape}: a spectrogram is 2-D or more, "
                f"and IQ must be complex; combine I and Q as i + 1j*q (interleaved: x[0::2] + 1j*x[1::2]) and save that")
    if x.ndim == 2 and 2 in x.shape and max(x.shape) >= IQ_ROWS_MIN:
        rows = x.shape[0] == 2
        return (f"{item.path} holds a real {x.dtype} array of shape {x.shape}, which looks like I and Q "
                f"{'rows' if rows else 'columns'} rather than a spectrogram: IQ must be complex; save "
                + ("x[0] + 1j*x[1]" if rows else "x[:, 0] + 1j*x[:, 1]"))
    return None


def _as_vector(data: np.ndarray) -> np.ndarray:
    return data.reshape(-1) if data.ndim == 2 and 1 in data.shape else data


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY":
        what = "it is an .npz archive" if head.startswith(b"PK") else "it does not start with the .npy header"
        raise ValueError(f"{path} is not a plain numeric .npy array ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        # numpy's own advice here is to load the file "unsafely" with allow_pickle: radiofm never does.
        what = "it holds Python objects, which radiofm does not unpickle" if "allow_pickle" in str(e) else str(e)
        raise ValueError(f"{path} is not a plain numeric .npy array ({what or type(e).__name__})") from e


def _read_mat(path: Path) -> tuple[str, np.ndarray]:
    """(key, array) of the input a MATLAB file holds: the first of MAT_KEYS, or its only array."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types for damaged files
        raise ValueError(f"{path} is not a readable MATLAB file ({e})") from e
    arrays = {k: v for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    for key in MAT_KEYS:
        if key in arrays:
            return key, np.asarray(arrays[key])
    if len(arrays) == 1:
        key, value = next(iter(arrays.items()))
        return key, np.asarray(value)
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
