"""What a RAN application calls: ``Classifier``, ``Segmenter`` and ``Encoder``.

Each is the model's own preprocessing chain (``radiofm.signal``) in front of a loaded engine:

    clf = Classifier.from_pretrained("signals-nano")
    pred = clf.predict(spectrograms)            # linear power, (H,W) | (N,H,W) | (N,C,H,W)
    pred = clf.predict_iq(iq, sample_rate=fs)   # raw complex IQ
    pred.labels, pred.probs, pred.indices

Input is checked once, at the door; a ``ValueError`` names what was wrong.
"""

from __future__ import annotations

import os
import threading
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


def _describe(obj) -> str:
    """What a caller passed, for a message: an array's dtype and shape, else its type (and a short repr)."""
    if obj is None:
        return "None"
    if isinstance(obj, (np.ndarray, np.generic)):
        return f"a {obj.dtype} array of shape {np.shape(obj)}"
    text = repr(obj)
    return f"a {type(obj).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_chunks(chunks, call: str, what: str, hint: str) -> None:
    """A stream's chunks must be an iterable of arrays, not one array (the commonest slip) nor a scalar."""
    if isinstance(chunks, np.ndarray):
        raise ValueError(f"{call}() takes an iterable of {what}, got one array of shape {chunks.shape}: {hint}")
    if isinstance(chunks, (str, bytes)) or not isinstance(chunks, Iterable):
        raise ValueError(f"{call}() takes an iterable of {what}, got {_describe(chunks)}")


def _window_and_hop(window, hop, default: int | None, least: int, least_text: str, unit: str,
                    length: str) -> tuple[int, int]:
    """A stream's window (default: the model's ``length`` length, ``default``) and hop (default: the
    window), each checked, in ``unit`` (IQ samples, packets)."""
    if window is None:
        window = default
        if not window:
            raise ValueError(f"this model records no {length} length: pass window=<{unit} per prediction>")
    elif not _whole(window) or window < least:
        raise ValueError(f"window must be a whole number of {unit} >= {least_text} (or None for the "
                         f"model's {length} length), got {window!r}")
    if hop is None:
        hop = window
    elif not _whole(hop) or hop < 1:
        raise ValueError(f"hop must be a positive whole number of {unit} (or None for the window), got {hop!r}")
    return int(window), int(hop)


def _check_batch_size(batch_size) -> None:
    if batch_size is not None and (not _whole(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer (or None for {DEFAULT_BATCH}), got {batch_size!r}")


def _positive_finite(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and bool(np.isfinite(value)) and value > 0)


def _check_sample_rate(sample_rate) -> None:
    if sample_rate is not None and not _positive_finite(sample_rate):
        raise ValueError(f"sample_rate must be a positive, finite number of Hz (or None for the model's own rate), "
                         f"got {sample_rate!r}")


def _check_noise_power(noise_power) -> None:
    if noise_power is None or (isinstance(noise_power, str) and noise_power == "estimate"):
        return
    if not _positive_finite(noise_power):
        raise ValueError(f"noise_power must be the noise power per IQ sample (a positive, finite number), "
                         f"'estimate' (measured on each capture) or None (the IQ as it is), got {noise_power!r}")


def _as_array(obj, expected: str, ragged: str) -> np.ndarray:
    """``obj`` as an array; None or a file name is refused, naming what was expected."""
    if obj is None or isinstance(obj, (str, bytes, os.PathLike)):
        load = "" if obj is None else "; load the file first (e.g. np.load, or radiofm.io.read_input)"
        raise ValueError(f"expected {expected}, got {_describe(obj)}{load}")
    try:
        return np.asarray(obj)
    except ValueError:  # a ragged list
        raise ValueError(ragged) from None


def _given(obj, x: np.ndarray) -> str:
    """What the caller passed (``x`` is it as an array): the shape it had, or its type for a scalar."""
    if isinstance(obj, (np.ndarray, np.generic)) or x.ndim == 0:
        return _describe(obj)
    return f"a {type(obj).__name__} of shape {x.shape}"


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


class _Task:
    """Shared by the three tasks: loading, preprocessing, batching, IQ and streaming."""

    tasks: tuple[str, ...] = ()
    load_as: str | None = None  # rebuild torch weights under this task (an MAE folder as an encoder)

    def __init__(self, engine: Engine, batch_size: int | None = None):
        _check_batch_size(batch_size)
        if engine.cfg.task not in self.tasks:
            wanted = " or ".join(self.tasks)
            hint = (" (a pretrained MAE's encoder is exported with `radiofm export MODEL --task encode --out DIR`)"
                    if "encode" in self.tasks else "")
            raise ValueError(f"{type(self).__name__} needs {_a(wanted)} {wanted} model, this one is "
                             f"{_a(engine.cfg.task)} {engine.cfg.task!r} model{hint}")
        self.engine = engine
        self.batch_size = min(batch_size or DEFAULT_BATCH, engine.max_batch or DEFAULT_BATCH)
        self._torch_engine: Engine | None = None  # engine.mask_fallback's, opened at the first short capture
        self._fallback_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, name_or_path, engine: str = "auto", device: str = "auto", precision: str | None = None,
                        threads: int | None = None, batch_size: int | None = None):
        """A zoo name, model folder, export folder or .onnx/.plan file; ``engine`` torch | onnx | trt | auto;
        ``device`` auto | cpu | cuda | cuda:N; ``precision`` fp32 | fp16 | bf16 | int8 (None: fp32, or
        an .onnx/.plan file's own)."""
        _check_batch_size(batch_size)
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
        (N, L) mask of valid patches; checked at the door. A longer one is resized onto the grid
        (``Classifier.predict`` cuts it into windows instead)."""
        return self._model_input(self._checked(spectrograms))

    def _checked(self, spectrograms) -> np.ndarray:
        """Raw input as an array, refused at the door with what was wrong."""
        expected = ("an array of linear power, (H, W), (N, H, W) or (N, C, H, W)"
                    + (f" (CSI: ({self.cfg.in_chans}, H, W))" if self.cfg.preprocess.kind == "csi" else ""))
        x = _as_array(spectrograms, expected, f"expected {expected}, got a {type(spectrograms).__name__} of arrays "
                                              f"that do not stack into one array (different shapes?)")
        if x.ndim < 2:
            raise ValueError(f"expected {expected}, got {_given(spectrograms, x)}")
        if np.iscomplexobj(x):
            raise ValueError(f"got complex input of shape {x.shape}: predict() takes real spectrograms "
                             f"(linear power); use predict_iq() for complex IQ")
        if x.ndim == 4 and x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected {self.cfg.in_chans} channel(s) (N, {self.cfg.in_chans}, H, W), "
                             f"got shape {x.shape}")
        if x.ndim == 2 and self.cfg.in_chans > 1:
            what = "antennas x subcarriers x packets" if self.cfg.preprocess.kind == "csi" else "channels x H x W"
            raise ValueError(f"expected {self.cfg.in_chans} channels ({what}): ({self.cfg.in_chans}, H, W) or "
                             f"(N, {self.cfg.in_chans}, H, W), got a 2-D array of shape {x.shape}")
        if x.ndim == 3 and self.cfg.preprocess.kind == "csi" and x.shape[0] != self.cfg.in_chans:
            raise ValueError(f"expected CSI of shape ({self.cfg.in_chans}, H, W), got {x.shape}")
        if x.size == 0:
            raise ValueError(f"got an empty array of shape {x.shape}")
        return x

    def _model_input(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        cols = self._valid_patch_columns(x.shape[-1])
        if cols is None:
            return signal.prepare(x, self.cfg.preprocess, self.cfg.img_size), None
        # A shorter capture (or CSI recording) keeps the training time scale: it fills the first
        # `cols` patch columns, the rest is padding that attention never sees.
        h, w = self.cfg.img_size
        p = self.cfg.patch_size
        part = signal.prepare(x, self.cfg.preprocess, (h, cols * p))
        images = np.zeros(part.shape[:2] + (h, w), np.float32)
        images[..., : cols * p] = part
        gh, gw = self.cfg.grid_size
        valid = np.zeros((len(images), gh, gw), bool)
        valid[..., :cols] = True
        return images, valid.reshape(len(images), -1)

    def _train_frames(self) -> int | None:
        """Time steps (spectrogram frames, CSI packets) of the captures the model was trained on, where
        it has a fixed capture length."""
        pre = self.cfg.preprocess
        if pre.kind not in ("spectrogram", "csi") or not pre.capture_samples:
            return None
        # A CSI set records its packets per recording; a spectrogram set its IQ samples per capture.
        return pre.capture_samples if pre.kind == "csi" else signal.num_frames(pre.capture_samples, pre.n_fft, pre.hop)

    def _valid_patch_columns(self, frames: int) -> int | None:
        """Patch columns an input of ``frames`` time steps (spectrogram frames, CSI packets) fills, if
        fewer than the grid's."""
        train_frames = self._train_frames()
        if train_frames is None or frames >= train_frames:
            return None
        gw = self.cfg.grid_size[1]
        return min(gw, max(1, round(gw * frames / train_frames)))

    def _check_iq_input(self, sample_rate) -> None:
        pre = self.cfg.preprocess
        if pre.kind != "spectrogram":
            raise ValueError(f"this model takes {pre.kind!r} input, not IQ")
        _check_sample_rate(sample_rate)
        if sample_rate is not None and pre.sample_rate and not np.isclose(sample_rate, pre.sample_rate, rtol=1e-6):
            raise ValueError(f"IQ at {sample_rate:g} Hz, but the model was trained at {pre.sample_rate:g} Hz: "
                             f"resample it first (e.g. scipy.signal.resample_poly)")

    def _iq_spectrograms(self, iq, sample_rate: float | None, noise_power=None) -> np.ndarray:
        """IQ captures -> the spectrograms the model's training set held (``preprocess.stored_size``)."""
        return self._stored(self._power(self._iq_captures(iq, sample_rate, noise_power), noise_power))

    def _stored(self, spectra: np.ndarray) -> np.ndarray:
        pre = self.cfg.preprocess
        if pre.stored_size:  # as the training set stored them: mean power per pixel, before the dB
            spectra = signal.resize(spectra, pre.stored_size, "area")
        return spectra

    def _iq_captures(self, iq, sample_rate: float | None, noise_power=None) -> np.ndarray:
        """IQ input and its arguments checked at the door; the captures as (N, samples)."""
        self._check_iq_input(sample_rate)
        _check_noise_power(noise_power)
        expected = "complex IQ, one capture (samples,) or a batch (N, samples)"
        captures = _as_array(iq, expected, "IQ captures in one call must have the same length")
        if captures.ndim not in (1, 2):
            raise ValueError(f"expected {expected}, got {_given(iq, captures)}")
        if captures.size == 0:
            raise ValueError(f"got no IQ samples (shape {captures.shape})")
        return captures[None] if captures.ndim == 1 else captures

    def _power(self, captures: np.ndarray, noise_power=None, frames: tuple[int, int] | None = None) -> np.ndarray:
        """STFT power (N, n_fft, frames) of (N, samples) captures, or of their ``frames`` (first, end)
        only, at unit noise power where ``noise_power`` is given ("estimate": measured on what is computed)."""
        pre = self.cfg.preprocess
        spectra = np.stack([signal.spectrogram(c, pre, frames) for c in captures])
        if noise_power is not None:
            power = signal.noise_power(spectra, pre) if noise_power == "estimate" else float(noise_power)
            # Dividing the power is scaling the IQ by 1/sqrt(noise power): the noise floor the model was trained at.
            spectra = (spectra / np.reshape(power, (-1, 1, 1))).astype(np.float32)
        return spectra

    def _engine_for(self, key_padding: np.ndarray | None) -> Engine:
        """The engine for this input: padded input that the engine's graph cannot mask runs on the torch
        engine where ``engine="auto"`` left one at hand (opened once, then reused), so that auto gives
        the same answers whether or not a fixed-length export is there."""
        if key_padding is None or self.engine.takes_key_padding or self.engine.mask_fallback is None:
            return self.engine
        with self._fallback_lock:
            if self._torch_engine is None:
                self._torch_engine = self.engine.mask_fallback() or self.engine
        return self._torch_engine

    def _run(self, x: np.ndarray, key_padding: np.ndarray | None = None) -> list[np.ndarray]:
        """Engine outputs for model input of any batch size, split into engine-sized batches."""
        b = self.batch_size
        engine = self._engine_for(key_padding)
        chunks = [engine.run(x[i:i + b], None if key_padding is None else key_padding[i:i + b])
                  for i in range(0, len(x), b)]
        return [np.concatenate(parts) for parts in zip(*chunks)]


class _Predictor(_Task):
    def predict(self, spectrograms) -> Prediction:
        raise NotImplementedError

    def predict_iq(self, iq, sample_rate: float | None = None, noise_power: float | str | None = None) -> Prediction:
        """Predict from complex IQ: one capture (samples,) or a batch (N, samples) of equal length.

        The models are trained on captures whose noise has unit power per sample, and their answers
        depend on the input level (signals-nano: 73.5 % accuracy at that level, 26.6 % 3 dB above it).
        ``noise_power`` brings a capture there: the noise power per sample in the IQ's own units
        (a receiver's calibrated noise floor), or ``"estimate"`` to measure it on each capture
        (``radiofm.signal.noise_power``). None takes the IQ as it is.
        """
        return self.predict(self._iq_spectrograms(iq, sample_rate, noise_power))

    def stream_iq(self, chunks: Iterable[np.ndarray], sample_rate: float | None = None,
                  window: int | None = None, hop: int | None = None,
                  noise_power: float | str | None = None) -> Iterator[Prediction]:
        """Predictions over a continuous capture arriving in chunks of any size.

        A prediction is made for every ``window`` samples, starting every ``hop`` samples (defaults:
        the capture length the model was trained on, or for a model trained on captures of varying
        length its ``preprocess.max_capture_samples``; no overlap). Samples are carried across chunk
        boundaries, so the result equals cutting the whole capture at once; ``Prediction.start`` is
        the window's first sample. A trailing part shorter than a window is not predicted.
        ``noise_power`` as in ``predict_iq`` ("estimate": measured on each window). The arguments
        are checked when it is called, before the first chunk is read.
        """
        _check_chunks(chunks, "stream_iq", "1-D IQ chunks", "pass [iq] for a capture held in memory (or use predict_iq)")
        self._check_iq_input(sample_rate)
        _check_noise_power(noise_power)
        n_fft = self.cfg.preprocess.n_fft
        default = self.cfg.preprocess.capture_samples or self.cfg.preprocess.max_capture_samples
        window, hop = _window_and_hop(window, hop, default, n_fft, f"n_fft ({n_fft})",
                                      "IQ samples", "capture")

        def take(chunk, buffer):
            if chunk.ndim != 1 or not np.iscomplexobj(chunk):
                raise ValueError(f"stream chunks must be 1-D complex IQ, got {chunk.dtype} of shape {chunk.shape}")
            return chunk.astype(np.complex64, copy=False)

        return self._stream(chunks, window, hop, take, lambda x: self.predict_iq(x, sample_rate, noise_power))

    def stream_csi(self, chunks: Iterable[np.ndarray], window: int | None = None,
                   hop: int | None = None) -> Iterator[Prediction]:
        """Predictions over continuous CSI amplitude arriving in chunks of packets, as ``stream_iq``
        does for IQ.

        Each chunk is (antennas, subcarriers, k) for any k >= 1 packets, at the packet rate the model
        was trained at (NTU-Fi: every 4th packet). A prediction is made for every ``window`` packets,
        starting every ``hop`` packets (defaults: the recording length the model was trained on, no
        overlap); ``Prediction.start`` is the window's first packet. Packets are carried across chunk
        boundaries, so the result equals cutting the whole stream at once. A trailing part shorter
        than a window is not predicted. A window shorter than the model's recording is predicted as
        ``predict`` takes a short recording: padded to the grid at the training time scale, the
        padding masked. The arguments are checked when it is called.
        """
        pre = self.cfg.preprocess
        if pre.kind != "csi":
            raise ValueError(f"stream_csi() needs a CSI model; this one takes {pre.kind} input: use stream_iq()")
        _check_chunks(chunks, "stream_csi", "(antennas, subcarriers, packets) chunks",
                      "pass [csi] for a recording held in memory")
        window, hop = _window_and_hop(window, hop, pre.capture_samples, 2, "2", "packets", "recording")

        def take(chunk, buffer):
            if chunk.ndim != 3 or np.iscomplexobj(chunk) or chunk.shape[0] != self.cfg.in_chans:
                raise ValueError(f"stream chunks must be real CSI amplitude ({self.cfg.in_chans}, subcarriers, "
                                 f"packets), got {chunk.dtype} of shape {chunk.shape}")
            if buffer is not None and chunk.shape[1] != buffer.shape[1]:
                raise ValueError(f"a chunk has {chunk.shape[1]} subcarriers where the stream had {buffer.shape[1]}")
            return chunk.astype(np.float32, copy=False)

        return self._stream(chunks, window, hop, take, self.predict)

    @staticmethod
    def _stream(chunks: Iterable[np.ndarray], window: int, hop: int, take, predict) -> Iterator[Prediction]:
        """One prediction per ``window`` of the stream's last axis (IQ samples, CSI packets), every ``hop``:
        ``take(chunk, buffer)`` checks and converts each chunk, ``predict`` runs a stack of windows."""
        buffer = None
        consumed = 0  # absolute index of buffer[..., 0]
        for chunk in chunks:
            chunk = take(np.asarray(chunk), buffer)
            buffer = chunk if buffer is None else np.concatenate([buffer, chunk], axis=-1)
            starts = list(range(0, buffer.shape[-1] - window + 1, hop))
            if not starts:
                continue
            pred = predict(np.stack([buffer[..., s:s + window] for s in starts]))
            for i, s in enumerate(starts):
                yield Prediction(pred.indices[i:i + 1], pred.probs[i:i + 1], pred.labels[i:i + 1], consumed + s)
            drop = starts[-1] + hop
            consumed += drop
            buffer = buffer[..., drop:]


class Classifier(_Predictor):
    """Signal / activity classification."""

    tasks = ("classify",)

    def predict(self, spectrograms) -> Prediction:
        """One class per input. An input longer than the model's capture (``preprocess.capture_samples``:
        IQ samples, or CSI packets) keeps the training time scale: it is cut into the fewest windows of
        that length that cover it, evenly spaced (so they overlap where it is not a whole number of
        windows), and ``probs`` is their mean, as for an emitter or activity that lasts the whole
        input. An event that shows in one window (a fall) is diluted by the rest: ``stream_iq`` and
        ``stream_csi`` give each window's answer. A shorter input is padded and masked."""
        x = self._checked(spectrograms)
        windows, k = self._windows(x)
        (logits,) = self._run(*self._model_input(windows))
        probs = softmax(logits.astype(np.float64))
        probs = probs.reshape(-1, k, probs.shape[-1]).mean(1).astype(np.float32)
        indices = probs.argmax(1)
        return Prediction(indices, probs, np.asarray(self.classes)[indices])

    def _window_starts(self, frames: int) -> np.ndarray | None:
        """Where the windows of the model's capture length start in an input of ``frames`` time steps:
        the fewest that cover it, evenly spaced; None where it is no longer than that."""
        length = self._train_frames()
        if length is None or frames <= length:
            return None
        return np.round(np.linspace(0, frames - length, -(-frames // length))).astype(int)

    def _windows(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """``x`` as windows of the model's capture length, ``k`` per input in input order, where it is
        longer than that; else ``x`` and 1."""
        starts = self._window_starts(x.shape[-1])
        if starts is None:
            return x, 1
        length = self._train_frames()
        items = x[None] if x.ndim == 2 or (x.ndim == 3 and self.cfg.in_chans > 1) else x  # (N, [C,] H, W)
        windows = np.stack([items[..., s:s + length] for s in starts], axis=1)
        return windows.reshape(-1, *windows.shape[2:]), len(starts)


class Segmenter(_Predictor):
    """Per-pixel classes (e.g. noise / NR / LTE). ``indices`` come back at the input's size
    (nearest-neighbour, so no class is invented at edges): for IQ, the spectrogram's, or the stored
    grid where the model has one (``preprocess.stored_size``: lte-nr-nano's 256x256); ``probs`` stay
    at the model grid (the part of it a short capture fills).

    An IQ capture longer than ``preprocess.max_capture_samples`` (lte-nr-nano: 25 ms, the middle of
    the 10-40 ms captures it was trained on, each squeezed onto its grid) is cut into the fewest
    equal windows no longer than that, each segmented at a time scale the model knows, and their maps
    are put side by side along time: for k windows ``indices`` is (N, H, k * W) on a stored grid (each
    window's W columns span 1/k of the capture, to within one STFT frame) or the spectrogram's size,
    and ``probs`` k model grids side by side. Squeezed onto the grid whole instead, 320 ms scored 67.0 %
    mean class pixel accuracy against 92.4 % (``python -m radiofm.benchmarks.long_segment``)."""

    tasks = ("segment",)

    def predict_iq(self, iq, sample_rate: float | None = None, noise_power: float | str | None = None) -> Prediction:
        """Segment complex IQ: one capture (samples,) or a batch (N, samples) of equal length, a long
        one window by window (see the class), each window's STFT computed on its own (a recording of
        seconds never has its whole spectrogram in memory); ``noise_power`` as in
        ``Classifier.predict_iq``, ``"estimate"`` measured on each window, as ``stream_iq`` does."""
        captures = self._iq_captures(iq, sample_rate, noise_power)
        edges = self._capture_windows(captures.shape[-1])
        if edges is None:
            return self.predict(self._stored(self._power(captures, noise_power)))
        n = len(captures)
        windows = [self._stored(self._power(captures, noise_power, (int(a), int(b)))) for a, b in zip(edges[:-1], edges[1:])]
        parts: list = [None] * len(windows)
        widths: dict[int, list[int]] = {}  # windows of one width go through the model together
        for j, w in enumerate(windows):
            widths.setdefault(w.shape[-1], []).append(j)
        for js in widths.values():
            pred = self.predict(np.concatenate([windows[j] for j in js]))
            for m, j in enumerate(js):
                parts[j] = (pred.indices[m * n:(m + 1) * n], pred.probs[m * n:(m + 1) * n])
        indices = np.concatenate([p[0] for p in parts], axis=-1)
        probs = np.concatenate([p[1] for p in parts], axis=-1)
        return Prediction(indices, probs, np.asarray(self.classes)[indices])

    def _capture_windows(self, samples: int) -> np.ndarray | None:
        """``_window_edges`` of an IQ capture of ``samples`` samples."""
        pre = self.cfg.preprocess
        return self._window_edges(signal.num_frames(samples, pre.n_fft, pre.hop))

    def _window_edges(self, frames: int) -> np.ndarray | None:
        """The spectrogram frames where the windows of a capture of ``frames`` frames begin and end
        (k + 1 edges for k windows), or None where it is taken in one piece."""
        longest = self.cfg.preprocess.max_capture_samples
        if not longest:
            return None
        most = signal.num_frames(longest, self.cfg.preprocess.n_fft, self.cfg.preprocess.hop)
        if frames <= most:
            return None
        return np.round(np.linspace(0, frames, -(-frames // most) + 1)).astype(int)

    def predict(self, spectrograms) -> Prediction:
        images, valid = self.prepare(spectrograms)
        (logits,) = self._run(images, valid)
        if valid is not None:  # keep the part of the grid the capture filled
            logits = logits[..., : int(valid[0].reshape(self.cfg.grid_size)[0].sum()) * self.cfg.patch_size]
        probs = softmax(logits.astype(np.float64)).astype(np.float32)
        indices = signal.resize_labels(probs.argmax(1), np.shape(spectrograms)[-2:])
        return Prediction(indices, probs, np.asarray(self.classes)[indices])


class Encoder(_Task):
    """Embeddings of the pretrained encoder: ``embed`` returns (tokens (N, L, D), pooled (N, D))."""

    tasks = ("encode",)
    load_as = "encode"

    def embed(self, spectrograms) -> tuple[np.ndarray, np.ndarray]:
        tokens, pooled = self._run(*self.prepare(spectrograms))
        return tokens, pooled

    def embed_iq(self, iq, sample_rate: float | None = None,
                 noise_power: float | str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of complex IQ; ``noise_power`` as in ``Classifier.predict_iq``."""
        return self.embed(self._iq_spectrograms(iq, sample_rate, noise_power))
