"""What a RAN application calls: ``Classifier``, ``Segmenter`` and ``Encoder``.

Each is the model's own preprocessing chain (``radiofm.signal``) in front of a loaded engine:

    clf = Classifier.from_pretrained("signals-nano")
    pred = clf.predict(spectrograms)            # linear power, (H,W) | (N,H,W) | (N,C,H,W)
    pred = clf.predict_iq(iq, sample_rate=fs)   # raw complex IQ
    pred.labels, pred.probs, pred.indices

Input is checked once, at the door; a ``ValueError`` names what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from radiofm import signal
from radiofm.config import ModelConfig
from radiofm.engines import Engine, open_engine

DEFAULT_BATCH = 32


@dataclass
class Prediction:
    """``indices`` (N,) class indices, or (N, H, W) class maps for segmentation; ``probs`` (N, K) or
    (N, K, h, w) at the model grid; ``labels`` the class names of ``indices`` (same shape)."""

    indices: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    start: int | None = None  # first IQ sample of the window, for streamed predictions

    def __len__(self) -> int:
        return len(self.indices)


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


class _Task:
    """Shared by the three tasks: loading, preprocessing, batching, IQ and streaming."""

    tasks: tuple[str, ...] = ()
    load_as: str | None = None  # rebuild torch weights under this task (an MAE folder as an encoder)

    def __init__(self, engine: Engine, batch_size: int | None = None):
        if engine.cfg.task not in self.tasks:
            raise ValueError(f"{type(self).__name__} needs a {' or '.join(self.tasks)} model, "
                             f"this one is a {engine.cfg.task!r} model")
        self.engine = engine
        self.batch_size = min(batch_size or DEFAULT_BATCH, engine.max_batch or DEFAULT_BATCH)

    @classmethod
    def from_pretrained(cls, name_or_path, engine: str = "auto", device: str = "auto", precision: str = "fp32",
                        threads: int | None = None, batch_size: int | None = None):
        """A zoo name, model folder, export folder or .onnx/.plan file; ``engine`` torch | onnx | trt | auto."""
        eng = open_engine(name_or_path, engine, device, precision, threads, task=cls.load_as)
        return cls(eng, batch_size)

    # ----------------------------------------------------------------------- facts
    @property
    def cfg(self) -> ModelConfig:
        return self.engine.cfg

    @property
    def classes(self) -> list[str]:
        return self.cfg.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_chans, *self.cfg.img_size)

    @property
    def engine_name(self) -> str:
        return self.engine.describe()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg.name} {self.cfg.task}, engine={self.engine_name})"

    # ----------------------------------------------------------------------- input
    def prepare(self, spectrograms) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw input -> model input (N, C, H, W) and, for captures shorter than the model's, the
        (N, L) mask of valid patches; checked at the door."""
        x = np.asarray(spectrograms)
        if np.iscomplexobj(x):
            raise ValueError(f"got complex input of shape {x.shape}: predict() takes real spectrograms "
                             f"(linear power); use predict_iq() for complex IQ")
        if x.ndim == 4 and x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected {self.cfg.in_chans} channel(s) (N, {self.cfg.in_chans}, H, W), "
                             f"got shape {x.shape}")
        if x.ndim == 3 and self.cfg.preprocess.kind == "csi" and x.shape[0] != self.cfg.in_chans:
            raise ValueError(f"expected CSI of shape ({self.cfg.in_chans}, H, W), got {x.shape}")
        if x.size == 0:
            raise ValueError(f"got an empty array of shape {x.shape}")
        cols = self._valid_patch_columns(x.shape[-1])
        if cols is None:
            return signal.prepare(x, self.cfg.preprocess, self.cfg.img_size), None
        # A shorter capture keeps the training time scale: it fills the first `cols` patch columns,
        # the rest is padding that attention never sees.
        h, w = self.cfg.img_size
        p = self.cfg.patch_size
        part = signal.prepare(x, self.cfg.preprocess, (h, cols * p))
        images = np.zeros(part.shape[:2] + (h, w), np.float32)
        images[..., : cols * p] = part
        gh, gw = self.cfg.grid_size
        valid = np.zeros((len(images), gh, gw), bool)
        valid[..., :cols] = True
        return images, valid.reshape(len(images), -1)

    def _valid_patch_columns(self, frames: int) -> int | None:
        """Patch columns a spectrogram of ``frames`` time frames fills, if fewer than the grid's."""
        pre = self.cfg.preprocess
        if pre.kind != "spectrogram" or not pre.capture_samples:
            return None
        train_frames = signal.num_frames(pre.capture_samples, pre.n_fft, pre.hop)
        if frames >= train_frames:
            return None
        gw = self.cfg.grid_size[1]
        return min(gw, max(1, round(gw * frames / train_frames)))

    def _iq_spectrograms(self, iq, sample_rate: float | None) -> np.ndarray:
        pre = self.cfg.preprocess
        if pre.kind != "spectrogram":
            raise ValueError(f"this model takes {pre.kind!r} input, not IQ")
        if sample_rate is not None and pre.sample_rate and not np.isclose(sample_rate, pre.sample_rate, rtol=1e-6):
            raise ValueError(f"IQ at {sample_rate:g} Hz, but the model was trained at {pre.sample_rate:g} Hz: "
                             f"resample it first (e.g. scipy.signal.resample_poly)")
        captures = [iq] if np.ndim(iq) == 1 else list(iq)
        if not captures:
            raise ValueError("got no IQ captures")
        spectra = [signal.spectrogram(np.asarray(c), pre) for c in captures]
        if len({s.shape for s in spectra}) > 1:
            raise ValueError("IQ captures in one call must have the same length")
        return np.stack(spectra)

    def _run(self, x: np.ndarray, key_padding: np.ndarray | None = None) -> list[np.ndarray]:
        """Engine outputs for model input of any batch size, split into engine-sized batches."""
        b = self.batch_size
        chunks = [self.engine.run(x[i:i + b], None if key_padding is None else key_padding[i:i + b])
                  for i in range(0, len(x), b)]
        return [np.concatenate(parts) for parts in zip(*chunks)]


class _Predictor(_Task):
    def predict(self, spectrograms) -> Prediction:
        raise NotImplementedError

    def predict_iq(self, iq, sample_rate: float | None = None) -> Prediction:
        """Predict from complex IQ: one capture (samples,) or a batch (N, samples) of equal length."""
        return self.predict(self._iq_spectrograms(iq, sample_rate))

    def stream_iq(self, chunks: Iterable[np.ndarray], sample_rate: float | None = None,
                  window: int | None = None, hop: int | None = None) -> Iterator[Prediction]:
        """Predictions over a continuous capture arriving in chunks of any size.

        A prediction is made for every ``window`` samples, starting every ``hop`` samples (defaults:
        the capture length the model was trained on, no overlap). Samples are carried across chunk
        boundaries, so the result equals cutting the whole capture at once; ``Prediction.start`` is
        the window's first sample. A trailing part shorter than a window is not predicted.
        """
        window = window or self.cfg.preprocess.capture_samples
        if not window:
            raise ValueError("this model records no capture length: pass window=<IQ samples per prediction>")
        hop = hop or window
        if hop <= 0 or window < self.cfg.preprocess.n_fft:
            raise ValueError(f"need hop > 0 and window >= n_fft ({self.cfg.preprocess.n_fft}), got {hop}, {window}")
        buffer = np.zeros(0, dtype=np.complex64)
        consumed = 0  # absolute index of buffer[0]
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 1 or not np.iscomplexobj(chunk):
                raise ValueError(f"stream chunks must be 1-D complex IQ, got {chunk.dtype} of shape {chunk.shape}")
            buffer = np.concatenate([buffer, chunk.astype(np.complex64, copy=False)])
            starts = list(range(0, len(buffer) - window + 1, hop))
            if not starts:
                continue
            pred = self.predict_iq(np.stack([buffer[s:s + window] for s in starts]), sample_rate)
            for i, s in enumerate(starts):
                yield Prediction(pred.indices[i:i + 1], pred.probs[i:i + 1], pred.labels[i:i + 1], consumed + s)
            drop = starts[-1] + hop
            consumed += drop
            buffer = buffer[drop:]


class Classifier(_Predictor):
    """Signal / activity classification."""

    tasks = ("classify",)

    def predict(self, spectrograms) -> Prediction:
        (logits,) = self._run(*self.prepare(spectrograms))
        probs = softmax(logits.astype(np.float64)).astype(np.float32)
        indices = probs.argmax(1)
        return Prediction(indices, probs, np.asarray(self.classes)[indices])


class Segmenter(_Predictor):
    """Per-pixel classes (e.g. noise / NR / LTE). ``indices`` come back at the input's size
    (nearest-neighbour, so no class is invented at edges); ``probs`` stay at the model grid (the
    part of it a short capture fills)."""

    tasks = ("segment",)

    def predict(self, spectrograms) -> Prediction:
        x = np.asarray(spectrograms)
        images, valid = self.prepare(x)
        (logits,) = self._run(images, valid)
        if valid is not None:  # keep the part of the grid the capture filled
            logits = logits[..., : int(valid[0].reshape(self.cfg.grid_size)[0].sum()) * self.cfg.patch_size]
        probs = softmax(logits.astype(np.float64)).astype(np.float32)
        indices = signal.resize_labels(probs.argmax(1), x.shape[-2:])
        return Prediction(indices, probs, np.asarray(self.classes)[indices])


class Encoder(_Task):
    """Embeddings of the pretrained encoder: ``embed`` returns (tokens (N, L, D), pooled (N, D))."""

    tasks = ("encode",)
    load_as = "encode"

    def embed(self, spectrograms) -> tuple[np.ndarray, np.ndarray]:
        tokens, pooled = self._run(*self.prepare(spectrograms))
        return tokens, pooled

    def embed_iq(self, iq, sample_rate: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.embed(self._iq_spectrograms(iq, sample_rate))
