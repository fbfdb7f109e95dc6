import json
from pathlib import Path

import numpy as np
import pytest
import sigmf
import torch
from scipy.io import savemat
from sigmf import SigMFFile
from typer.testing import CliRunner

from radiofm import signal
from radiofm.checkpoint import save_model
from radiofm.cli import app
from radiofm.config import PreprocessConfig, preset
from radiofm.io import read_input
from radiofm.model import build_model


def _sigmf(tmp_path, iq, rate=1e6, name="rec"):
    data = tmp_path / f"{name}.sigmf-data"
    iq.astype(np.complex64).tofile(data)
    meta = SigMFFile(data_file=str(data), global_info={sigmf.DATATYPE_KEY: "cf32_le", sigmf.SAMPLE_RATE_KEY: rate,
                                                       sigmf.VERSION_KEY: sigmf.__specification__})
    meta.add_capture(0, metadata={sigmf.FREQUENCY_KEY: 3.5e9})
    meta.tofile(str(tmp_path / f"{name}.sigmf-meta"))
    return tmp_path / f"{name}.sigmf-meta"


def test_readers_give_back_what_was_written(tmp_path):
    rng = np.random.default_rng(0)
    iq = (rng.normal(size=3000) + 1j * rng.normal(size=3000)).astype(np.complex64)
    spec = rng.random((256, 256)).astype(np.float32)
    np.save(tmp_path / "iq.npy", iq)
    savemat(tmp_path / "LTE_NR_spect_frame_1.mat", {"rxSpectrogram": spec})
    rec = read_input(_sigmf(tmp_path, iq, 2e6))
    assert np.array_equal(read_input(tmp_path / "iq.npy").data, iq)
    assert np.array_equal(read_input(tmp_path / "LTE_NR_spect_frame_1.mat").data, spec)
    assert np.array_equal(rec.data, iq) and rec.sample_rate == 2e6 and rec.is_iq


def test_an_ntu_fi_recording_is_read_and_predicted_as_its_dataset_reader_reads_it(tmp_path):
    """`radiofm predict csi-har-nano run12.mat` on NTU-Fi's own file: CSIamp (342 x 2000) becomes
    (3 antennas, 114 subcarriers, every 4th packet), the input the dataset reader gave in training."""
    from radiofm.training.datasets import open_dataset

    rng = np.random.default_rng(2)
    amp = rng.uniform(10, 60, (342, 2000)).astype(np.float32)
    (tmp_path / "set").mkdir()
    savemat(tmp_path / "set" / "walk7.mat", {"CSIamp": amp})
    item = read_input(tmp_path / "set" / "walk7.mat")
    np.testing.assert_array_equal(item.data, amp.reshape(3, 114, 2000)[:, :, ::4])
    np.testing.assert_array_equal(item.data, open_dataset(tmp_path / "set")[0][0])
    savemat(tmp_path / "short.mat", {"CSIamp": np.ones((114, 20))})
    with pytest.raises(ValueError, match=r"short.mat: CSIamp has shape \(114, 20\), not 342 x packets"):
        read_input(tmp_path / "short.mat")

    torch.manual_seed(0)
    cfg = preset("vit-micro", task="classify", num_classes=2, labels=["walk", "clean"], in_chans=3,
                 preprocess=PreprocessConfig(kind="csi", offset=0.0, scale=60.0, mean=[0.5] * 3, std=[0.2] * 3))
    model = save_model(build_model(cfg), tmp_path / "csi-model")
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "set" / "walk7.mat")], terminal_width=200)
    assert result.exit_code == 0 and ("walk (" in result.output or "clean (" in result.output), result.output
    np.save(tmp_path / "flat.npy", amp[:, :500])
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "flat.npy")], terminal_width=300)
    assert result.exit_code == 1
    assert ("flat.npy: expected 3 channels (antennas x subcarriers x packets): (3, H, W) or (N, 3, H, W), "
            "got a 2-D array of shape (342, 500)") in " ".join(result.output.split())


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"not matlab")
    (tmp_path / "x.txt").write_text("1 2 3")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    savemat(tmp_path / "two.mat", {"a": np.ones(2), "b": np.ones(2)})
    for name, match in [("bad.mat", "bad.mat"), ("x.txt", "unsupported"), ("obj.npy", "obj.npy"),
                        ("two.mat", "no array under the keys"), ("missing.npy", "does not exist"),
                        ("gone.sigmf-meta", "gone.sigmf-meta")]:
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            read_input(tmp_path / name)


def _iq_classifier(tmp_path):
    """A small untrained classifier of 1 MS/s IQ in 1024-sample captures."""
    torch.manual_seed(0)
    cfg = preset("vit-micro", task="classify", num_classes=3, labels=["noise", "lte", "nr"],
                 preprocess=PreprocessConfig(n_fft=64, hop=32, capture_samples=1024, sample_rate=1e6))
    return save_model(build_model(cfg), tmp_path / "m")


def test_predict_command_on_every_input_kind(tmp_path):
    model = _iq_classifier(tmp_path)
    rng = np.random.default_rng(1)
    iq = (rng.normal(size=5000) + 1j * rng.normal(size=5000)).astype(np.complex64)
    np.save(tmp_path / "spec.npy", rng.random((2, 40, 40)).astype(np.float32))
    meta = _sigmf(tmp_path, iq)
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "spec.npy"), str(meta), "--json"])
    assert result.exit_code == 0, result.output
    preds = json.loads(result.stdout)["predictions"]
    assert [p["item"] for p in preds[:2]] == [0, 1]
    assert [p["start"] for p in preds[2:]] == [0, 1024, 2048, 3072]  # 5000 samples -> 4 whole windows
    assert all(p["label"] in ("noise", "lte", "nr") and abs(sum(p["probabilities"].values()) - 1) < 1e-3 for p in preds)
    wrong_rate = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "spec.npy"), str(_sigmf(tmp_path, iq, 2e6, "fast"))])
    assert wrong_rate.exit_code == 1 and "resample" in wrong_rate.output


def test_predict_plot_draws_what_each_window_and_item_was_predicted(tmp_path):
    from PIL import Image

    from radiofm.engines import TorchEngine
    from radiofm.plotting import MAX_UNITS, plot_predictions, prediction_row
    from radiofm.sdk import Classifier, Segmenter

    torch.manual_seed(0)
    pre = PreprocessConfig(n_fft=64, hop=32, capture_samples=1024, sample_rate=1e6)
    cfg = preset("vit-micro", task="classify", num_classes=3, labels=["noise", "lte", "nr"], preprocess=pre)
    model = save_model(build_model(cfg), tmp_path / "m")
    rng = np.random.default_rng(1)
    iq = (rng.normal(size=5000) + 1j * rng.normal(size=5000)).astype(np.complex64)
    np.save(tmp_path / "rec.npy", iq)
    np.save(tmp_path / "spec.npy", rng.random((3, 40, 40)).astype(np.float32))
    out = tmp_path / "pictures" / "pred.png"
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "rec.npy"), str(tmp_path / "spec.npy"),
                                      "--engine", "torch", "--json", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    preds = json.loads(result.stdout)["predictions"]
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 300

    # The units drawn are the predictions made: 4 windows of the recording (with their start
    # times), then the 3 spectrograms of the batch, each titled with its label and probability.
    clf = Classifier(TorchEngine(model))
    windows = list(clf.stream_iq([iq], 1e6))
    row = prediction_row("rec.npy", read_input(tmp_path / "rec.npy"), windows, clf)
    titles = [f"{p['start'] / 1e3:.2f} ms: {p['label']} {p['probability']:.2f}" for p in preds[:4]]
    assert [u.title for u in row.units] == titles and row.total == 4
    assert all(u.spectrogram.shape == (64, 33) and np.allclose(u.probs.sum(), 1, atol=1e-5) for u in row.units)
    batch = prediction_row("spec.npy", read_input(tmp_path / "spec.npy"), [clf.predict(np.load(tmp_path / "spec.npy"))], clf)
    assert [u.title for u in batch.units] == [f"{p['label']} {p['probability']:.2f}" for p in preds[4:]]
    assert plot_predictions(tmp_path / "p.svg", [row, batch], clf.classes, "classify", "t") == [titles, [u.title for u in batch.units]]

    # A segmenter's units carry their class maps; a long recording is cut at MAX_UNITS and says so.
    seg_cfg = preset("vit-micro", task="segment", num_classes=3, labels=["noise", "NR", "LTE"])
    seg = Segmenter(TorchEngine(save_model(build_model(seg_cfg), tmp_path / "s")))
    frames = rng.random((MAX_UNITS + 2, 32, 32)).astype(np.float32)
    np.save(tmp_path / "frames.npy", frames)
    pred = seg.predict(frames)
    row = prediction_row("frames.npy", read_input(tmp_path / "frames.npy"), [pred], seg)
    assert row.total == MAX_UNITS + 2 and len(row.units) == MAX_UNITS
    assert all(np.array_equal(u.classes, m) for u, m in zip(row.units, pred.indices))
    assert all(u.title.startswith(max(seg.classes, key=lambda c: (m == seg.classes.index(c)).mean()))
               for u, m in zip(row.units, pred.indices))
    assert (tmp_path / "p.svg").read_text().startswith("<?xml")

    bad = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "spec.npy"), "--plot", str(tmp_path / "p.jpg")])
    assert bad.exit_code == 1 and "--plot" in bad.output and ".png" in bad.output


def test_a_segmenter_class_map_is_drawn_over_the_whole_of_its_spectrogram(tmp_path):
    """An IQ capture's class map is coarser than its spectrogram (lte-nr-nano: 256 x 256 against
    1024 x 2400 frames at 20 ms); it is drawn over the spectrogram's whole extent, not its first columns."""
    from PIL import Image

    from radiofm.plotting import Row, Unit, plot_predictions
    from radiofm.training.show import MASK_COLOURS

    spectrogram = np.random.default_rng(0).random((256, 1200)) + 1.0
    row = Row("rec", [Unit(spectrogram, "LTE 100%", classes=np.full((64, 48), 2, np.uint8))], total=1)
    plot_predictions(tmp_path / "p.png", [row], ["noise", "NR", "LTE"], "segment", "t")
    with Image.open(tmp_path / "p.png") as img:
        pixels = np.asarray(img.convert("RGB"), float)
    lte = np.array([int(MASK_COLOURS[2][i:i + 2], 16) for i in (1, 3, 5)], float)
    is_lte = np.abs(pixels - lte).sum(-1) < 40
    columns = np.flatnonzero(is_lte.any(0))
    # The map fills its panel, which is nearly the figure's width; drawn in its own pixels it filled 4 %.
    assert columns.size > 0.8 * pixels.shape[1], (columns.size, pixels.shape)


def test_a_long_capture_a_segmenter_takes_in_windows_is_drawn_window_by_window(tmp_path):
    """Each window: its spectrogram at the stored grid (what the model saw) under its part of the map,
    titled with its start time; the map is the one predict_iq gave."""
    from radiofm.engines import TorchEngine
    from radiofm.plotting import plot_predictions, prediction_row
    from radiofm.sdk import Segmenter

    torch.manual_seed(0)
    pre = PreprocessConfig(n_fft=64, hop=32, stored_size=[48, 40], max_capture_samples=126 * 32, sample_rate=1e6)
    cfg = preset("vit-micro", task="segment", num_classes=3, labels=["noise", "NR", "LTE"], preprocess=pre)
    seg = Segmenter(TorchEngine(save_model(build_model(cfg), tmp_path / "s")))
    rng = np.random.default_rng(2)
    iq = (rng.normal(size=310 * 32) + 1j * rng.normal(size=310 * 32)).astype(np.complex64)  # 311 frames: 3 windows
    np.save(tmp_path / "rec.npy", iq)
    pred = seg.predict_iq(iq, 1e6)
    row = prediction_row("rec.npy", read_input(tmp_path / "rec.npy"), [pred], seg, 1e6)
    assert [u.title.split(":")[0] for u in row.units] == ["0.0 ms", "3.3 ms", "6.6 ms"] and row.total == 3
    assert all(u.spectrogram.shape == (48, 40) and u.classes.shape == (48, 40) for u in row.units)
    np.testing.assert_array_equal(np.concatenate([u.classes for u in row.units], axis=1), pred.indices[0])
    np.testing.assert_allclose(row.units[1].spectrogram, signal.resize(signal.spectrogram(iq, pre)[:, 104:207], (48, 40), "area"),
                               rtol=1e-6)
    plot_predictions(tmp_path / "p.png", [row], seg.classes, "segment", "t")


def _micro_classifier(folder):
    torch.manual_seed(0)
    cfg = preset("vit-micro", task="classify", num_classes=3, labels=["noise", "lte", "nr"],
                 preprocess=PreprocessConfig(n_fft=64, hop=32, capture_samples=1024, sample_rate=1e6))
    return save_model(build_model(cfg), folder)


def test_matlab_vectors_are_read_as_1d_and_directories_and_garbage_are_named(tmp_path):
    iq = (np.arange(300) + 1j).astype(np.complex64)
    savemat(tmp_path / "col.mat", {"iq": iq[:, None]})
    savemat(tmp_path / "row.mat", {"iq": iq[None, :]})
    np.save(tmp_path / "col.npy", iq[:, None])
    for name in ("col.mat", "row.mat", "col.npy"):
        assert np.array_equal(read_input(tmp_path / name).data, iq), name
    with pytest.raises(ValueError, match="is a directory, not a file"):
        read_input(tmp_path)
    (tmp_path / "junk.npy").write_bytes(b"garbage, not an array")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, said in (("junk.npy", "does not start with the .npy header"), ("obj.npy", "holds Python objects")):
        with pytest.raises(ValueError, match="not a plain numeric .npy array") as info:
            read_input(tmp_path / name)
        assert said in str(info.value) and "allow_pickle" not in str(info.value) and "unsafe" not in str(info.value)


def test_predict_cuts_every_recording_into_whole_captures(tmp_path):
    from radiofm.engines import TorchEngine
    from radiofm.sdk import Classifier

    model = _micro_classifier(tmp_path / "my-model")
    rng = np.random.default_rng(2)
    noise = lambda *shape: (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    rows, column, once, short = noise(3, 2500), noise(2100), noise(1500), noise(700)
    np.save(tmp_path / "rows.npy", rows)  # one recording per row
    savemat(tmp_path / "column.mat", {"iq": column[:, None]})  # a MATLAB column vector
    np.save(tmp_path / "once.npy", once)  # between 1 and 2 captures: one window, the tail left out
    np.save(tmp_path / "short.npy", short)  # under one capture: predicted as a short capture
    names = ["rows.npy", "column.mat", "once.npy", "short.npy"]
    result = CliRunner().invoke(app, ["predict", str(model), *(str(tmp_path / n) for n in names), "--engine", "torch",
                                      "--json", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    preds = json.loads(result.stdout)["predictions"]
    got = [(Path(p["input"]).name, p["item"], p["start"]) for p in preds]
    assert got == [("rows.npy", r, s) for r in range(3) for s in (0, 1024)] + [
        ("column.mat", 0, 0), ("column.mat", 0, 1024), ("once.npy", 0, 0), ("short.npy", 0, None)]
    # Each window is the capture the model would get from streaming that recording.
    clf = Classifier(TorchEngine(model))
    expect = clf.predict_iq(np.stack([rows[1][:1024], rows[2][1024:2048], once[:1024]]), 1e6).probs
    got = [preds[i]["probabilities"] for i in (2, 5, 8)]
    assert np.allclose([list(p.values()) for p in got], expect, atol=1e-3)
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_predict_says_real_samples_must_be_made_complex_and_titles_with_the_model_name(tmp_path):
    model = _micro_classifier(tmp_path / "my-model")
    rng = np.random.default_rng(3)
    np.save(tmp_path / "interleaved.npy", rng.normal(size=4096).astype(np.float32))
    np.save(tmp_path / "rows.npy", (rng.normal(size=(2, 4096)) * 1000).astype(np.int16))
    np.save(tmp_path / "spec.npy", rng.random((40, 40)).astype(np.float32))
    for name, hint in (("interleaved.npy", "x[0::2] + 1j*x[1::2]"), ("rows.npy", "x[0] + 1j*x[1]")):
        result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / name)], terminal_width=400)
        assert result.exit_code == 1 and name in result.output, result.output
        assert "IQ must be complex" in result.output and hint in result.output
    # A real spectrogram is predicted as before; the table is titled with the model's own name.
    spec = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "spec.npy"), "--engine", "torch"],
                              terminal_width=400)
    assert spec.exit_code == 0, spec.output
    assert "my-model classify on torch" in spec.output and "vit-micro" not in spec.output


def test_predict_names_the_input_that_was_wrong_among_several(tmp_path):
    """The checks at the SDK's door speak of "input"; with several files the CLI says which one."""
    model = _micro_classifier(tmp_path / "my-model")
    rng = np.random.default_rng(4)
    np.save(tmp_path / "good.npy", rng.random((40, 40)).astype(np.float32))
    np.save(tmp_path / "holes.npy", np.full((40, 40), np.nan, np.float32))
    np.save(tmp_path / "db.npy", -rng.random((40, 40)).astype(np.float32))
    np.save(tmp_path / "short.npy", (rng.normal(size=10) + 1j * rng.normal(size=10)).astype(np.complex64))
    for name, said in (("holes.npy", "NaN or infinite"), ("db.npy", "linear power"), ("short.npy", "has 10 samples")):
        result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "good.npy"), str(tmp_path / name),
                                          "--engine", "torch"], terminal_width=400)
        assert result.exit_code == 1, result.output
        assert f"{tmp_path / name}: " in result.output and said in result.output, result.output
        assert "good.npy" not in result.output
    missing = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "none.npy")], terminal_width=400)
    assert missing.exit_code == 1 and missing.output.count("none.npy") == 1, missing.output  # named once, not twice


def test_predict_on_an_exported_file_runs_its_own_precision_unless_told_otherwise(tmp_path):
    from radiofm.export.onnx import export

    torch.manual_seed(0)
    folder = save_model(build_model(preset("vit-micro", task="classify", num_classes=3)), tmp_path / "clf")
    *_, fp16 = export(folder, tmp_path / "exp", "fp16", samples=4, batch_sizes=(1,))  # fp32, then fp16
    np.save(tmp_path / "spec.npy", np.random.default_rng(0).random((2, 32, 32)).astype(np.float32))
    runner = CliRunner()
    ran = runner.invoke(app, ["predict", str(fp16.path), str(tmp_path / "spec.npy"), "--json"])
    assert ran.exit_code == 0, ran.output
    assert "fp16" in json.loads(ran.output)["engine"]
    refused = runner.invoke(app, ["predict", str(fp16.path), str(tmp_path / "spec.npy"), "--precision", "fp32"])
    assert refused.exit_code == 1 and "fp16" in refused.output


def test_predict_command_noise_power_levels_iq_and_is_refused_for_spectrograms(tmp_path):
    model = _iq_classifier(tmp_path)
    rng = np.random.default_rng(2)
    iq = ((rng.normal(size=2048) + 1j * rng.normal(size=2048)) / np.sqrt(2)).astype(np.complex64)  # unit power
    np.save(tmp_path / "rec.npy", iq)
    np.save(tmp_path / "hot.npy", iq * np.float32(10))  # 20 dB hotter: noise power 100
    np.save(tmp_path / "spec.npy", rng.random((40, 40)).astype(np.float32))

    def probabilities(*args):
        result = CliRunner().invoke(app, ["predict", str(model), *args, "--json"])
        assert result.exit_code == 0, result.output
        return [list(p["probabilities"].values()) for p in json.loads(result.stdout)["predictions"]]

    np.testing.assert_allclose(probabilities(str(tmp_path / "hot.npy"), "--noise-power", "100"),
                               probabilities(str(tmp_path / "rec.npy")), atol=1e-4)
    np.testing.assert_allclose(probabilities(str(tmp_path / "hot.npy"), "--noise-power", "estimate"),
                               probabilities(str(tmp_path / "rec.npy"), "--noise-power", "estimate"), atol=1e-4)
    hot = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "hot.npy")])
    line = " ".join(hot.output.split())
    assert hot.exit_code == 0 and "note: " in line and "hot.npy: its noise floor is +20" in line and "--noise-power estimate" in line
    for quiet in (["rec.npy"], ["hot.npy", "--noise-power", "100"]):  # at the level, or levelled: no note
        result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / quiet[0]), *quiet[1:]])
        assert result.exit_code == 0 and "note:" not in result.output, result.output
    for bad in ("0", "-1", "loud"):
        result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "rec.npy"), "--noise-power", bad])
        assert result.exit_code == 1 and "--noise-power must be a positive number" in result.output and bad in result.output
    spec = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "spec.npy"), "--noise-power", "estimate"])
    assert spec.exit_code == 1 and "spec.npy: --noise-power applies to IQ recordings" in " ".join(spec.output.split())


# --------------------------------------------------------------------------- SigMF annotations
def _recording_with_a_note(tmp_path, iq, rate, fc, name="rec"):
    """A SigMF recording at ``fc`` that already holds one annotation of its own (radiofm must keep it)."""
    meta = _sigmf(tmp_path, iq, rate, name)
    rec = sigmf.sigmffile.fromfile(str(meta))
    rec._metadata["captures"][0][sigmf.FREQUENCY_KEY] = fc
    rec.add_annotation(100, 50, metadata={sigmf.LABEL_KEY: "mine", sigmf.COMMENT_KEY: "by hand"})
    rec.tofile(str(meta), overwrite=True)
    return meta


def test_predict_annotates_a_recording_with_each_window_and_keeps_other_annotations(tmp_path):
    model = _micro_classifier(tmp_path / "my-model")
    rng = np.random.default_rng(6)
    iq = (rng.normal(size=3 * 1024 + 200) + 1j * rng.normal(size=3 * 1024 + 200)).astype(np.complex64)
    meta = _recording_with_a_note(tmp_path, iq, 1e6, 2.4e9)
    for _ in range(2):  # a second run replaces radiofm's annotations instead of adding more
        result = CliRunner().invoke(app, ["predict", str(model), str(meta), "--annotate", "--engine", "torch",
                                          "--json"], terminal_width=400)
        assert result.exit_code == 0, result.output
        assert f"annotated {meta}: 3 annotations" in result.stderr
    preds = json.loads(result.stdout)["predictions"]
    rec = sigmf.sigmffile.fromfile(str(meta))  # reads, so the file is valid SigMF
    rec.validate()
    ours = [a for a in rec.get_annotations() if a.get("core:generator", "").startswith("radiofm ")]
    assert [a["core:label"] for a in rec.get_annotations() if a not in ours] == ["mine"]
    assert [(a["core:sample_start"], a["core:sample_count"]) for a in ours] == [(0, 1024), (1024, 1024), (2048, 1024)]
    assert [a["core:label"] for a in ours] == [p["label"] for p in preds]
    assert all(a["core:generator"].endswith(" my-model") for a in ours)
    assert all((a["core:freq_lower_edge"], a["core:freq_upper_edge"]) == (2.4e9 - 5e5, 2.4e9 + 5e5) for a in ours)
    top = max(preds[1]["probabilities"], key=preds[1]["probabilities"].get)
    assert ours[1]["core:comment"].startswith(f"{top} {preds[1]['probabilities'][top]:.2f}")
    assert np.array_equal(rec.read_samples(), iq)  # the samples are untouched


def test_annotate_refuses_what_it_cannot_write_before_predicting(tmp_path):
    model = _micro_classifier(tmp_path / "my-model")
    np.save(tmp_path / "iq.npy", np.ones(2048, np.complex64))
    (tmp_path / "rec.sigmf").write_bytes(b"")
    for name, said in (("iq.npy", "is not a SigMF recording"), ("rec.sigmf", "is a SigMF archive")):
        result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / name), "--annotate"],
                                    terminal_width=400)
        assert result.exit_code == 1 and said in result.output, result.output
        assert "┃" not in result.output  # refused before any prediction was printed


def test_segment_regions_become_time_frequency_boxes():
    """A class map's regions, as boxes in samples and Hz: row 0 is -fs/2 about the capture frequency,
    columns split the window's samples evenly; background and speckle give none."""
    from radiofm.annotate import Window, segment_annotations

    class_map = np.zeros((8, 10), np.uint8)
    class_map[2:4, 0:5] = 1  # rows 2-3: -fs/4 .. 0 about fc; columns 0-4: samples 0 .. 500 of 1000
    class_map[6, 9] = 2  # one pixel: under MIN_REGION_FRACTION of 80 pixels is 1 pixel, so kept
    boxes = segment_annotations([Window(5000, 1000, class_map=class_map)], ["noise", "NR", "LTE"], 8e6, [1e9], "g")
    assert [(b["core:label"], b["core:sample_start"], b["core:sample_count"], b["core:freq_lower_edge"],
             b["core:freq_upper_edge"]) for b in boxes] == [
        ("NR", 5000, 500, 1e9 - 2e6, 1e9), ("LTE", 5900, 100, 1e9 + 2e6, 1e9 + 3e6)]
    speckle = np.zeros((100, 100), np.uint8)
    speckle[50, 50] = 1  # 1 pixel of 10000: speckle
    assert segment_annotations([Window(0, 10, class_map=speckle)], ["noise", "NR"], 1e6, [0.0], "g") == []


def test_a_class_s_regions_on_one_band_join_across_short_gaps():
    """A TDD carrier's bursts (one band, gaps of two columns = 0.2 ms) are one box, a burst over part
    of its band included; the same class on another band, another class on this band, and a burst
    past the gap stay apart; a gap of 0 keeps a box per region."""
    from radiofm.annotate import Window, segment_annotations

    class_map = np.zeros((20, 20), np.uint8)
    for first in (0, 4, 8):
        class_map[10:18, first:first + 2] = 1  # NR bursts, rows 10-17, columns first, first + 1
    class_map[12:15, 12:14] = 1  # a burst over part of the band, two columns after the last
    class_map[2:5, 0:6] = 1  # NR on another band at the same time
    class_map[10:18, 17:20] = 2  # LTE on the NR band, right after it
    windows = [Window(0, 2000, class_map=class_map)]  # 100 samples = 0.1 ms per column at 1 MS/s
    boxes = segment_annotations(windows, ["noise", "NR", "LTE"], 1e6, [0.0], "g", join_gap_s=0.2e-3)
    got = sorted((b["core:label"], b["core:sample_start"], b["core:sample_count"], b["core:freq_lower_edge"],
                  b["core:freq_upper_edge"]) for b in boxes)
    assert got == [("LTE", 1700, 300, 0.0, 400000.0), ("NR", 0, 600, -400000.0, -250000.0),
                   ("NR", 0, 1400, 0.0, 400000.0)], got
    joined = next(b for b in boxes if b["core:label"] == "NR" and b["core:sample_count"] == 1400)
    assert joined["core:comment"].startswith("4 regions at most 0.2 ms apart, 54 pixels"), joined
    apart = segment_annotations(windows, ["noise", "NR", "LTE"], 1e6, [0.0], "g", join_gap_s=0.1e-3)
    assert len(apart) == len(segment_annotations(windows, ["noise", "NR", "LTE"], 1e6, [0.0], "g", join_gap_s=0)) == 6
    with pytest.raises(ValueError, match="join gap is a duration of at least 0 s, got -1"):
        segment_annotations(windows, ["noise", "NR"], 1e6, [0.0], "g", join_gap_s=-1)


def test_a_segmenter_annotates_carriers_where_they_are_in_frequency(tmp_path):
    """lte-nr-nano on a fresh LTE + NR capture: an LTE box lies on the LTE carrier's band (its
    frequency edges, about the recording's centre frequency, are the carrier's), none on the noise."""
    from radiofm.training.synth.lte_nr import CLASSES, SAMPLE_RATE, lte_nr_capture

    iq, _, info = lte_nr_capture(np.random.default_rng(5), duration_ms=20)
    lte = [(fc, bw) for k, fc, bw, *_ in info["carriers"] if CLASSES[k] == "LTE" and bw >= 10e6]
    assert lte, info  # the scene holds a wide LTE carrier (seed 5: 15 MHz at -16.8 MHz)
    fc_lte, bw = lte[0]
    meta = _recording_with_a_note(tmp_path, iq, SAMPLE_RATE, 3.5e9)
    result = CliRunner().invoke(app, ["predict", "lte-nr-nano", str(meta), "--annotate", "--engine", "torch"],
                                terminal_width=400)
    assert result.exit_code == 0, result.output
    ours = [a for a in sigmf.sigmffile.fromfile(str(meta)).get_annotations() if a.get("core:generator")]
    assert ours and {a["core:label"] for a in ours} <= {"NR", "LTE"}
    lo, hi = 3.5e9 + fc_lte - bw / 2, 3.5e9 + fc_lte + bw / 2
    overlap = [min(hi, a["core:freq_upper_edge"]) - max(lo, a["core:freq_lower_edge"]) for a in ours
               if a["core:label"] == "LTE"]
    assert max(overlap) >= 0.8 * bw, (overlap, lo, hi)
