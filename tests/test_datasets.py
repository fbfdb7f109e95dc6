import numpy as np
import pytest
import sigmf
from PIL import Image
from scipy.io import savemat
from sigmf import SigMFFile

from radiofm import signal
from radiofm.training.datasets import MatlabLteNrDataset, open_dataset
from radiofm.training.show import grid_size, show_grid
from radiofm.training.synth import synthesize


def _write_lte_nr(folder, n=3, seed=0):
    rng = np.random.default_rng(seed)
    written = []
    for i in range(n):
        x = rng.random((256, 256)).astype(np.float32)
        codes = rng.choice(np.array([0, 127, 255], np.uint8), (256, 256))
        savemat(folder / f"LTE_NR_spect_frame_{i}.mat", {"rxSpectrogram": x})
        savemat(folder / f"LTE_NR_labels_frame_{i}.mat", {"data": codes})
        written.append((x, codes))
    return written


def test_matlab_lte_nr_layout_reads_back_what_was_written(tmp_path):
    written = _write_lte_nr(tmp_path)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, MatlabLteNrDataset) and ds.task == "segment" and len(ds) == 3
    assert ds.classes == ["noise", "NR", "LTE"]
    for (x, y), (wx, codes) in zip(ds, written):
        np.testing.assert_array_equal(x, wx)
        np.testing.assert_array_equal(y, np.select([codes == 127, codes == 255], [1, 2], 0))
    assert ds.snr_db(0) is None


def test_matlab_lte_nr_errors_name_the_file(tmp_path):
    _write_lte_nr(tmp_path)
    (tmp_path / "LTE_NR_labels_frame_1.mat").unlink()
    savemat(tmp_path / "LTE_NR_labels_frame_2.mat", {"data": np.full((256, 256), 7, np.uint8)})
    (tmp_path / "LTE_NR_spect_frame_3.mat").write_bytes(b"not a mat file at all")
    savemat(tmp_path / "LTE_NR_spect_frame_4.mat", {"wrongKey": np.zeros((2, 2))})
    ds = open_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="LTE_NR_labels_frame_1.mat"):
        ds[1]
    with pytest.raises(ValueError, match=r"LTE_NR_labels_frame_2.mat holds label values \[7\]"):
        ds[2]
    with pytest.raises(ValueError, match="LTE_NR_spect_frame_3.mat is not a readable MATLAB file"):
        ds[3]
    with pytest.raises(KeyError, match="LTE_NR_spect_frame_4.mat has no variable 'rxSpectrogram'"):
        ds[4]


def test_matlab_spectrograms_in_db_come_back_as_power(tmp_path):
    savemat(tmp_path / "LTE_NR_spect_frame_0.mat", {"rxSpectrogram": np.full((4, 4), -30.0)})
    savemat(tmp_path / "LTE_NR_labels_frame_0.mat", {"data": np.zeros((4, 4), np.uint8)})
    with pytest.raises(ValueError, match="values='db'"):
        open_dataset(tmp_path)[0]
    np.testing.assert_allclose(open_dataset(tmp_path, values="db")[0][0], 1e-3, rtol=1e-5)


def test_ntu_fi_folders_read_csiamp_with_the_label_from_the_file_name(tmp_path):
    rng = np.random.default_rng(1)
    amps = {}
    for split, name in [("train", "run12"), ("train", "box3"), ("test", "clean1")]:
        (tmp_path / split).mkdir(exist_ok=True)
        amps[name] = rng.uniform(10, 60, (342, 2000)).astype(np.float32)
        savemat(tmp_path / split / f"{name}.mat", {"CSIamp": amps[name]})
    train = open_dataset(tmp_path, split="train")
    assert train.task == "classify" and len(train) == 2
    x, y = train[1]  # sorted: box3, run12
    assert x.shape == (3, 114, 500) and train.classes[y] == "run"
    np.testing.assert_array_equal(x, amps["run12"].reshape(3, 114, 2000)[:, :, ::4])
    test = open_dataset(tmp_path, split="test", decimate=1)
    assert test.classes[test[0][1]] == "clean" and test[0][0].shape == (3, 114, 2000)
    savemat(tmp_path / "test" / "walk2.mat", {"CSIamp": np.zeros((5, 7))})
    with pytest.raises(ValueError, match="walk2.mat: CSIamp has shape"):
        open_dataset(tmp_path, split="test")[1]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_tiff_folders_read_float_spectrograms_and_class_subfolders(tmp_path):
    rng = np.random.default_rng(2)
    flat = tmp_path / "flat"
    flat.mkdir()
    x = rng.random((64, 48)).astype(np.float32) * 1e-6
    Image.fromarray(x, mode="F").save(flat / "crop_0.tif")
    ds = open_dataset(flat)
    assert ds.task == "pretrain" and ds[0][1] is None
    np.testing.assert_array_equal(ds[0][0], x)
    for cls in ("LTE", "radar"):
        (tmp_path / "classes" / cls).mkdir(parents=True)
        Image.fromarray(x, mode="F").save(tmp_path / "classes" / cls / "a.tiff")
    ds = open_dataset(tmp_path / "classes")
    assert ds.task == "classify" and ds.classes == ["LTE", "radar"] and [y for _, y in ds] == [0, 1]
    (flat / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="broken.tif is not a readable TIFF"):
        open_dataset(flat)[0]


def test_sigmf_recordings_are_cut_into_spectrogram_crops(tmp_path):
    fs = 1e6
    iq = (np.array([1, 1j]) @ np.random.default_rng(3).standard_normal((2, 40000))).astype(np.complex64)
    iq.tofile(tmp_path / "rec.sigmf-data")
    meta = SigMFFile(
        data_file=tmp_path / "rec.sigmf-data",
        global_info={sigmf.DATATYPE_KEY: "cf32_le", sigmf.SAMPLE_RATE_KEY: fs, sigmf.VERSION_KEY: sigmf.__version__},
    )
    meta.add_capture(0, metadata={sigmf.FREQUENCY_KEY: 2.4e9})
    meta.tofile(tmp_path / "rec.sigmf-meta")
    ds = open_dataset(tmp_path / "rec.sigmf-meta", crop_ms=16.0)  # 16000-sample crops
    assert len(ds) == 2 and ds.sample_rate == fs and ds.task == "pretrain"
    x, target = ds[1]
    assert target is None
    np.testing.assert_allclose(x, signal.spectrogram(iq[16000:32000]), rtol=1e-5, atol=1e-9)
    assert len(open_dataset(tmp_path, crop_ms=8.0)) == 5
    (tmp_path / "bad.sigmf-meta").write_text("{not json")
    with pytest.raises(ValueError, match="bad.sigmf-meta is not a readable SigMF recording"):
        open_dataset(tmp_path / "bad.sigmf-meta")


def test_synthetic_samples_missing_or_corrupt_name_the_file(tmp_path):
    synthesize("csi-har", 3, tmp_path, seed=0, progress=False)
    (tmp_path / "sample_000001.npz").unlink()
    (tmp_path / "sample_000002.npz").write_bytes(b"PK\x03\x04 broken")
    ds = open_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="sample_000001.npz is missing"):
        ds[1]
    with pytest.raises(ValueError, match="sample_000002.npz is not a readable"):
        ds[2]
    (tmp_path / "dataset.json").write_text("{")
    with pytest.raises(ValueError, match="dataset.json is not valid JSON"):
        open_dataset(tmp_path)


def test_unknown_folders_and_paths_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no known dataset layout"):
        open_dataset(tmp_path)


@pytest.mark.parametrize("task, n", [("lte-nr", 2), ("signals", 5)])
def test_data_show_writes_an_image_of_the_expected_size(tmp_path, task, n):
    synthesize(task, n, tmp_path / task, seed=0, progress=False)
    out = show_grid(tmp_path / task, tmp_path / "grid.png", n=n)
    task_kind = "segment" if task == "lte-nr" else "classify"
    assert Image.open(out).size == grid_size(n, task_kind)


@pytest.mark.parametrize("bad", [[256], [256, 0], [256, 2.5], "256x256", [True, 4]])
def test_stored_size_is_two_positive_whole_numbers(bad):
    from radiofm.config import PreprocessConfig

    with pytest.raises(ValueError, match=r"preprocess.stored_size must be two positive whole numbers \(H, W\), got "):
        PreprocessConfig(stored_size=bad)
    assert PreprocessConfig(stored_size=(256, 128)).stored_size == [256, 128]


def test_a_model_learns_the_stored_size_of_the_synthetic_set_it_is_trained_on(tmp_path):
    """lte-nr frames are stored area-averaged to 256x256, signals captures as the STFT made them; the
    config a fine-tune writes says so, and an init model's stored size does not leak into another set."""
    from radiofm.config import PreprocessConfig
    from radiofm.training.datasets import open_dataset
    from radiofm.training.prepared import capture_of
    from radiofm.training.synth import synthesize

    synthesize("lte-nr", 1, tmp_path / "lte", seed=0, progress=False)
    synthesize("signals", 1, tmp_path / "sig", seed=0, progress=False)
    inherited = PreprocessConfig(stored_size=[64, 64])
    assert capture_of(open_dataset(tmp_path / "lte"), PreprocessConfig()).stored_size == [256, 256]
    assert capture_of(open_dataset(tmp_path / "sig"), inherited).stored_size is None


def test_a_model_trained_on_captures_of_varying_length_takes_longer_ones_in_windows_of_their_middle(tmp_path):
    """lte-nr captures last 10-40 ms: the config a fine-tune writes takes at most 25 ms in one piece
    (61.44 MS/s); a signals set has one capture length, and an init model's window does not leak into it."""
    from radiofm.config import PreprocessConfig
    from radiofm.training.datasets import open_dataset
    from radiofm.training.prepared import capture_of
    from radiofm.training.synth import synthesize

    synthesize("lte-nr", 1, tmp_path / "lte", seed=0, progress=False)
    synthesize("signals", 1, tmp_path / "sig", seed=0, progress=False)
    lte = capture_of(open_dataset(tmp_path / "lte"), PreprocessConfig())
    assert (lte.capture_samples, lte.max_capture_samples) == (None, 1_536_000)
    sig = capture_of(open_dataset(tmp_path / "sig"), PreprocessConfig(max_capture_samples=1000))
    assert (sig.capture_samples, sig.max_capture_samples) == (32768, None)


@pytest.mark.parametrize("name", ["capture_samples", "max_capture_samples"])
@pytest.mark.parametrize("bad", [0, -5, 2.5, "25ms", True])
def test_capture_lengths_are_positive_whole_numbers(name, bad):
    from radiofm.config import PreprocessConfig

    with pytest.raises(ValueError, match=rf"preprocess.{name} must be a positive whole number or null, got "):
        PreprocessConfig(**{name: bad})
    assert getattr(PreprocessConfig(**{name: 4096}), name) == 4096
