"""One reader API for every dataset layout the training code meets.

``open_dataset(path)`` recognises: our synthetic folders (``dataset.json``), the MATLAB LTE/NR
spectrum-sensing layout, NTU-Fi HAR folders, folders of float TIFF spectrograms (the original
pretraining format, class subfolders optional) and SigMF recordings (one, or a folder of them).

Every dataset yields ``(x, target)`` with ``x`` raw float32, (H, W) or (C, H, W) (linear power
spectrograms, or CSI amplitude): :func:`radiofm.signal.prepare` turns it into model input, the same
call the SDK makes. ``target`` is a class index, a (H, W) class-index map, or None (pretraining).
Items are read one file at a time, so iterating streams.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from radiofm import signal
from radiofm.config import PreprocessConfig
from radiofm.io import ntu_fi_amplitude

from .synth.common import read_manifest

TASKS = ("segment", "classify", "pretrain")
LTE_NR_CLASSES = ["noise", "NR", "LTE"]
LTE_NR_CODES = {0: 0, 127: 1, 255: 2}
NTU_FI_CLASSES = ["run", "walk", "fall", "box", "circle", "clean"]
SIGMF_SUFFIXES = (".sigmf-meta", ".sigmf")
TIFF_SUFFIXES = (".tif", ".tiff")


class Dataset:
    """Base: ``task``, ``classes``, ``len``, ``ds[i] -> (x, target)``, ``snr_db(i)``."""

    task: str = "pretrain"
    classes: list[str] = []
    sample_rate: float | None = None

    def __init__(self, path: Path):
        self.path = Path(path)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def snr_db(self, i: int) -> float | None:
        return None

    def __iter__(self) -> Iterator[tuple[np.ndarray, Any]]:
        return (self[i] for i in range(len(self)))

    def _index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples in {self.path}")
        return i % len(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, task={self.task!r}, n={len(self)}, classes={self.classes})"


def _load_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    try:
        mat = loadmat(path, variable_names=[key])
    except Exception as e:  # scipy raises several types for damaged or v7.3 (HDF5) files
        raise ValueError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e})") from e
    if key not in mat:
        raise KeyError(f"{path} has no variable {key!r}")
    return mat[key]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; re-run `radiofm data synth` with the same seed to fill it in")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, ValueError and EOFError all signal a damaged file
        raise ValueError(f"{path} is not a readable .npz sample ({type(e).__name__}: {e}); delete it and re-run synth") from e


class NpzDataset(Dataset):
    """Our synthetic ``signals`` / ``csi-har`` / ``pretrain`` folders: ``sample_{i:06d}.npz`` (x, label, snr_db)."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        super().__init__(path)
        self.manifest = manifest
        self.task = manifest["kind"]
        self.classes = list(manifest["classes"])
        self.sample_rate = manifest.get("sample_rate")
        self.n = int(manifest["num_samples"])
        self._snr: dict[int, float] = {}

    def __len__(self) -> int:
        return self.n

    def _read(self, i: int) -> dict[str, np.ndarray]:
        path = self.path / f"sample_{self._index(i):06d}.npz"
        z = _load_npz(path)
        for key in ("x", "label", "snr_db"):
            if key not in z:
                raise KeyError(f"{path} has no array {key!r}")
        self._snr[i % len(self)] = float(z["snr_db"])
        return z

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        z = self._read(i)
        return z["x"].astype(np.float32, copy=False), (int(z["label"]) if self.task == "classify" else None)

    def snr_db(self, i: int) -> float | None:
        snr = self._snr.get(self._index(i))
        snr = float(self._read(i)["snr_db"]) if snr is None else snr
        return None if np.isnan(snr) else snr


class MatlabLteNrDataset(Dataset):
    """MATLAB LTE/NR layout: ``LTE_NR_spect_frame_{i}.mat`` (``rxSpectrogram``) and
    ``LTE_NR_labels_frame_{i}.mat`` (``data``: 0 noise, 127 NR, 255 LTE -> classes 0, 1, 2).

    ``values="db"`` reads spectrograms stored in dB and returns linear power, which ``prepare`` expects.
    """

    task = "segment"
    classes = LTE_NR_CLASSES

    def __init__(self, path: Path, values: str = "power", manifest: dict[str, Any] | None = None):
        super().__init__(path)
        if values not in ("power", "db"):
            raise ValueError(f"values must be 'power' or 'db', got {values!r}")
        self.values = values
        self.manifest = manifest or {}  # a synthetic set's: its generator says how it stored the frames
        if manifest is not None:
            self.frames = list(range(int(manifest["num_samples"])))
            self.sample_rate = manifest.get("sample_rate")
        else:
            found = (re.fullmatch(r"LTE_NR_spect_frame_(\d+)\.mat", p.name) for p in self.path.iterdir())
            self.frames = sorted(int(m.group(1)) for m in found if m)
        if not self.frames:
            raise ValueError(f"{self.path} holds no LTE_NR_spect_frame_*.mat files")

    def __len__(self) -> int:
        return len(self.frames)

    def _spect_path(self, i: int) -> Path:
        return self.path / f"LTE_NR_spect_frame_{self.frames[self._index(i)]}.mat"

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        spect_path = self._spect_path(i)
        labels_path = self.path / f"LTE_NR_labels_frame_{self.frames[self._index(i)]}.mat"
        x = np.asarray(_load_mat(spect_path, "rxSpectrogram"), np.float32)
        codes = np.asarray(_load_mat(labels_path, "data"))
        if x.ndim != 2 or codes.shape != x.shape:
            raise ValueError(f"{spect_path}: spectrogram {x.shape} and labels {codes.shape} must be the same 2-D shape")
        if self.values == "db":
            x = (10.0 ** (x / 10.0)).astype(np.float32)
        elif (x < 0).any():
            raise ValueError(f"{spect_path} holds negative values: it is not linear power; open it with values='db'")
        unknown = sorted(set(np.unique(codes).tolist()) - set(LTE_NR_CODES))
        if unknown:
            raise ValueError(f"{labels_path} holds label values {unknown[:5]}; expected 0 (noise), 127 (NR), 255 (LTE)")
        lut = np.zeros(256, np.uint8)
        for code, cls in LTE_NR_CODES.items():
            lut[code] = cls
        return x, lut[codes.astype(np.uint8)]

    def snr_db(self, i: int) -> float | None:
        from scipy.io import loadmat

        mat = loadmat(self._spect_path(i), variable_names=["snr_db"])
        return float(mat["snr_db"].squeeze()) if "snr_db" in mat else None


class NtuFiDataset(Dataset):
    """NTU-Fi HAR: ``.mat`` files named by activity (``run12.mat``) with ``CSIamp`` (342 x 2000),
    reshaped to (3, 114, packets) and, as the original loader does, kept every ``decimate``-th packet."""

    task = "classify"
    classes = NTU_FI_CLASSES

    def __init__(self, path: Path, split: str | None = None, decimate: int = 4):
        super().__init__(path)
        root = self.path / split if split else self.path
        if split and not root.is_dir():
            raise FileNotFoundError(f"{root} does not exist; NTU-Fi folders hold train/ and test/")
        self.files = sorted(p for p in root.rglob("*.mat") if self._activity(p) is not None)
        if not self.files:
            raise ValueError(f"{root} holds no NTU-Fi files named like run12.mat ({', '.join(NTU_FI_CLASSES)})")
        self.decimate = decimate

    @staticmethod
    def _activity(path: Path) -> str | None:
        m = re.match(r"([a-z]+)", path.stem.lower())
        return m.group(1) if m and m.group(1) in NTU_FI_CLASSES else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path = self.files[self._index(i)]
        amp = ntu_fi_amplitude(_load_mat(path, "CSIamp"), path, self.decimate)
        return amp, NTU_FI_CLASSES.index(self._activity(path))


class TiffDataset(Dataset):
    """Float TIFF spectrograms (PIL mode ``F``); files in class subfolders make a classification set."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in TIFF_SUFFIXES)
        if not self.files:
            raise ValueError(f"{self.path} holds no .tif/.tiff files")
        parents = sorted({p.parent for p in self.files})
        if parents != [self.path]:
            self.task = "classify"
            self.classes = [str(p.relative_to(self.path)) for p in parents]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int | None]:
        from PIL import Image

        path = self.files[self._index(i)]
        try:
            with Image.open(path) as img:
                x = np.asarray(img, np.float32)
        except Exception as e:  # PIL raises several types for damaged files
            raise ValueError(f"{path} is not a readable TIFF ({type(e).__name__}: {e})") from e
        if x.ndim != 2:
            raise ValueError(f"{path} holds a {x.shape} image; expected one 2-D float spectrogram")
        return x, (self.classes.index(str(path.parent.relative_to(self.path))) if self.task == "classify" else None)


class SigmfDataset(Dataset):
    """SigMF recordings cut into consecutive crops of ``crop_ms`` (16 ms, as the original pipeline),
    each turned into a spectrogram with :func:`radiofm.signal.spectrogram`."""

    def __init__(self, path: Path, crop_ms: float = 16.0, pre: PreprocessConfig | None = None):
        import sigmf

        super().__init__(path)
        self.pre = pre or PreprocessConfig()
        self.crop_ms = crop_ms
        metas = [self.path] if self.path.is_file() else sorted(
            p for p in self.path.rglob("*") if p.suffix in SIGMF_SUFFIXES)
        if not metas:
            raise ValueError(f"{self.path} holds no SigMF recordings (.sigmf-meta or .sigmf)")
        self.crops: list[tuple[Path, int, int]] = []
        self._recordings: dict[Path, Any] = {}
        rates = set()
        for meta in metas:
            rec = self._recording(meta)
            rate = rec.get_global_field(sigmf.SAMPLE_RATE_KEY)
            if not rate:
                raise ValueError(f"{meta} records no {sigmf.SAMPLE_RATE_KEY}; crops of {crop_ms} ms need one")
            rates.add(float(rate))
            crop = int(round(crop_ms * 1e-3 * float(rate)))
            if crop < self.pre.n_fft:
                raise ValueError(f"{meta}: a {crop_ms} ms crop is {crop} samples, fewer than n_fft={self.pre.n_fft}")
            total = rec.sample_count
            self.crops += [(meta, start, crop) for start in range(0, total - crop + 1, crop)]
        self.sample_rate = rates.pop() if len(rates) == 1 else None

    def _recording(self, meta: Path) -> Any:
        if meta not in self._recordings:
            from sigmf import sigmffile

            try:
                self._recordings[meta] = sigmffile.fromfile(str(meta))
            except Exception as e:  # sigmf raises its own error types for bad metadata or data
                raise ValueError(f"{meta} is not a readable SigMF recording ({type(e).__name__}: {e})") from e
        return self._recordings[meta]

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> tuple[np.ndarray, None]:
        meta, start, count = self.crops[self._index(i)]
        try:
            iq = self._recording(meta).read_samples(start_index=start, count=count)
        except Exception as e:
            raise ValueError(f"{meta}: cannot read samples {start}..{start + count} ({type(e).__name__}: {e})") from e
        return np.ascontiguousarray(signal.spectrogram(np.asarray(iq, np.complex64), self.pre)), None


def open_dataset(path: str | Path, **options: Any) -> Dataset:
    """The dataset at ``path``, its layout recognised from what the folder holds."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if path.suffix in SIGMF_SUFFIXES + (".sigmf-data",):
            return SigmfDataset(path.with_suffix(".sigmf-meta") if path.suffix == ".sigmf-data" else path, **options)
        raise ValueError(f"{path}: give a dataset folder or a SigMF recording (.sigmf-meta / .sigmf)")
    manifest = read_manifest(path)
    if manifest is not None:
        if manifest.get("layout") == "matlab-lte-nr":
            return MatlabLteNrDataset(path, manifest=manifest, **options)
        return NpzDataset(path, manifest)
    names = [p.name for p in path.iterdir()]
    if any(n.startswith("LTE_NR_spect_frame_") for n in names):
        return MatlabLteNrDataset(path, **options)
    if any(n.endswith(SIGMF_SUFFIXES) for n in names):
        return SigmfDataset(path, **options)
    if any(p.suffix.lower() in TIFF_SUFFIXES for p in path.rglob("*")):
        return TiffDataset(path, **options)
    if any(NtuFiDataset._activity(p) for p in path.rglob("*.mat")):
        return NtuFiDataset(path, **options)
    raise ValueError(
        f"{path}: no known dataset layout (dataset.json, LTE_NR_spect_frame_*.mat, *.sigmf-meta, *.tif, "
        "NTU-Fi run12.mat-style files); make one with `radiofm data synth`"
    )
