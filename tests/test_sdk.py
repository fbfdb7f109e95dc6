import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from radiofm import Classifier, Encoder, Segmenter, signal
from radiofm.sdk import softmax
from radiofm.checkpoint import save_model
from radiofm.config import PreprocessConfig, preset
from radiofm.model import build_model

PRE = PreprocessConfig(n_fft=64, hop=32, capture_samples=64 * 32)


def _folder(tmp_path_factory, task, **kw):
    torch.manual_seed(0)
    cfg = preset("vit-micro", task=task, preprocess=PRE, **kw)
    model = build_model(cfg)
    if task == "classify":  # a head that gives decided, varied answers rather than near-ties
        torch.nn.init.normal_(model.head.weight, std=1.0)
    return save_model(model, tmp_path_factory.mktemp(task) / "model")


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    return _folder(tmp_path_factory, "classify", num_classes=4, labels=["noise", "lte", "nr", "radar"])


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory):
    return _folder(tmp_path_factory, "segment", num_classes=3, labels=["noise", "NR", "LTE"])


def _iq(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    tone = np.exp(2j * np.pi * rng.uniform(-0.4, 0.4) * t) * rng.uniform(0, 3)
    return (tone + rng.normal(size=n) + 1j * rng.normal(size=n)).astype(np.complex64)


def test_prediction_shapes_for_each_input_rank(clf_dir):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    assert clf.classes == ["noise", "lte", "nr", "radar"] and clf.input_shape == (1, 32, 32)
    spec = np.random.default_rng(0).random((5, 40, 50)).astype(np.float32)
    one = clf.predict(spec[0])
    batch = clf.predict(spec)
    four = clf.predict(spec[:, None])
    assert one.indices.shape == (1,) and batch.probs.shape == (5, 4)
    assert np.array_equal(batch.indices, four.indices) and batch.indices[0] == one.indices[0]
    assert list(batch.labels) == [clf.classes[i] for i in batch.indices]
    np.testing.assert_allclose(batch.probs.sum(1), 1, rtol=1e-5)


def test_large_inputs_split_into_batches_give_the_same_answer(clf_dir):
    spec = np.random.default_rng(1).random((11, 32, 32)).astype(np.float32)
    small = Classifier.from_pretrained(clf_dir, engine="torch", batch_size=3).predict(spec)
    whole = Classifier.from_pretrained(clf_dir, engine="torch", batch_size=64).predict(spec)
    np.testing.assert_allclose(small.probs, whole.probs, atol=1e-6)


def test_predict_iq_equals_spectrogram_then_predict(clf_dir):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    iq = np.stack([_iq(2048, s) for s in range(3)])
    via_iq = clf.predict_iq(iq)
    via_spec = clf.predict(np.stack([signal.spectrogram(c, PRE) for c in iq]))
    assert np.array_equal(via_iq.indices, via_spec.indices)
    np.testing.assert_array_equal(via_iq.probs, via_spec.probs)


def test_many_threads_give_the_serial_results(clf_dir):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    inputs = [np.random.default_rng(i).random((2, 32, 32)).astype(np.float32) * (i + 1) for i in range(200)]
    serial = [clf.predict(x).probs for x in inputs]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda x: clf.predict(x).probs, inputs))
    for a, b in zip(serial, threaded):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert len({p.tobytes() for p in serial}) == len(inputs)  # every input gives its own answer


@pytest.mark.parametrize("bad, match", [
    (np.ones((2, 2, 3, 32, 32), np.float32), "shape"),
    (np.ones((2, 3, 32, 32), np.float32), "channel"),
    (np.full((32, 32), np.nan, np.float32), "NaN"),
    (np.full((32, 32), np.inf, np.float32), "infinite"),
    (np.ones((32, 32), np.complex64), "complex"),
    (np.array([["a"]]), "dtype"),
    (-np.ones((32, 32), np.float32), "linear power"),
    (np.ones((0, 32, 32), np.float32), "empty"),
])
def test_bad_spectrograms_name_the_problem(clf_dir, bad, match):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    with pytest.raises(ValueError, match=match):
        clf.predict(bad)


@pytest.mark.parametrize("bad, match", [
    (np.ones(4096, np.float32), "complex"),
    (np.ones(10, np.complex64), "samples"),
    (np.full(4096, np.nan, np.complex64), "NaN"),
])
def test_bad_iq_names_the_problem(clf_dir, bad, match):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    with pytest.raises(ValueError, match=match):
        clf.predict_iq(bad)


def test_wrong_sample_rate_is_refused(tmp_path):
    cfg = preset("vit-micro", task="classify", num_classes=2, preprocess=PreprocessConfig(n_fft=64, hop=32, sample_rate=1e6))
    clf = Classifier.from_pretrained(save_model(build_model(cfg), tmp_path / "m"), engine="torch")
    with pytest.raises(ValueError, match="resample"):
        clf.predict_iq(_iq(2048, 0), sample_rate=2e6)


@pytest.mark.parametrize("chunk", [100, 777, 2048, 5000])
def test_streaming_across_chunk_boundaries_equals_one_shot(clf_dir, chunk):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    capture = _iq(20000, 7)
    window, hop = 2048, 1500
    streamed = list(clf.stream_iq((capture[i:i + chunk] for i in range(0, len(capture), chunk)), window=window, hop=hop))
    starts = list(range(0, len(capture) - window + 1, hop))
    one_shot = clf.predict_iq(np.stack([capture[s:s + window] for s in starts]))
    assert [p.start for p in streamed] == starts
    np.testing.assert_allclose(np.concatenate([p.probs for p in streamed]), one_shot.probs, atol=1e-6)


CSI_PRE = PreprocessConfig(kind="csi", offset=0.0, scale=60.0, mean=[0.5] * 3, std=[0.2] * 3, capture_samples=40)


@pytest.fixture(scope="module")
def csi_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = preset("vit-micro", task="classify", num_classes=3, labels=["walk", "fall", "clean"], in_chans=3,
                 preprocess=CSI_PRE)
    model = build_model(cfg)
    torch.nn.init.normal_(model.head.weight, std=1.0)
    return save_model(model, tmp_path_factory.mktemp("csi") / "model")


def _csi(packets, seed):
    return np.random.default_rng(seed).uniform(5, 55, (3, 20, packets)).astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 7, 40, 333])
def test_csi_streaming_across_chunk_boundaries_equals_one_shot(csi_dir, chunk):
    clf = Classifier.from_pretrained(csi_dir, engine="torch")
    csi = _csi(300, 3)
    window, hop = 40, 25
    streamed = list(clf.stream_csi((csi[..., i:i + chunk] for i in range(0, csi.shape[-1], chunk)), window, hop))
    starts = list(range(0, csi.shape[-1] - window + 1, hop))  # the last 10 packets make no window
    one_shot = clf.predict(np.stack([csi[..., s:s + window] for s in starts]))
    assert [p.start for p in streamed] == starts
    np.testing.assert_allclose(np.concatenate([p.probs for p in streamed]), one_shot.probs, atol=1e-6)
    assert len(set(np.concatenate([p.labels for p in streamed]))) > 1  # not one answer whatever the input
    # The defaults: the model's recording length (preprocess.capture_samples, in packets), no overlap.
    assert [p.start for p in clf.stream_csi([csi])] == list(range(0, 261, 40))


def test_a_short_csi_recording_keeps_its_time_scale_and_its_padding_never_matters(csi_dir):
    clf = Classifier.from_pretrained(csi_dir, engine="torch")
    short = _csi(20, 6)  # half of the model's recording (capture_samples 40 packets)
    images, valid = clf.prepare(short)
    assert valid.reshape(1, 4, 4)[0].tolist() == [[True, True, False, False]] * 4
    np.testing.assert_allclose(images[..., :16], signal.prepare(short, CSI_PRE, (32, 16)), atol=1e-6)
    other = images.copy()
    other[..., 16:] = np.random.default_rng(4).normal(size=other[..., 16:].shape) * 5  # different padding
    np.testing.assert_allclose(clf.engine.run(images, valid)[0], clf.engine.run(other, valid)[0], atol=1e-5)
    assert not np.allclose(clf.engine.run(images)[0], clf.engine.run(other)[0], atol=1e-3)
    np.testing.assert_allclose(clf.predict(short).probs, softmax(clf.engine.run(images, valid)[0]), atol=1e-6)
    # A whole recording takes the plain path; prepare() resizes a longer one (predict() cuts it, below).
    assert clf.prepare(_csi(40, 6))[1] is None and clf.prepare(_csi(60, 6))[1] is None


def test_a_longer_csi_recording_is_the_mean_of_its_windows_at_the_training_time_scale(csi_dir):
    clf = Classifier.from_pretrained(csi_dir, engine="torch")
    long = np.stack([_csi(100, 8), _csi(100, 9)])  # 2.5 of the model's 40-packet recordings
    pred = clf.predict(long)
    assert pred.probs.shape == (2, 3)
    for i, x in enumerate(long):  # the fewest 40-packet windows that cover 100, evenly spaced: 0, 30, 60
        windows = clf.predict(np.stack([x[..., s:s + 40] for s in (0, 30, 60)])).probs
        assert not np.allclose(windows[0], windows[1:], atol=1e-2)  # the mean is not one window's answer
        np.testing.assert_allclose(pred.probs[i], windows.mean(0), atol=1e-6)
        np.testing.assert_allclose(clf.predict(x).probs[0], pred.probs[i], atol=1e-6)  # alone as in a batch
    stretched = softmax(clf.engine.run(signal.prepare(long, CSI_PRE, clf.cfg.img_size))[0])
    assert not np.allclose(pred.probs, stretched, atol=1e-2)
    x = _csi(41, 10)  # one packet over: two windows, one packet apart
    np.testing.assert_allclose(clf.predict(x).probs[0], clf.predict(np.stack([x[..., :40], x[..., 1:]])).probs.mean(0),
                               atol=1e-6)


def test_a_longer_spectrogram_is_cut_in_the_frames_of_the_model_capture(clf_dir):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    frames = signal.num_frames(2048, PRE.n_fft, PRE.hop)  # the model's capture (preprocess.capture_samples)
    assert signal.spectrogram(_iq(3 * 2048, 11), PRE).shape == (64, 193) and frames == 65
    rng = np.random.default_rng(12)
    spec = (rng.random((64, 193)) ** np.linspace(1, 30, 193)).astype(np.float32)  # it changes over time
    windows = clf.predict(np.stack([spec[:, s:s + 65] for s in (0, 64, 128)])).probs  # 3 windows cover 193
    assert not np.allclose(windows[0], windows[1:], atol=1e-2)
    np.testing.assert_allclose(clf.predict(spec).probs[0], windows.mean(0), atol=1e-6)
    stretched = softmax(clf.engine.run(signal.prepare(spec, PRE, clf.cfg.img_size))[0])[0]
    assert not np.allclose(windows.mean(0), stretched, atol=1e-2)


@pytest.mark.parametrize("call, match", [
    (lambda clf: clf.stream_csi(_csi(80, 0)), r"iterable of \(antennas, subcarriers, packets\) chunks, got one "
                                              r"array of shape \(3, 20, 80\): pass \[csi\]"),
    (lambda clf: clf.stream_csi(iter([]), window=1), "window must be a whole number of packets >= 2 .* got 1"),
    (lambda clf: clf.stream_csi(iter([]), window=40.0), "window must be .* got 40.0"),
    (lambda clf: clf.stream_csi(iter([]), hop=0), "hop must be a positive whole number of packets .* got 0"),
    (lambda clf: list(clf.stream_csi([_csi(50, 0)[:2]])), r"real CSI amplitude \(3, subcarriers, packets\), got "
                                                          r"float32 of shape \(2, 20, 50\)"),
    (lambda clf: list(clf.stream_csi([_csi(30, 0), _csi(30, 1)[:, :10]])), "a chunk has 10 subcarriers where "
                                                                           "the stream had 20"),
])
def test_stream_csi_says_what_was_wrong(csi_dir, call, match):
    with pytest.raises(ValueError, match=match):
        call(Classifier.from_pretrained(csi_dir, engine="torch"))


def test_stream_csi_needs_a_csi_model_and_a_window(clf_dir, tmp_path):
    with pytest.raises(ValueError, match="stream_csi\\(\\) needs a CSI model; this one takes spectrogram input: "
                                         "use stream_iq\\(\\)"):
        Classifier.from_pretrained(clf_dir, engine="torch").stream_csi([_csi(40, 0)])
    cfg = preset("vit-micro", task="classify", num_classes=2, in_chans=3,
                 preprocess=PreprocessConfig(kind="csi", offset=0.0, scale=60.0, mean=[0.5] * 3, std=[0.2] * 3))
    clf = Classifier.from_pretrained(save_model(build_model(cfg), tmp_path / "m"), engine="torch")
    with pytest.raises(ValueError, match="records no recording length: pass window=<packets per prediction>"):
        clf.stream_csi([_csi(40, 0)])
    assert [p.start for p in clf.stream_csi([_csi(100, 0)], window=50)] == [0, 50]


def test_predict_cuts_a_long_csi_recording_into_the_models_windows(csi_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from radiofm.cli import app

    csi = _csi(130, 5)
    np.save(tmp_path / "long.npy", csi)
    result = CliRunner().invoke(app, ["predict", str(csi_dir), str(tmp_path / "long.npy"), "--json",
                                      "--plot", str(tmp_path / "p.png")], terminal_width=200)
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["predictions"]
    expected = Classifier.from_pretrained(csi_dir, engine="torch").predict(np.stack([csi[..., s:s + 40] for s in (0, 40, 80)]))
    assert [r["start"] for r in records] == [0, 40, 80]
    assert [r["label"] for r in records] == list(expected.labels)
    assert (tmp_path / "p.png").stat().st_size > 5_000


def test_segmenter_maps_come_back_at_the_input_size(seg_dir):
    seg = Segmenter.from_pretrained(seg_dir, engine="torch")
    pred = seg.predict(np.random.default_rng(0).random((2, 64, 80)).astype(np.float32))
    assert pred.indices.shape == (2, 64, 80) and pred.probs.shape == (2, 3, 32, 32)
    assert set(np.unique(pred.labels)) <= {"noise", "NR", "LTE"}
    with pytest.raises(ValueError, match="Classifier needs a classify model"):
        Classifier.from_pretrained(seg_dir, engine="torch")


def test_encoder_from_a_pretrained_mae_folder(tmp_path):
    torch.manual_seed(0)
    folder = save_model(build_model(preset("vit-micro", task="mae", preprocess=PRE)), tmp_path / "mae")
    enc = Encoder.from_pretrained(folder, engine="torch")
    tokens, pooled = enc.embed(np.random.default_rng(0).random((3, 32, 80)).astype(np.float32))
    assert tokens.shape == (3, 16, 64) and pooled.shape == (3, 64)
    np.testing.assert_allclose(pooled, tokens.mean(1), atol=1e-6)


def test_import_radiofm_is_light():
    # torch, onnxruntime and scipy's signal and FFT packages (~1.3 s of imports) load on first use.
    heavy = ("torch", "onnxruntime", "scipy.signal", "scipy.fft")
    code = f"import sys, radiofm; from radiofm import Classifier; print(*[m in sys.modules for m in {heavy!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * len(heavy)


@pytest.mark.parametrize("task_dir", ["clf_dir", "seg_dir"])
def test_short_capture_is_padded_and_the_padding_never_matters(request, task_dir):
    runner = (Classifier if task_dir == "clf_dir" else Segmenter).from_pretrained(request.getfixturevalue(task_dir),
                                                                                   engine="torch")
    full_frames = signal.num_frames(PRE.capture_samples, PRE.n_fft, PRE.hop)
    short = np.random.default_rng(3).random((2, 33, full_frames // 2)).astype(np.float32)
    images, valid = runner.prepare(short)
    assert valid is not None and valid.reshape(2, 4, 4)[0].tolist() == [[True, True, False, False]] * 4
    other = images.copy()
    other[..., 16:] = np.random.default_rng(4).normal(size=other[..., 16:].shape) * 5  # different padding
    a, b = runner.engine.run(images, valid)[0], runner.engine.run(other, valid)[0]
    if task_dir == "seg_dir":  # per-pixel logits of the padding itself are cut off by predict()
        a, b = a[..., :16], b[..., :16]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(runner.engine.run(images)[0], runner.engine.run(other)[0], atol=1e-3)
    pred = runner.predict(short)
    if task_dir == "seg_dir":
        assert pred.indices.shape == short.shape and pred.probs.shape == (2, 3, 32, 16)
    full = np.random.default_rng(3).random((2, 33, full_frames)).astype(np.float32)
    assert runner.prepare(full)[1] is None  # full-length captures take the plain path


def test_short_iq_capture_goes_through_the_masked_path(clf_dir):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    iq = _iq(PRE.capture_samples // 2, 5)
    spec = signal.spectrogram(iq, PRE)
    np.testing.assert_array_equal(clf.predict_iq(iq).probs, clf.predict(spec).probs)
    assert clf.prepare(spec)[1] is not None


@pytest.mark.parametrize("task_dir", ["clf_dir", "seg_dir"])
def test_a_variable_length_onnx_export_masks_short_captures_like_torch(request, task_dir, tmp_path):
    from radiofm.export.onnx import export

    folder = request.getfixturevalue(task_dir)
    fp32, = export(folder, tmp_path, "fp32", samples=8, variable_length=True)
    assert fp32.passed, fp32.entry["failures"]
    cls = Classifier if task_dir == "clf_dir" else Segmenter
    torch_runner, onnx_runner = cls.from_pretrained(folder, engine="torch"), cls.from_pretrained(tmp_path, engine="onnx")
    assert onnx_runner.engine.name == "onnx"
    full_frames = signal.num_frames(PRE.capture_samples, PRE.n_fft, PRE.hop)
    rng = np.random.default_rng(5)
    for frames in (full_frames // 2, full_frames // 4, full_frames):
        captures = rng.random((3, 33, frames)).astype(np.float32)
        np.testing.assert_allclose(onnx_runner.predict(captures).probs, torch_runner.predict(captures).probs, atol=1e-5)
    images, valid = onnx_runner.prepare(rng.random((2, 33, full_frames // 2)).astype(np.float32))
    other = images.copy()
    other[..., 16:] = rng.normal(size=other[..., 16:].shape) * 5  # different padding, same mask
    a, b = onnx_runner.engine.run(images, valid)[0], onnx_runner.engine.run(other, valid)[0]
    if task_dir == "seg_dir":
        a, b = a[..., :16], b[..., :16]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_demo_runs_every_engine_and_reuses_its_exports(tmp_path):
    """The README's first command: exports once, scores every engine on fresh captures, draws them."""
    from rich.console import Console

    from radiofm.demo import run_demo

    console = Console(record=True, width=200)
    result = run_demo(tmp_path / "demo.png", n_per_class=1, n_frames=2, repeats=2, console=console)
    runs = {(model, run["label"]): run for model, run in result["runs"]}
    assert {("signals-nano", "torch fp32"), ("signals-nano", "onnx fp32"), ("signals-nano", "onnx int8"),
            ("lte-nr-nano", "torch fp32"), ("lte-nr-nano", "onnx fp32"),
            ("csi-har-nano", "torch fp32"), ("csi-har-nano", "onnx fp32")} <= set(runs)
    for (model, label), run in runs.items():
        assert run["p50_ms"] > 0 and 0 <= run["accuracy"] <= 1
    assert runs[("lte-nr-nano", "onnx fp32")]["accuracy"] > 0.8
    assert runs[("csi-har-nano", "onnx fp32")]["accuracy"] >= 4 / 6  # one recording of each activity
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "exported ONNX" in console.export_text()

    console = Console(record=True, width=200)
    run_demo(tmp_path / "again.png", n_per_class=1, n_frames=1, repeats=1, console=console)
    assert "from the cache" in console.export_text() and "exported ONNX" not in console.export_text()


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(preset("vit-micro", task="mae", preprocess=PRE))
    return save_model(model, tmp_path_factory.mktemp("mae") / "m")


@pytest.mark.parametrize("bad, given", [
    ("spec.npy", r"a str \('spec.npy'\); load the file first"),
    (None, "None"),
    (np.float32(1), r"a float32 array of shape \(\)"),
    (1.0, r"a float \(1.0\)"),
    ([1.0, 2.0], r"a list of shape \(2,\)"),
])
def test_input_that_is_no_spectrogram_array_says_what_is_expected(clf_dir, seg_dir, enc_dir, bad, given):
    expected = r"expected an array of linear power, \(H, W\), \(N, H, W\) or \(N, C, H, W\), got "
    for call in (Classifier.from_pretrained(clf_dir, engine="torch").predict,
                 Segmenter.from_pretrained(seg_dir, engine="torch").predict,
                 Encoder.from_pretrained(enc_dir, engine="torch").embed):
        with pytest.raises(ValueError, match=expected + given):
            call(bad)


@pytest.mark.parametrize("bad, given", [
    ("iq.npy", r"a str \('iq.npy'\)"),
    (None, "None"),
    (np.complex64(1), r"a complex64 array of shape \(\)"),
    (np.ones((2, 4, 512), np.complex64), r"a complex64 array of shape \(2, 4, 512\)"),  # the shape passed
])
def test_iq_that_is_no_capture_array_says_what_is_expected(clf_dir, enc_dir, bad, given):
    expected = r"expected complex IQ, one capture \(samples,\) or a batch \(N, samples\), got "
    for call in (Classifier.from_pretrained(clf_dir, engine="torch").predict_iq,
                 Encoder.from_pretrained(enc_dir, engine="torch").embed_iq):
        with pytest.raises(ValueError, match=expected + given):
            call(bad)


@pytest.mark.parametrize("rate", [0, -1e6, float("nan"), float("inf"), "1e6"])
def test_an_invalid_sample_rate_is_refused_as_such(clf_dir, rate):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    with pytest.raises(ValueError, match="sample_rate must be a positive, finite number of Hz") as e:
        clf.predict_iq(_iq(2048, 0), sample_rate=rate)
    assert "resample" not in str(e.value)
    with pytest.raises(ValueError, match="sample_rate must be"):
        clf.stream_iq([_iq(2048, 0)], sample_rate=rate)


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=0), r"window must be a whole number of IQ samples >= n_fft \(64\).*got 0"),
    (dict(window=32), "window must be .* got 32"),
    (dict(window=2048.0), "window must be .* got 2048.0"),
    (dict(hop=0), "hop must be a positive whole number .* got 0"),
    (dict(hop=-5), "hop must be .* got -5"),
])
def test_stream_iq_checks_window_and_hop_when_called(clf_dir, kwargs, match):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    with pytest.raises(ValueError, match=match):
        clf.stream_iq(iter([_iq(4096, 0)]), **kwargs)  # before any chunk is read
    assert [p.start for p in clf.stream_iq([_iq(4096, 0)], window=None, hop=None)] == [0, 2048]


@pytest.mark.parametrize("chunks", [_iq(4096, 0), np.stack([_iq(2048, 0), _iq(2048, 1)])])
def test_stream_iq_given_one_array_says_to_pass_chunks(clf_dir, chunks):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    shape = re.escape(str(chunks.shape))
    with pytest.raises(ValueError, match=rf"iterable of 1-D IQ chunks, got one array of shape {shape}.*pass \[iq\]"):
        clf.stream_iq(chunks)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=-1), "batch_size must be a positive integer .* got -1"),
    (dict(batch_size=0), "batch_size must be a positive integer .* got 0"),
    (dict(batch_size=2.5), "batch_size must be .* got 2.5"),
    (dict(threads=-1), "threads must be a positive integer .* got -1"),
    (dict(threads=0), "threads must be a positive integer .* got 0"),
    (dict(device="gpu"), "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (dict(device="gpu", engine="onnx"), "device must be .* got 'gpu'"),
    (dict(precision="fp8"), "precision must be one of"),
])
def test_from_pretrained_checks_its_arguments(clf_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Classifier.from_pretrained(clf_dir, **{"engine": "torch", **kwargs})


def test_a_task_mismatch_names_the_task_with_its_article(clf_dir):
    engine = Classifier.from_pretrained(clf_dir, engine="torch").engine
    with pytest.raises(ValueError, match=r"Encoder needs an encode model, this one is a 'classify' model "
                                         r"\(.*`radiofm export MODEL --task encode --out DIR`\)"):
        Encoder(engine)
    with pytest.raises(ValueError, match="batch_size must be"):
        Classifier(engine, batch_size=0)


def test_noise_power_brings_a_capture_to_the_level_the_model_was_trained_at(clf_dir):
    """A known noise power undoes the gain exactly; "estimate" measures it per capture, so the answer no
    longer depends on the gain at all; the zoo classifier at 10 dB above its training level is lost
    without it and recovers with it."""
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    iq = np.stack([_iq(2048, s) for s in range(4)])
    plain = clf.predict_iq(iq)
    for gain in (0.01, 30.0):
        hot = (iq * np.sqrt(gain)).astype(np.complex64)
        np.testing.assert_allclose(clf.predict_iq(hot, noise_power=gain).probs, plain.probs, atol=1e-5)
    estimated = [clf.predict_iq((iq * np.sqrt(g)).astype(np.complex64), noise_power="estimate").probs for g in (0.01, 30.0)]
    np.testing.assert_allclose(estimated[0], estimated[1], atol=1e-5)

    from radiofm.training.synth.signals import CLASSES, generate_signal

    rng = np.random.default_rng(3)
    captures = np.stack([generate_signal(CLASSES[i % 8], rng, 15.0) for i in range(32)]) * np.sqrt(10.0)
    truth = np.arange(32) % 8
    zoo = Classifier.from_pretrained("signals-nano", engine="torch")
    assert np.mean(zoo.predict_iq(captures).indices == truth) < 0.4
    assert np.mean(zoo.predict_iq(captures, noise_power="estimate").indices == truth) > 0.7
    assert np.mean(zoo.predict_iq(captures, noise_power=10.0).indices == truth) > 0.7


@pytest.mark.parametrize("bad", [0, -2.0, float("nan"), float("inf"), "auto", True, [1.0]])
def test_bad_noise_power_is_refused_by_every_iq_entry_point(clf_dir, bad):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    match = r"noise_power must be the noise power per IQ sample .* got "
    with pytest.raises(ValueError, match=match):
        clf.predict_iq(_iq(2048, 0), noise_power=bad)
    with pytest.raises(ValueError, match=match):
        clf.stream_iq(iter([_iq(4096, 0)]), noise_power=bad)  # before any chunk is read


def test_streaming_with_an_estimated_noise_power_estimates_it_per_window(clf_dir):
    clf = Classifier.from_pretrained(clf_dir, engine="torch")
    iq = np.concatenate([_iq(2048, 0) * 3, _iq(2048, 1) * 0.2]).astype(np.complex64)
    streamed = list(clf.stream_iq([iq[:1000], iq[1000:]], noise_power="estimate"))
    whole = clf.predict_iq(np.stack([iq[:2048], iq[2048:]]), noise_power="estimate")
    np.testing.assert_allclose(np.concatenate([p.probs for p in streamed]), whole.probs, atol=1e-6)


def test_iq_goes_through_the_stored_size_the_training_set_had(tmp_path):
    """A model whose training spectrograms were stored area-averaged (lte-nr: 256x256 in linear power)
    gets IQ the same way: predict_iq equals predict on the area-averaged spectrogram, class maps at that grid."""
    torch.manual_seed(0)
    pre = PreprocessConfig(n_fft=64, hop=32, stored_size=[48, 40])
    cfg = preset("vit-micro", task="segment", num_classes=3, labels=["noise", "NR", "LTE"], preprocess=pre)
    seg = Segmenter.from_pretrained(save_model(build_model(cfg), tmp_path / "seg"), engine="torch")
    iq = np.stack([_iq(8192, s) for s in range(2)])
    via_iq = seg.predict_iq(iq)
    spectra = signal.resize(np.stack([signal.spectrogram(c, pre) for c in iq]), (48, 40), "area")
    assert via_iq.indices.shape == (2, 48, 40)
    np.testing.assert_allclose(via_iq.probs, seg.predict(spectra).probs, atol=1e-5)


def _long_segmenter(tmp_path, stored_size):
    torch.manual_seed(0)
    pre = PreprocessConfig(n_fft=64, hop=32, stored_size=stored_size, max_capture_samples=126 * 32)  # 127 frames
    cfg = preset("vit-micro", task="segment", num_classes=3, labels=["noise", "NR", "LTE"], preprocess=pre)
    return Segmenter.from_pretrained(save_model(build_model(cfg), tmp_path / "seg"), engine="torch"), pre


@pytest.mark.parametrize("stored_size", [[48, 40], None])
def test_a_long_iq_capture_is_segmented_window_by_window_at_the_training_time_scale(tmp_path, stored_size):
    """A capture longer than max_capture_samples (here 127 frames) is cut into the fewest equal windows
    no longer than that (311 frames: 104, 103 and 104), each segmented as a capture of its own, maps side
    by side along time; squeezing it onto the grid whole gives another answer. Without a stored grid
    each window's map keeps its own frames, so the map has the spectrogram's size."""
    seg, pre = _long_segmenter(tmp_path, stored_size)
    iq = np.stack([_iq(310 * 32, 5), _iq(310 * 32, 6)])
    spectra = np.stack([signal.spectrogram(c, pre) for c in iq])
    assert spectra.shape[-1] == 311
    pred = seg.predict_iq(iq)
    stored = (lambda x: signal.resize(x, stored_size, "area")) if stored_size else (lambda x: x)
    parts = [seg.predict(stored(spectra[..., a:b])) for a, b in [(0, 104), (104, 207), (207, 311)]]
    np.testing.assert_array_equal(pred.indices, np.concatenate([p.indices for p in parts], axis=-1))
    np.testing.assert_allclose(pred.probs, np.concatenate([p.probs for p in parts], axis=-1), atol=1e-6)
    assert pred.indices.shape == ((2, 48, 120) if stored_size else (2, 64, 311))
    assert pred.probs.shape == (2, 3, 32, 96) and pred.labels.shape == pred.indices.shape
    one = seg.predict_iq(iq[1])  # a capture alone as in a batch
    np.testing.assert_allclose(one.probs[0], pred.probs[1], atol=1e-6)
    whole = seg.predict(stored(spectra)).probs
    assert not np.allclose(signal.resize(whole, pred.probs.shape[-2:], "bicubic"), pred.probs, atol=1e-2)
    # An estimated noise power is measured on each window, as streaming measures it.
    levelled = seg.predict_iq(iq * np.float32(3.0), noise_power="estimate")
    parts = [spectra[..., a:b] for a, b in [(0, 104), (104, 207), (207, 311)]]
    parts = [seg.predict(stored(p / signal.noise_power(p, pre)[:, None, None])) for p in parts]
    np.testing.assert_allclose(levelled.probs, np.concatenate([p.probs for p in parts], axis=-1), atol=1e-5)


def test_a_capture_no_longer_than_max_capture_samples_is_segmented_in_one_piece(tmp_path):
    seg, pre = _long_segmenter(tmp_path, [48, 40])
    iq = _iq(126 * 32, 7)  # exactly the longest capture, 127 frames
    assert signal.spectrogram(iq, pre).shape[-1] == 127
    pred = seg.predict_iq(iq)
    expected = seg.predict(signal.resize(signal.spectrogram(iq, pre), (48, 40), "area"))
    assert pred.indices.shape == (1, 48, 40)
    np.testing.assert_allclose(pred.probs, expected.probs, atol=1e-6)


def test_a_segmenter_streams_in_windows_of_its_longest_capture_by_default(tmp_path):
    seg, _ = _long_segmenter(tmp_path, [48, 40])
    iq = _iq(3 * 126 * 32 + 100, 8)
    streamed = list(seg.stream_iq([iq[:5000], iq[5000:]]))
    assert [p.start for p in streamed] == [0, 126 * 32, 2 * 126 * 32]
    np.testing.assert_allclose(streamed[1].probs, seg.predict_iq(iq[126 * 32:2 * 126 * 32]).probs, atol=1e-6)


def test_zoo_segmenter_on_iq_scores_as_on_its_stored_frames():
    """lte-nr-nano was trained on frames stored at 256x256 (mean power per pixel); straight from the
    STFT its IQ scored 64 % mean per-class pixel accuracy on these frames, through the stored grid 91 %."""
    from radiofm.training.synth.common import sample_rng
    from radiofm.training.synth.lte_nr import lte_nr_capture

    seg = Segmenter.from_pretrained("lte-nr-nano", engine="torch")
    confusion = np.zeros((3, 3), np.int64)
    for i in range(3):
        iq, labels, _ = lte_nr_capture(sample_rng(102, i), duration_ms=10)
        predicted = seg.predict_iq(iq).indices[0]
        assert predicted.shape == labels.shape == (256, 256)
        confusion += np.bincount(labels.ravel() * 3 + predicted.ravel(), minlength=9).reshape(3, 3)
    assert np.mean(np.diag(confusion) / np.maximum(confusion.sum(1), 1)) > 0.8
