import numpy as np
import pytest
from scipy.signal import ShortTimeFFT
from scipy.signal.windows import hann

from radiofm import signal
from radiofm.config import PREPROCESS_PRESETS, PreprocessConfig


def _noise(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)


@pytest.mark.parametrize("n, hop", [(1024, 512), (5000, 512), (40000, 512), (5000, 256)])
def test_spectrogram_matches_scipy_short_time_fft(n, hop):
    iq = _noise(n)
    ref = ShortTimeFFT(hann(1024), hop, fs=1.0, mfft=1024, fft_mode="centered", scale_to="magnitude")
    expected = ref.spectrogram(iq.astype(np.complex128))
    got = signal.spectrogram(iq, PreprocessConfig(hop=hop))
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_spectrogram_puts_a_tone_in_its_bin_with_unit_magnitude():
    fs, n = 1024.0, 8192
    t = np.arange(n) / fs
    spec = signal.spectrogram(np.exp(2j * np.pi * 100.0 * t))  # bin spacing fs/1024 = 1 Hz
    assert np.argmax(spec[:, 8]) == 512 + 100  # centred FFT: row 512 is 0 Hz
    assert spec[512 + 100, 8] == pytest.approx(1.0, rel=1e-4)  # scale_to='magnitude', power


@pytest.mark.parametrize(
    "iq, message",
    [
        (np.ones(2048), "complex"),
        (np.ones((2, 2048), np.complex64), "1-D"),
        (np.ones(100, np.complex64), "at least n_fft"),
        (np.r_[np.ones(2047), np.nan].astype(np.complex64), "NaN"),
    ],
)
def test_spectrogram_rejects_bad_iq(iq, message):
    with pytest.raises(ValueError, match=message):
        signal.spectrogram(iq)


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape, size", [((1024, 65), (224, 224)), ((20, 30), (64, 48)), ((256, 256), (224, 224))])
def test_resize_matches_torch_antialiased_interpolate(method, shape, size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x)[:, None], size=size, mode=method, align_corners=False, antialias=True
    )[:, 0].numpy()
    np.testing.assert_allclose(signal.resize(x, size, method), expected, atol=1e-4)


@pytest.mark.parametrize("n_in, n_out", [(10, 4), (4, 10), (4801, 256), (1024, 256)])
def test_area_resize_is_the_exact_overlap_average(n_in, n_out):
    x = np.random.default_rng(6).random((3, n_in)).astype(np.float32)
    lo = np.arange(n_out)[:, None] * n_in / n_out
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(j + 1, lo + n_in / n_out) - np.maximum(j, lo), 0, None)
    expected = x @ (overlap / overlap.sum(1, keepdims=True)).T
    np.testing.assert_allclose(signal.resize(x, (3, n_out), "area"), expected, rtol=1e-5)


def test_area_resize_preserves_mean_power_and_labels_stay_classes():
    x = np.random.default_rng(2).random((1024, 130)).astype(np.float32)
    small = signal.resize(x, (256, 256), "area")
    assert small.mean() == pytest.approx(x.mean(), rel=1e-4)
    labels = np.zeros((256, 256), np.uint8)
    labels[50:120] = 127
    labels[150:] = 255
    out = signal.resize_labels(labels, (224, 100))
    assert set(np.unique(out)) == {0, 127, 255}
    assert out.shape == (224, 100)


def test_prepare_follows_the_original_loader_order():
    pre = PreprocessConfig(**PREPROCESS_PRESETS["later"])
    x = np.random.default_rng(3).random((1024, 65)).astype(np.float32) * 1e-6
    db = 10 * np.log10(x + 1e-12)
    affine = (db + 120.0) / 119.5
    expected = (signal.resize(affine, 224, "bicubic") - 0.451) / 0.043
    got = signal.prepare(x, pre, 224)
    assert got.shape == (1, 1, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-4, atol=1e-4)
    assert signal.prepare(np.stack([x, x]), pre, (64, 32)).shape == (2, 1, 64, 32)


def test_prepare_csi_skips_db_and_normalises_per_antenna():
    pre = PreprocessConfig(kind="csi", offset=-10.0, scale=40.0, mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 4.0])
    x = np.random.default_rng(4).uniform(10, 50, (3, 114, 500)).astype(np.float32)
    got = signal.prepare(x, pre, 224)
    assert got.shape == (1, 3, 224, 224)
    expected = (signal.resize((x - 10.0) / 40.0, 224)[2] - 0.3) / 4.0
    np.testing.assert_allclose(got[0, 2], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.ones(10, np.float32), "expected"),
        (np.ones((16, 16), np.complex64), "real float"),
        (np.full((16, 16), np.inf, np.float32), "NaN or infinite"),
        (-np.ones((16, 16), np.float32), "linear power"),
    ],
)
def test_prepare_rejects_bad_input(x, message):
    with pytest.raises(ValueError, match=message):
        signal.prepare(x, PreprocessConfig(), 32)


def test_iq_to_input_is_spectrogram_then_prepare():
    iq = _noise(20000, seed=5)
    pre = PreprocessConfig()
    np.testing.assert_array_equal(signal.iq_to_input(iq, pre, 64), signal.prepare(signal.spectrogram(iq, pre), pre, 64))


def test_signal_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, radiofm.signal; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def _white_noise(n, power, rng):
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(power / 2)).astype(np.complex64)


@pytest.mark.parametrize("n", [1024, 4096, 32768, 100_000])
@pytest.mark.parametrize("power", [1e-3, 1.0, 250.0])
def test_noise_power_of_white_noise_is_its_power(n, power):
    """Any capture length (3 to 197 STFT frames) and level: within 0.5 dB of the true noise power."""
    pre = PreprocessConfig()
    rng = np.random.default_rng(n)
    estimate = signal.noise_power(signal.spectrogram(_white_noise(n, power, rng), pre), pre)
    assert abs(10 * np.log10(estimate / power)) < 0.5


def test_noise_power_sees_the_floor_under_strong_narrowband_emitters_and_takes_batches():
    pre = PreprocessConfig()
    rng = np.random.default_rng(0)
    t = np.arange(32768)
    tones = sum(np.exp(2j * np.pi * f * t) * 30 for f in (-0.3, -0.1, 0.05, 0.2))  # 4 tones, 29 dB each
    captures = np.stack([_white_noise(32768, 2.0, rng) + tones, _white_noise(32768, 0.5, rng)]).astype(np.complex64)
    spectra = np.stack([signal.spectrogram(c, pre) for c in captures])
    estimate = signal.noise_power(spectra, pre)
    assert estimate.shape == (2,)
    np.testing.assert_allclose(10 * np.log10(estimate / [2.0, 0.5]), 0, atol=0.5)


def test_noise_power_refuses_what_is_no_spectrogram_of_the_config():
    with pytest.raises(ValueError, match=r"noise_power needs spectrograms \(\.\.\., n_fft=1024, frames\).*\(256, 65\)"):
        signal.noise_power(np.ones((256, 65), np.float32), PreprocessConfig())


@pytest.mark.parametrize("n_fft, hop, n", [(64, 32, 64), (64, 32, 5003), (63, 20, 1100), (1024, 512, 20000)])
def test_a_spectrogram_of_some_frames_is_those_columns_of_the_whole(n_fft, hop, n):
    """A long recording is segmented a window at a time: the frames (first, end) are exactly those
    columns of the whole spectrogram, edges included, and bad ranges are refused by name."""
    pre = PreprocessConfig(n_fft=n_fft, hop=hop)
    rng = np.random.default_rng(n)
    iq = (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(np.complex64)
    whole = signal.spectrogram(iq, pre)
    frames = whole.shape[1]
    for first, end in {(0, frames), (0, 1), (frames - 1, frames), (frames // 3, 2 * frames // 3 + 1)}:
        np.testing.assert_array_equal(signal.spectrogram(iq, pre, (first, end)), whole[:, first:end])
    for bad in [(0, frames + 1), (2, 2), (-1, 1), (0.5, 2)]:
        with pytest.raises(ValueError, match=rf"frames must be \(first, end\) with 0 <= first < end <= {frames}"):
            signal.spectrogram(iq, pre, bad)
