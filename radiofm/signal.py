"""IQ -> spectrogram -> model input, the same plain functions for training and inference.

The chain follows the paper's generator and data loader: an STFT as scipy's ``ShortTimeFFT``
computes it (symmetric Hann window, centred FFT, magnitude scaling, power), ``10*log10(x + eps)``,
the affine ``(db + offset) / scale``, a bicubic resize to the model grid and a per-channel
Normalize. Every constant comes from a :class:`~radiofm.config.PreprocessConfig`, which the model's
``config.json`` records, so inference repeats training's preprocessing exactly.

Arrays are (..., H, W) with rows = frequency (lowest first) and columns = time. numpy and scipy only.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from radiofm.config import PreprocessConfig

RESIZE_METHODS = ("bicubic", "bilinear", "area", "nearest")


def _check_iq(iq: np.ndarray, n_fft: int, finite: bool = True) -> np.ndarray:
    iq = np.asarray(iq)
    if iq.ndim != 1:
        raise ValueError(f"IQ must be a 1-D array of complex samples, got shape {iq.shape}")
    if not np.iscomplexobj(iq):
        raise ValueError(
            f"IQ must be complex (complex64 or complex128), got {iq.dtype}; "
            "combine interleaved I/Q first, e.g. iq[0::2] + 1j * iq[1::2]"
        )
    if iq.size < n_fft:
        raise ValueError(f"IQ has {iq.size} samples; at least n_fft={n_fft} are needed for one STFT frame")
    if finite:
        _check_finite(iq)
    return iq


def _check_finite(iq: np.ndarray) -> None:
    if not np.isfinite(iq).all():
        raise ValueError("IQ holds NaN or infinite samples; drop or repair them before the STFT")


@functools.lru_cache(maxsize=8)
def _stft_window(window: str, n_fft: int) -> np.ndarray:
    # Symmetric window (ShortTimeFFT.from_window's and scipy.signal.windows.hann's default),
    # scaled so that a unit-amplitude tone reads 1 ("scale_to='magnitude'"). The (-1)^n factor
    # moves 0 Hz to the middle bin, which is fftshift for even n_fft at no cost.
    from scipy.signal import get_window  # ~1 s to import: on first use, not with radiofm

    w = get_window(window, n_fft, fftbins=False)
    shift = (-1.0) ** np.arange(n_fft) if n_fft % 2 == 0 else np.ones(n_fft)
    return (w / w.sum() * shift).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _slice_range(n_samples: int, n_fft: int, hop: int) -> tuple[int, int]:
    from scipy.signal import ShortTimeFFT

    stft = ShortTimeFFT(np.ones(n_fft), hop, fs=1.0, mfft=n_fft, fft_mode="centered")
    return stft.p_min, stft.p_max(n_samples)


def num_frames(n_samples: int, n_fft: int = 1024, hop: int = 512) -> int:
    """STFT columns for ``n_samples``: ShortTimeFFT's slices p_min..p_max, whose windows touch the signal."""
    p_min, p_max = _slice_range(n_samples, n_fft, hop)
    return p_max - p_min


def spectrogram(iq: np.ndarray, pre: PreprocessConfig | None = None,
                frames: tuple[int, int] | None = None) -> np.ndarray:
    """Linear power spectrogram (n_fft, frames) float32, equal to ``ShortTimeFFT(...).spectrogram(iq)``.

    Computed with strided frames and one batched FFT in single precision (4-5x faster than scipy's
    float64 path on long captures); ``tests/test_signal.py`` checks it against scipy. ``frames``
    ``(first, end)`` computes only those columns, equal to ``spectrogram(iq)[:, first:end]``, reading
    (and checking) only the samples they cover: a long recording a window at a time.
    """
    import scipy.fft  # here, not at module level: ``import radiofm`` stays light

    pre = pre or PreprocessConfig()
    n_fft, hop = pre.n_fft, pre.hop
    iq = _check_iq(iq, n_fft, finite=False)
    p_min, p_max = _slice_range(iq.size, n_fft, hop)
    first, end = (0, p_max - p_min) if frames is None else frames
    if not (isinstance(first, (int, np.integer)) and isinstance(end, (int, np.integer))
            and 0 <= first < end <= p_max - p_min):
        raise ValueError(f"frames must be (first, end) with 0 <= first < end <= {p_max - p_min} (the capture's "
                         f"frames), got {frames!r}")
    count = end - first
    # Slice p covers samples p*hop - n_fft//2 ... ; zeros stand in outside the signal, as in ShortTimeFFT.
    start = (p_min + first) * hop - n_fft // 2
    padded = np.zeros((count - 1) * hop + n_fft, np.complex64)
    lo, hi = max(start, 0), min(start + padded.size, iq.size)
    part = iq[lo:hi]
    _check_finite(part)
    padded[lo - start : hi - start] = part
    windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:count]
    spec = scipy.fft.fft(windows * _stft_window(pre.window, n_fft), axis=1)
    if n_fft % 2:
        spec = np.fft.fftshift(spec, axes=1)
    # A transposed view: copying 4800x1024 floats would cost more than the FFT's power step.
    return np.square(np.abs(spec)).T


# The noise-floor statistic: each frequency bin's median over time (a bin that holds noise for at
# least half the capture gives the noise there), then this quantile over the bins (5 % of the band
# free of emitters is enough).
NOISE_FLOOR_QUANTILE = 0.05


def noise_power(spec: np.ndarray, pre: PreprocessConfig | None = None) -> np.ndarray:
    """Estimated noise power per complex IQ sample of the capture(s) behind ``spec``.

    ``spec``: linear power spectrogram(s) (..., n_fft, frames) as ``spectrogram(iq, pre)`` makes them.
    Returns (...) float64: 1.0 for unit-power white noise (the level the bundled models were trained
    at), g for noise of power g. Each bin's median over time, then the 5th percentile over bins,
    divided by what unit-power noise gives for the same STFT and frame count (simulated once, with
    a fixed seed, and cached). Unbiased within 0.2 dB on noise and narrowband emitters; wideband
    emitters that fill most of the band at high SNR (LTE, NR, WiFi at 20-30 dB) lift it by up to 2 dB.
    """
    pre = pre or PreprocessConfig()
    spec = np.asarray(spec)
    if spec.ndim < 2 or spec.shape[-2] != pre.n_fft:
        raise ValueError(f"noise_power needs spectrograms (..., n_fft={pre.n_fft}, frames) from spectrogram(iq, pre), "
                         f"got shape {spec.shape}")
    return _floor_statistic(spec) / _unit_noise_statistic(pre.n_fft, pre.hop, pre.window, spec.shape[-1])


def _floor_statistic(spec: np.ndarray) -> np.ndarray:
    return np.quantile(np.median(spec, axis=-1), NOISE_FLOOR_QUANTILE, axis=-1)


@functools.lru_cache(maxsize=32)
def _unit_noise_statistic(n_fft: int, hop: int, window: str, frames: int) -> float:
    n = max(n_fft, (frames - 1) * hop)
    while num_frames(n, n_fft, hop) < frames:
        n += 1
    rng = np.random.default_rng(0)
    pre = PreprocessConfig(n_fft=n_fft, hop=hop, window=window)
    captures = (rng.standard_normal((4, n, 2), dtype=np.float32) * np.float32(np.sqrt(0.5))).view(np.complex64)[..., 0]
    return float(np.mean([_floor_statistic(spectrogram(c, pre)[:, :frames]) for c in captures]))


def to_db(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``10*log10(x + eps)`` in float32."""
    return (10.0 * np.log10(np.asarray(x, np.float32) + np.float32(eps))).astype(np.float32)


def scale_db(x: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """The paper's affine scaling ``(x + offset) / scale``."""
    return ((np.asarray(x, np.float32) + np.float32(offset)) / np.float32(scale)).astype(np.float32)


def normalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Per-channel ``(x - mean) / std`` over (N, C, H, W) or (C, H, W); one value applies to all channels."""
    x = np.asarray(x, np.float32)
    channels = x.shape[-3]
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {channels} channels; give 1 or {channels}")
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)
    return ((x - m) / s).astype(np.float32)


def _cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    return np.where(
        t < 1, ((a + 2) * t - (a + 3)) * t * t + 1, np.where(t < 2, (((t - 5) * t + 8) * t - 4) * a, 0.0)
    )


@functools.lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    """(n_out, n_in) interpolation weights along one axis, align_corners=False.

    bicubic/bilinear use the antialiased filters of PIL and ``torch.nn.functional.interpolate(...,
    antialias=True)`` (the kernel stretches when shrinking, so downsampling averages instead of
    aliasing); nearest is torch's ``floor(i * n_in / n_out)``.
    """
    scale = n_in / n_out
    if method == "nearest":
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), np.minimum(np.floor(np.arange(n_out) * scale).astype(int), n_in - 1)] = 1
        return m.astype(np.float32)
    if method not in ("bicubic", "bilinear"):
        raise ValueError(f"unknown resize method {method!r}; choose one of {', '.join(RESIZE_METHODS)}")
    stretch = max(scale, 1.0)
    centre = (np.arange(n_out)[:, None] + 0.5) * scale
    t = (np.arange(n_in)[None, :] + 0.5 - centre) / stretch
    w = _cubic(t) if method == "bicubic" else np.clip(1 - np.abs(t), 0, None)
    support = (2.0 if method == "bicubic" else 1.0) * stretch
    # PIL/torch keep only the taps within the support window and renormalise at the borders.
    w = np.where(np.abs(t * stretch) < support, w, 0.0)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def resize(x: np.ndarray, size: int | Sequence[int], method: str = "bicubic") -> np.ndarray:
    """Resize the last two axes of ``x`` to ``size`` (H, W) with separable weights (float32)."""
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    x = np.asarray(x, np.float32)
    if x.ndim < 2:
        raise ValueError(f"resize needs an array with at least 2 dimensions (..., H, W), got shape {x.shape}")
    h, w = x.shape[-2:]
    if (h, w) == (out_h, out_w):
        return x.copy()
    if x.ndim == 2 and not x.flags.c_contiguous and x.T.flags.c_contiguous:
        # spectrogram() returns a transposed view; strided passes over it cost 20-50x more.
        return np.ascontiguousarray(resize(x.T, (out_w, out_h), method).T)
    if method == "area":  # long captures: block sums beat a dense (out, in) matmul
        return np.ascontiguousarray(_area(_area(x, out_w, -1), out_h, -2), dtype=np.float32)
    x = _resize_matrix(h, out_h, method) @ x @ _resize_matrix(w, out_w, method).T
    return np.ascontiguousarray(x, dtype=np.float32)


def _area(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Exact overlap average along ``axis`` (-1 or -2): differences of the running integral at
    fractional edges, or a block mean when ``n_out`` divides the axis."""
    n_in = x.shape[axis]
    if n_in % n_out == 0:  # strided adds: 4x faster than a reshape-mean over a short inner axis
        k = n_in // n_out
        picks = [(Ellipsis, slice(j, None, k)) + (slice(None),) * (-axis - 1) for j in range(k)]
        return (sum(x[p] for p in picks) / np.float32(k)).astype(np.float32)
    cum = np.concatenate([np.zeros_like(np.take(x, [0], axis), np.float64), np.cumsum(x, axis, np.float64)], axis)
    edges = np.arange(n_out + 1) * (n_in / n_out)
    whole = np.minimum(edges.astype(int), n_in - 1)
    frac = (edges - whole).reshape([-1] + [1] * (-axis - 1))
    at_edges = np.take(cum, whole, axis) + frac * np.take(x, whole, axis)
    return (np.diff(at_edges, axis=axis) * (n_out / n_in)).astype(np.float32)


def resize_labels(labels: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a class map (..., H, W): never invents classes at region edges."""
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    labels = np.asarray(labels)
    h, w = labels.shape[-2:]
    r = np.minimum(np.floor(np.arange(out_h) * h / out_h).astype(int), h - 1)
    c = np.minimum(np.floor(np.arange(out_w) * w / out_w).astype(int), w - 1)
    return labels[..., r[:, None], c[None, :]]


def _as_batch(x: np.ndarray, kind: str) -> np.ndarray:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"model input must be a real float array, got dtype {x.dtype}; pass |STFT|^2, not complex IQ")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        # A 3-D spectrogram batch is (N, H, W); 3-D CSI is one (C, H, W) sample (antennas as channels).
        x = x[:, None] if kind == "spectrogram" else x[None]
    elif x.ndim != 4:
        raise ValueError(f"expected (H, W), (N, H, W) or (N, C, H, W) (CSI: (C, H, W)), got shape {x.shape}")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"input is too small to resize: shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("input holds NaN or infinite values")
    return x.astype(np.float32, copy=False)


def prepare(x: np.ndarray, pre: PreprocessConfig | None = None, img_size: int | Sequence[int] = 224) -> np.ndarray:
    """Raw input -> model input (N, C, H, W) float32, in the original loader's order.

    kind "spectrogram": linear power -> dB -> affine -> resize -> Normalize.
    kind "csi": CSI amplitude -> affine (min-max as offset=-min, scale=max-min) -> resize -> Normalize.
    """
    pre = pre or PreprocessConfig()
    x = _as_batch(x, pre.kind)
    if pre.kind == "spectrogram":
        if (x < 0).any():
            raise ValueError("spectrogram input must be linear power (>= 0); it looks like dB or amplitude with sign")
        x = to_db(x, pre.db_eps)
    x = scale_db(x, pre.offset, pre.scale)
    x = resize(x, img_size, pre.resize)
    return normalize(x, pre.mean, pre.std)


def iq_to_input(iq: np.ndarray, pre: PreprocessConfig | None = None, img_size: int | Sequence[int] = 224) -> np.ndarray:
    """Complex IQ (1-D) -> model input (1, 1, H, W): :func:`spectrogram` then :func:`prepare`."""
    pre = pre or PreprocessConfig()
    if pre.kind != "spectrogram":
        raise ValueError(f"iq_to_input needs preprocess.kind 'spectrogram', this model takes {pre.kind!r} input")
    return prepare(spectrogram(iq, pre), pre, img_size)
