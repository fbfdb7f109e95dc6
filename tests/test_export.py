"""ONNX export, validation and TensorRT helpers, checked against the torch model they come from.

Agreement only means something for a model whose decisions are not near-ties, so the classifier
here is a vit-micro trained for a few seconds on separable synthetic spectrogram-like data (a band
whose frequency row gives the class).
"""

import json
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from radiofm.checkpoint import WEIGHTS_FILE, load_model, save_model
from radiofm.cli import app
from radiofm.config import preset
from radiofm.export import read_onnx_metadata
from radiofm.export.onnx import BATCH_SIZES, ExportError, export, sha256_file
from radiofm.export.samples import Samples
from radiofm.export.tensorrt import (
    BatchProfile,
    EngineMismatch,
    check_engine_compatible,
    cuda_devices,
    engine_sidecar,
    onnx_inputs,
    parse_batch_profile,
    profile_shapes,
)

runner = CliRunner()
CLASSES = ["low", "mid-low", "mid-high", "high"]


def bands(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32x32 inputs: noise plus a 4-row band at a class-dependent row, random extent in time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    x = rng.standard_normal((n, 1, 32, 32)).astype(np.float32) * 0.5
    for i, c in enumerate(y):
        row = 3 + 7 * c + rng.integers(-1, 2)
        t0 = rng.integers(0, 16)
        x[i, 0, row:row + 4, t0:t0 + rng.integers(8, 17)] += rng.uniform(1.0, 2.5)
    return x, y


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains faster on one thread than on shared ones
    try:
        cfg = preset("vit-micro", task="classify", num_classes=len(CLASSES), labels=CLASSES)
        from radiofm.model import build_model

        model = build_model(cfg)
        opt = torch.optim.AdamW(model.parameters(), 3e-3)
        x, y = (torch.from_numpy(a) for a in bands(2048, seed=1))
        for _ in range(150):
            i = torch.randint(0, len(x), (32,))
            loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return save_model(model.eval(), tmp_path_factory.mktemp("clf") / "model")


@pytest.fixture(scope="session")
def test_set():
    x, y = bands(128, seed=2)
    return Samples(x, y, "band test set")


def check_parity(result, max_abs=None, agreement=None):
    assert result.passed, result.entry["failures"]
    samples = result.entry["validation"]["samples"]
    assert sorted(result.entry["parity"], key=int) == sorted({str(min(b, samples)) for b in BATCH_SIZES}, key=int)
    for b, p in result.entry["parity"].items():
        if max_abs is not None:
            assert p["max_abs_diff"] <= max_abs, (b, p)
        if agreement is not None:
            assert p["agreement"] >= agreement, (b, p)


def test_classifier_fp32_matches_torch_and_carries_metadata(classifier_dir, test_set, tmp_path):
    fp32, = export(classifier_dir, tmp_path, "fp32", validation=test_set)
    check_parity(fp32, max_abs=1e-4, agreement=1.0)
    assert fp32.path == tmp_path / "model.onnx"

    # Checked here too, not only through the report: ORT at an odd batch against torch.
    model = load_model(classifier_dir)
    session = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    got = session.run(None, {"images": test_set.images[:7]})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(test_set.images[:7])).numpy()
    assert got.shape == (7, len(CLASSES))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

    meta = read_onnx_metadata(fp32.path)
    assert meta["config"] == model.cfg.to_dict()
    assert meta["precision"] == "fp32"
    assert meta["source_sha256"] == sha256_file(classifier_dir / WEIGHTS_FILE)
    graph = onnx.load(str(fp32.path))
    assert graph.opset_import[0].version >= 17
    assert any(n.op_type == "LayerNormalization" for n in graph.graph.node)
    assert not (tmp_path / "model.onnx.data").exists()  # one self-contained file


def test_fp16_keeps_overflow_prone_ops_in_fp32(classifier_dir, test_set, tmp_path):
    _, fp16 = export(classifier_dir, tmp_path, "fp16", validation=test_set)
    check_parity(fp16, agreement=0.995)
    graph = onnx.load(str(fp16.path))
    inits = {t.name: t.data_type for t in graph.graph.initializer}
    ln = [n for n in graph.graph.node if n.op_type == "LayerNormalization"]
    assert ln and all(inits[n.input[1]] == onnx.TensorProto.FLOAT for n in ln)
    assert any(t == onnx.TensorProto.FLOAT16 for t in inits.values())
    assert read_onnx_metadata(fp16.path)["precision"] == "fp16"


def test_int8_dynamic_and_static_agree_and_report_accuracy(classifier_dir, test_set, tmp_path):
    _, dynamic = export(classifier_dir, tmp_path, "int8", validation=test_set)
    check_parity(dynamic, agreement=0.99)
    assert dynamic.entry["method"] == "dynamic"
    assert abs(dynamic.entry["accuracy_change"]) <= 0.01
    assert dynamic.entry["accuracy"]["torch_fp32"] > 0.8  # the decisions being compared are real ones

    x, y = bands(64, seed=3)
    _, static = export(classifier_dir, tmp_path, "int8", validation=test_set, calib=Samples(x, y, "band calib"))
    check_parity(static, agreement=0.99)
    assert static.entry["method"] == "static"
    assert static.entry["accuracy"]["data"] == "band calib"
    ops = {n.op_type for n in onnx.load(str(static.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert read_onnx_metadata(static.path)["precision"] == "int8"

    report = json.loads((tmp_path / "onnx.json").read_text())
    assert set(report) == {"fp32", "int8"} and report["int8"]["method"] == "static"
    assert report["fp32"]["file"] == "model.onnx" and report["int8"]["file"] == "model.int8.onnx"


def _qkv_input_spread(model, images) -> float:
    """How far the largest input channel of block 0's qkv stands out: max over channels / median."""
    from radiofm.export.smooth import input_channel_max

    peak = input_channel_max(model, images)["blocks.0.attn.qkv"]
    return float(peak.max() / peak.median())


def test_smoothing_keeps_the_function_and_evens_out_outlier_channels(classifier_dir, test_set):
    from radiofm.export.smooth import smooth

    model = load_model(classifier_dir).eval()
    with torch.no_grad():  # outlier channels, as LayerNorm grows them in larger ViTs
        model.blocks[0].norm1.weight[:3] *= 30.0
        model.blocks[1].norm2.weight[5:7] *= 30.0
    x = torch.from_numpy(test_set.images)
    smoothed = smooth(model, test_set.images[:64])
    with torch.no_grad():
        before, after = model(x), smoothed(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)  # the same function
    assert model.blocks[0].norm1.weight[0] != smoothed.blocks[0].norm1.weight[0]  # a copy was changed
    assert _qkv_input_spread(smoothed, test_set.images) < _qkv_input_spread(model, test_set.images) / 3
    with pytest.raises(ValueError, match="alpha"):
        smooth(model, test_set.images[:4], alpha=1.5)


def test_int8_full_scope_quantises_the_projections_and_keeps_agreement(classifier_dir, test_set, tmp_path):
    _, partial = export(classifier_dir, tmp_path / "partial", "int8", validation=test_set, int8_scope="partial")
    _, full = export(classifier_dir, tmp_path / "full", "int8", validation=test_set)  # full is the default
    check_parity(full, agreement=0.99)
    assert partial.entry["scope"] == "partial" and partial.entry["smoothing"] is None
    assert full.entry["scope"] == "full" and full.entry["smoothing"]["alpha"] == 0.8
    assert full.entry["smoothing"]["source"] == "band test set"  # no --calib: the validation inputs

    def integer_matmuls(result):
        return [n.name for n in onnx.load(str(result.path)).graph.node if n.op_type == "MatMulInteger"]

    depth = load_model(classifier_dir).cfg.depth
    # Dynamic int8 converts the MatMuls with constant weights: fc1, fc2; full adds qkv and proj.
    assert len(integer_matmuls(partial)) == 2 * depth
    assert len(integer_matmuls(full)) == 4 * depth
    assert any("attn/qkv" in name for name in integer_matmuls(full))
    assert not any("attn/qkv" in name or "attn/proj" in name for name in integer_matmuls(partial))

    with pytest.raises(ExportError, match="--precision int8"):
        export(classifier_dir, tmp_path / "x", "fp32", int8_scope="full")
    with pytest.raises(ExportError, match="int8 scope"):
        export(classifier_dir, tmp_path / "x", "int8", int8_scope="everything")
    result = runner.invoke(app, ["export", str(classifier_dir), "-p", "int8", "--int8-scope", "most"])
    assert result.exit_code != 0 and "--int8-scope must be partial or full" in result.output



def test_the_cli_states_the_int8_scopes_and_defaults_the_export_uses():
    """`radiofm export` and `radiofm bench` spell the scope and calibration names and defaults as literals, so that
    --help imports no numpy: they must say what radiofm.engines decides."""
    from typer.main import get_command

    from radiofm.benchmarks.bench import BenchSettings
    from radiofm.engines import (CALIB_METHODS, CALIB_PERCENTILE, DEFAULT_CALIB_METHOD, DEFAULT_INT8_SCOPE,
                                 INT8_SCOPES, default_int8_scope)

    commands = get_command(app).commands
    option = {name: next(p for p in commands[name].params if p.name == "int8_scope") for name in ("export", "bench")}
    assert option["export"].default is None  # unset: the export picks default_int8_scope(variable_length)
    assert option["export"].show_default == DEFAULT_INT8_SCOPE == default_int8_scope(False)
    assert f"{default_int8_scope(True)} (" in option["export"].help
    assert option["export"].help.endswith("the default with --variable-length.")
    assert option["bench"].default == DEFAULT_INT8_SCOPE == BenchSettings(models=["vit-micro"]).int8_scope
    for opt in option.values():
        assert all(f"{scope} (" in opt.help for scope in INT8_SCOPES), opt.help
        assert opt.help.count(" | ") == len(INT8_SCOPES) - 1, opt.help
    method = {name: next(p for p in commands[name].params if p.name == "calib_method") for name in ("export", "bench")}
    assert method["export"].default is None and method["export"].show_default == DEFAULT_CALIB_METHOD
    assert method["bench"].default == DEFAULT_CALIB_METHOD == BenchSettings(models=["vit-micro"]).calib_method
    for opt in method.values():
        assert all(f"{m} (" in opt.help for m in CALIB_METHODS) and opt.help.count(" | ") == len(CALIB_METHODS) - 1
        assert f"{CALIB_PERCENTILE:g} %" in opt.help


def activation_scales(path) -> dict[str, float]:
    """The scale of each QuantizeLinear that quantises an activation (weights are stored quantised)."""
    graph = onnx.load(str(path)).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def test_percentile_calibration_narrows_the_ranges_that_minmax_stretches_to_the_tails(classifier_dir, test_set, tmp_path):
    """Static int8 reads its activation ranges from the calibration data: percentile (the default) the
    range holding 99.999 % of each tensor's |values|, minmax the whole of it. Both quantise the same
    tensors; no percentile range is wider than the minmax one, and those of tensors with a tail are
    narrower (on 64 small captures, a few; on signals-nano's 256 captures all, by 4-18 %). Each
    export records its method."""
    x, y = bands(64, seed=3)
    made = {}
    for method in (None, "minmax"):
        _, r = export(classifier_dir, tmp_path / str(method), "int8", validation=test_set,
                      calib=Samples(x, y, "band calib"), calib_method=method)
        check_parity(r, agreement=0.99)
        made[method] = r
    assert made[None].entry["calibration"] == {"method": "percentile", "percentile": 99.999}
    assert made["minmax"].entry["calibration"] == {"method": "minmax"}
    pct, mm = (activation_scales(made[m].path) for m in (None, "minmax"))
    assert pct.keys() == mm.keys() and len(pct) >= 4
    assert all(pct[t] <= mm[t] * (1 + 1e-6) for t in pct), {t: (pct[t], mm[t]) for t in pct if pct[t] > mm[t]}
    assert sum(pct[t] < 0.99 * mm[t] for t in pct) >= 3  # the method asked for is the one used
    with pytest.raises(ExportError, match="--calib-method .* use it with --calib DIR"):
        export(classifier_dir, tmp_path / "x", "int8", calib_method="minmax")
    with pytest.raises(ExportError, match="calibration method must be one of percentile, minmax, got 'entropy'"):
        export(classifier_dir, tmp_path / "x", "int8", calib=Samples(x, y, "band calib"), calib_method="entropy")



def test_percentile_calibration_holds_a_few_batches_of_activations_at_a_time(classifier_dir, tmp_path, monkeypatch):
    """The histogram calibrator keeps every activation of the batches it is handed until it bins them
    (128 vit-s samples at once peaked at 16.9 GB): quantize_int8 hands them over a few batches at a
    time, in equal stretches, and every batch is seen once. Minmax keeps only extremes: one stretch."""
    from onnxruntime.quantization import calibrate

    from radiofm.export.onnx import CALIB_STRIDE_BATCHES, _stride, quantize_int8

    assert [_stride(n, 4) for n in (12, 10, 13, 3, 1)] == [4, 2, 1, 3, 1]
    export(classifier_dir, tmp_path, "fp32", samples=4, batch_sizes=(1,))
    stretches = []

    def counting(collect_data):  # the calibrator's own collect_data, noting how many batches each call reads
        def collect(self, reader):
            read = reader.get_next
            batches = []

            def get_next():
                feeds = read()
                batches.extend([] if feeds is None else [feeds])
                return feeds

            reader.get_next = get_next
            collect_data(self, reader)
            reader.get_next = read
            stretches.append(len(batches))
        return collect

    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", counting(calibrate.HistogramCalibrater.collect_data))
    monkeypatch.setattr(calibrate.MinMaxCalibrater, "collect_data", counting(calibrate.MinMaxCalibrater.collect_data))
    x, _ = bands(96, seed=3)  # 12 batches of 8
    quantize_int8(tmp_path / "model.onnx", tmp_path / "p.onnx", x, scope="partial", calib_method="percentile")
    assert stretches == [CALIB_STRIDE_BATCHES] * (12 // CALIB_STRIDE_BATCHES)
    stretches.clear()
    quantize_int8(tmp_path / "model.onnx", tmp_path / "m.onnx", x, scope="partial", calib_method="minmax")
    assert stretches == [12]

def test_the_cli_checks_the_calibration_method_and_keeps_the_calibrators_chatter_off_stdout(classifier_dir, tmp_path):
    from radiofm.training.synth import synthesize

    result = runner.invoke(app, ["export", str(classifier_dir), "-p", "int8", "--calib-method", "minmax"])
    assert result.exit_code != 0 and "use it with --calib DIR" in result.output
    result = runner.invoke(app, ["export", str(classifier_dir), "-p", "int8", "--calib", str(tmp_path),
                                 "--calib-method", "kl"])
    assert result.exit_code != 0 and "--calib-method must be percentile or minmax, got 'kl'" in result.output
    synthesize("signals", 8, tmp_path / "calib", seed=3, progress=False)
    # An --atol no int8 file meets: the error names the other scope and the other calibration method.
    result = runner.invoke(app, ["export", str(classifier_dir), "-p", "int8", "--calib", str(tmp_path / "calib"),
                                 "--samples", "8", "--atol", "1e-9", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "(static QDQ, percentile-99.999 ranges from 8 samples of" in out  # the log says how it was calibrated
    assert "--int8-scope partial quantises differently and may hold; so may --calib-method minmax, in place of percentile" in out
    assert "histogram" not in out.lower() and "Number of tensors" not in out

def test_segmenter_matches_torch_on_lte_nr_frames(tmp_path):
    torch.manual_seed(0)
    cfg = preset("vit-micro", task="segment", num_classes=3, labels=["noise", "NR", "LTE"])
    from radiofm.model import build_model

    folder = save_model(build_model(cfg), tmp_path / "seg")
    fp32, = export(folder, samples=4)
    check_parity(fp32, max_abs=1e-4, agreement=1.0)
    assert "LTE/NR" in fp32.entry["validation"]["source"]
    session = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((2, 1, 32, 32), np.float32)})[0].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("precision, agreement", [("fp16", 0.995), ("int8", 0.99)])
def test_signals_nano_keeps_its_decisions_on_signal_captures(precision, agreement, tmp_path):
    results = export("signals-nano", tmp_path, precision, samples=128)
    check_parity(results[0], max_abs=1e-4, agreement=1.0)
    check_parity(results[1], agreement=agreement)
    assert "signal captures" in results[1].entry["validation"]["source"]


def test_signals_nano_static_int8_keeps_its_decisions(tmp_path):
    """Static QDQ (what TensorRT builds int8 engines from) on the zoo classifier, calibrated on 256 fresh
    captures. signals-nano attends over 256 tokens: with its value product (softmax x v) quantised,
    the probabilities rounded to int8 steps took agreement to 86-89 %."""
    from radiofm.training.synth import synthesize

    synthesize("signals", 256, tmp_path / "calib", seed=1, workers=2, progress=False)
    results = export("signals-nano", tmp_path / "out", "int8", calib=tmp_path / "calib", samples=128)
    assert results[1].entry["method"] == "static"
    check_parity(results[1], agreement=0.99)


@pytest.fixture(scope="session")
def mae_dir(tmp_path_factory):
    from radiofm.model import build_model

    torch.manual_seed(0)
    return save_model(build_model(preset("vit-micro")), tmp_path_factory.mktemp("mae") / "model")


def test_encoder_of_a_pretrained_mae_exports_tokens_and_pooled(mae_dir, tmp_path):
    with pytest.raises(ExportError, match="needs --out"):
        export(mae_dir, task="encode")
    fp32, = export(mae_dir, tmp_path, task="encode", samples=8)
    check_parity(fp32, max_abs=1e-4)
    assert "signal captures" in fp32.entry["validation"]["source"]
    session = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"])
    tokens, pooled = session.run(None, {"images": np.zeros((3, 1, 32, 32), np.float32)})
    assert tokens.shape == (3, 16, 64) and pooled.shape == (3, 64)
    assert read_onnx_metadata(fp32.path)["config"]["task"] == "encode"


def test_refuses_what_cannot_be_exported(mae_dir, tmp_path):
    with pytest.raises(ExportError, match="no deployable head"):
        export(mae_dir, samples=2)
    with pytest.raises(ExportError, match="--precision int8"):
        export(mae_dir, precision="fp16", calib=tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        export(mae_dir, precision="int8", calib=tmp_path / "nowhere")


def test_exports_go_beside_the_model_and_zoo_exports_to_the_cache(classifier_dir, monkeypatch, tmp_path):
    from radiofm.checkpoint import ZOO_DIR, exports_dir, zoo_names

    assert exports_dir(classifier_dir) == classifier_dir
    if not zoo_names():
        pytest.skip("no zoo model in this checkout")
    monkeypatch.setenv("RADIOFM_CACHE", str(tmp_path))
    name = zoo_names()[0]
    out = exports_dir(ZOO_DIR / name)
    assert out.parent == tmp_path and out.name.startswith(f"{name}-")


def test_calibration_set_reads_a_dataset_folder_as_model_input(tmp_path):
    from radiofm.export.samples import calibration_set
    from radiofm.training.synth import synthesize
    from radiofm.training.synth.signals import CLASSES as SIGNALS

    synthesize("signals", 10, tmp_path / "calib", seed=3, progress=False)
    cfg = preset("vit-micro", task="classify", num_classes=len(SIGNALS), labels=SIGNALS)
    calib = calibration_set(tmp_path / "calib", cfg, limit=8)
    assert calib.images.shape == (8, 1, 32, 32) and calib.images.dtype == np.float32
    assert calib.targets.tolist() == [i % len(SIGNALS) for i in range(8)]
    other = calibration_set(tmp_path / "calib", cfg.replace(labels=list(reversed(SIGNALS))))
    assert other.targets is None  # labels in another order would score the wrong classes


def test_a_classifier_is_checked_on_enough_samples_for_its_agreement_bounds(classifier_dir, tmp_path):
    """On 64 samples 99 % agreement means 100 %: one capture whose own fp32 decision was a near tie
    (top two logits 0.2 apart) failed the zoo classifier's int8 export on an AVX-512 VNNI CPU. Unless
    told otherwise, the API and the CLI check a classifier on 256 samples."""
    fp32, = export(classifier_dir, tmp_path / "api", batch_sizes=(16,))
    assert fp32.entry["validation"]["samples"] == 256
    ok = runner.invoke(app, ["export", str(classifier_dir), "--out", str(tmp_path / "cli")], terminal_width=200)
    assert ok.exit_code == 0, ok.output
    assert "validation set: 256 samples" in ok.output
    assert json.loads((tmp_path / "cli" / "onnx.json").read_text())["fp32"]["validation"]["samples"] == 256


def test_cli_export_prints_parity_and_fails_a_missed_tolerance(classifier_dir, tmp_path):
    ok = runner.invoke(app, ["export", str(classifier_dir), "--samples", "8", "--out", str(tmp_path)],
                       terminal_width=200)
    assert ok.exit_code == 0, ok.output
    assert "parity with torch" in ok.output and "model.onnx" in ok.output

    # fp16 cannot reach 1e-9: the export must be refused, kept aside and recorded as failed.
    bad = runner.invoke(app, ["export", str(classifier_dir), "--precision", "fp16", "--atol", "1e-9",
                              "--samples", "8", "--out", str(tmp_path)], terminal_width=200)
    assert bad.exit_code == 1
    assert "missed its tolerance" in bad.output
    assert (tmp_path / "model.fp16.rejected.onnx").is_file() and not (tmp_path / "model.fp16.onnx").exists()
    report = json.loads((tmp_path / "onnx.json").read_text())
    assert report["fp16"]["passed"] is False and report["fp32"]["passed"] is True


# --------------------------------------------------------------------------- reading exported files
def test_corrupted_or_truncated_onnx_gives_a_clear_error(classifier_dir, tmp_path):
    fp32, = export(classifier_dir, tmp_path, samples=2)
    # Batch sizes 7 and 16 of 2 samples would run the same one batch of 2: parity lists what ran.
    assert list(fp32.entry["parity"]) == ["1", "2"]
    data = fp32.path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all" * 100)
    for path in (truncated, garbage):
        with pytest.raises(ValueError, match=str(path.name)):
            read_onnx_metadata(path)
    with pytest.raises(FileNotFoundError):
        read_onnx_metadata(tmp_path / "missing.onnx")

    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    io = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y")]
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", io[:1], io[1:])), str(foreign))
    with pytest.raises(ValueError, match="no radiofm metadata"):
        read_onnx_metadata(foreign)


def test_metadata_reader_does_not_import_torch(classifier_dir, tmp_path):
    fp32, = export(classifier_dir, tmp_path, samples=2)
    code = ("import sys; from radiofm.export import read_onnx_metadata; "
            f"m = read_onnx_metadata({str(fp32.path)!r}); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(m['config']['task'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "classify"


# --------------------------------------------------------------------------- TensorRT
def test_batch_profile_parsing():
    assert parse_batch_profile("1:8:64") == BatchProfile(1, 8, 64)
    assert parse_batch_profile("4") == BatchProfile(4, 4, 4)
    assert str(BatchProfile(1, 8, 64)) == "1:8:64"
    for bad, match in (("1:8", "MIN:OPT:MAX"), ("a:b:c", "integers"), ("8:1:64", "MIN <= OPT"), ("0:1:2", "1 <=")):
        with pytest.raises(ValueError, match=match):
            parse_batch_profile(bad)


def test_engine_compatibility_check_names_the_mismatch_and_the_fix():
    here = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    sidecar = {**here, "engine_file": "model.fp16.plan", "precision": "fp16",
               "build_command": "radiofm export m --engine trt --precision fp16 --batch 1:8:64"}
    check_engine_compatible(sidecar, here)
    with pytest.raises(EngineMismatch, match=r"TensorRT 10\.7\.0 \(this machine: 10\.13\.0\).*rebuild.*--engine trt"):
        check_engine_compatible(sidecar, {**here, "tensorrt_version": "10.13.0"})
    with pytest.raises(EngineMismatch, match="GPU NVIDIA H100 80GB HBM3 .*compute capability 9.0"):
        check_engine_compatible(sidecar, {**here, "gpu_name": "NVIDIA L4", "compute_capability": "8.9"})
    with pytest.raises(EngineMismatch, match="lacks tensorrt_version"):
        check_engine_compatible({"gpu_name": "x", "compute_capability": "9.0"}, here)


def test_engine_sidecar_records_machine_profile_and_config(classifier_dir):
    here = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    cfg = load_model(classifier_dir).cfg.to_dict()
    sidecar = engine_sidecar("int8", BatchProfile(1, 8, 64), "model.int8.onnx", here, cfg, "model.int8.plan",
                             "radiofm export m --engine trt --precision int8 --batch 1:8:64 --calib data")
    assert sidecar["profile"] == {"min": 1, "opt": 8, "max": 64}
    assert (sidecar["precision"], sidecar["onnx_file"], sidecar["inputs"], sidecar["outputs"]) == (
        "int8", "model.int8.onnx", ["images"], ["logits"])
    assert sidecar["config"] == cfg and sidecar["created"]
    json.dumps(sidecar)  # written as JSON beside the plan
    check_engine_compatible(sidecar, here)
    with pytest.raises(EngineMismatch, match="--calib data"):
        check_engine_compatible(sidecar, {**here, "tensorrt_version": "10.8.0"})


def _tensorrt_ready() -> str | None:
    """None where TensorRT and a CUDA GPU exist, else the reason they do not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed"
    return None if cuda_devices() else "no CUDA GPU"


@pytest.mark.skipif(_tensorrt_ready() is None, reason="TensorRT and a GPU are present: the message is for machines without")
def test_trt_without_tensorrt_writes_onnx_then_fails_fast_with_one_line(classifier_dir, tmp_path):
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "radiofm.cli", "export", str(classifier_dir), "--engine", "trt",
                           "--samples", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, done.stderr
    assert 'pip install "radiofm[gpu]"' in error[0] and "CUDA GPU" in error[0]
    assert (tmp_path / "model.onnx").is_file()
    assert elapsed < 120, f"took {elapsed:.0f} s"


@pytest.mark.gpu
@pytest.mark.skipif(_tensorrt_ready() is not None, reason=f"TensorRT engine build needs TensorRT and a CUDA GPU: {_tensorrt_ready()}")
def test_trt_fp16_engine_builds_matches_and_records_its_machine(classifier_dir, tmp_path):
    from radiofm.engines import TensorRTEngine
    from radiofm.export.tensorrt import current_runtime, export_engine, read_sidecar

    cache = tmp_path / "timing.cache"
    results, plan = export_engine(classifier_dir, tmp_path, "fp16", BatchProfile(1, 8, 16), timing_cache=cache, samples=32)
    sidecar = read_sidecar(plan)
    assert sidecar["passed"], sidecar["failures"]
    assert sidecar["profile"] == {"min": 1, "opt": 8, "max": 16}
    for key, value in current_runtime().items():
        assert sidecar[key] == value
    assert cache.stat().st_size > 0  # written for the next build to reuse
    TensorRTEngine(plan)


def test_variable_length_export_takes_a_mask_and_validates_padded_input(classifier_dir, test_set, tmp_path):
    from radiofm.engines import OnnxEngine

    fp32, = export(classifier_dir, tmp_path / "vl", "fp32", validation=test_set, variable_length=True)
    assert fp32.passed, fp32.entry["failures"]
    assert fp32.entry["inputs"] == ["images", "key_padding"]
    padded = fp32.entry["parity"]["padded"]
    assert padded["max_abs_diff"] <= 1e-4 and padded["agreement"] == 1.0
    # Full-length input: the engine feeds an all-True mask and matches the plain export.
    plain, = export(classifier_dir, tmp_path / "plain", "fp32", validation=test_set)
    a = OnnxEngine(fp32.path).run(test_set.images[:16])[0]
    b = OnnxEngine(plain.path).run(test_set.images[:16])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
    # A real mask changes the answer (the mask is wired in, not ignored).
    mask = np.zeros((16, 16), bool)
    mask[:, :4] = True
    assert not np.allclose(OnnxEngine(fp32.path).run(test_set.images[:16], mask)[0], a, atol=1e-3)
    with pytest.raises(ValueError, match="--variable-length"):
        OnnxEngine(plain.path).run(test_set.images[:2], mask[:2])

    x, y = bands(64, seed=3)
    logged = []
    _, static = export(classifier_dir, tmp_path / "vl", "int8", validation=test_set, calib=Samples(x, y, "band calib"),
                       variable_length=True, log=logged.append)
    assert static.passed and static.entry["parity"]["padded"]["agreement"] >= 0.99
    # A variable-length export defaults to the partial scope, and says so; full is there when asked.
    assert static.entry["scope"] == "partial"
    assert any("partial scope, the default for a variable-length export" in line for line in logged)
    _, full = export(classifier_dir, tmp_path / "vl-full", "int8", validation=test_set, calib=Samples(x, y, "band calib"),
                     variable_length=True, int8_scope="full")
    assert full.entry["scope"] == "full" and "padded" in full.entry["parity"]


def test_an_int8_export_that_misses_names_its_scope_and_the_other(classifier_dir, tmp_path):
    result = runner.invoke(app, ["export", str(classifier_dir), "-p", "int8", "--atol", "1e-9", "--samples", "16",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "export missed its tolerance" in out and "int8 in full scope; --int8-scope partial quantises differently" in out


def test_tensorrt_profile_covers_every_input_on_its_batch_axis():
    shapes = profile_shapes([("images", (-1, 1, 32, 32)), ("key_padding", (-1, 16))], BatchProfile(1, 8, 64))
    assert shapes == {"images": ((1, 1, 32, 32), (8, 1, 32, 32), (64, 1, 32, 32)),
                      "key_padding": ((1, 16), (8, 16), (64, 16))}
    with pytest.raises(ValueError, match=r"'key_padding' has shape \(-1, -1\): only its first \(batch\) axis"):
        profile_shapes([("images", (-1, 1, 32, 32)), ("key_padding", (-1, -1))], BatchProfile(1, 8, 64))


def test_variable_length_tensorrt_export_writes_the_masked_onnx_its_plan_is_built_from(classifier_dir, tmp_path):
    """Without TensorRT the command still writes the graph a plan would be built from (with its
    key_padding input), then says what is missing; the sidecar a build would write lists both inputs."""
    result = runner.invoke(app, ["export", str(classifier_dir), "--engine", "trt", "--variable-length",
                                 "--samples", "4", "--out", str(tmp_path)])
    if _tensorrt_ready() is not None:
        assert result.exit_code == 1 and 'pip install "radiofm[gpu]"' in result.output
    assert onnx_inputs(tmp_path / "model.onnx") == ["images", "key_padding"]
    entry = json.loads((tmp_path / "onnx.json").read_text())
    assert entry["fp32"]["parity"]["padded"]["agreement"] == 1.0
    here = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    sidecar = engine_sidecar("fp16", BatchProfile(1, 8, 64), "model.onnx", here, load_model(classifier_dir).cfg.to_dict(),
                             "model.fp16.plan", "radiofm export m --engine trt --variable-length",
                             onnx_inputs(tmp_path / "model.onnx"))
    assert sidecar["inputs"] == ["images", "key_padding"]


# ONNX operators that take BOOL tensors in TensorRT 10 (onnx-tensorrt's operator support matrix).
TRT_BOOL_OPS = {"And", "Cast", "CastLike", "Concat", "Constant", "ConstantOfShape", "Expand", "EyeLike", "Flatten",
                "Gather", "GatherElements", "GatherND", "Identity", "If", "Loop", "Not", "OneHot", "Or", "Reshape",
                "ReverseSequence", "Shape", "Size", "Slice", "Split", "Squeeze", "Tile", "Transpose", "Trilu",
                "Unsqueeze", "Where", "Xor"}


def test_variable_length_graph_handles_its_mask_only_with_ops_tensorrt_takes_bool_in(classifier_dir, tmp_path):
    """What a --variable-length TensorRT build parses: every node that reads a bool tensor (the mask
    and what is derived from it) must be one TensorRT runs on BOOL, or the parser refuses the graph."""
    fp32, = export(classifier_dir, tmp_path, "fp32", samples=4, variable_length=True)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(fp32.path))).graph
    bools = {v.name for v in [*graph.input, *graph.value_info, *graph.output]
             if v.type.tensor_type.elem_type == onnx.TensorProto.BOOL}
    bools |= {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.BOOL}
    assert "key_padding" in bools
    readers = {n.op_type for n in graph.node if bools & set(n.input)}
    assert readers and readers <= TRT_BOOL_OPS, f"ops TensorRT cannot run on BOOL: {readers - TRT_BOOL_OPS}"


def test_graph_feeds_mask_only_graphs_that_take_one_and_name_the_export_that_does(classifier_dir):
    from radiofm.engines import graph_feeds

    cfg = load_model(classifier_dir).cfg
    images = np.zeros((3, *cfg.img_size), np.float32)[:, None]
    patches = cfg.grid_size[0] * cfg.grid_size[1]
    mask = np.zeros((3, patches), bool)
    mask[:, :4] = True
    feeds = graph_feeds({"images", "key_padding"}, images, mask, cfg, "model.fp16.plan", "")
    assert feeds["images"].dtype == np.float32 and (feeds["key_padding"] == mask).all()
    assert graph_feeds({"images", "key_padding"}, images, None, cfg, "x", "")["key_padding"].all()  # full length
    assert set(graph_feeds({"images"}, images, None, cfg, "x", "")) == {"images"}
    with pytest.raises(ValueError, match=r"model.fp16.plan has no key_padding input.*"
                                         r"`radiofm export MODEL --engine trt --variable-length`"):
        graph_feeds({"images"}, images, mask, cfg, "model.fp16.plan", "radiofm export MODEL --engine trt --variable-length")
    with pytest.raises(ValueError, match=rf"key_padding must be \(N, patches\) = \(3, {patches}\), got \(3, 5\)"):
        graph_feeds({"images", "key_padding"}, images, mask[:, :5], cfg, "x", "")


@pytest.mark.gpu
@pytest.mark.skipif(_tensorrt_ready() is not None, reason=f"TensorRT engine build needs TensorRT and a CUDA GPU: {_tensorrt_ready()}")
def test_trt_variable_length_engine_masks_padded_input(classifier_dir, tmp_path):
    from radiofm.engines import TensorRTEngine
    from radiofm.export.tensorrt import export_engine, read_sidecar

    _, plan = export_engine(classifier_dir, tmp_path, "fp16", BatchProfile(1, 8, 16), samples=32, variable_length=True)
    sidecar = read_sidecar(plan)
    assert sidecar["passed"], sidecar["failures"]
    assert sidecar["inputs"] == ["images", "key_padding"] and "padded" in sidecar["parity"]
    engine = TensorRTEngine(plan)
    assert set(engine.inputs) == {"images", "key_padding"}
    # Padded input behind the mask: what the padding holds never matters; without the mask it does.
    cfg = engine.cfg
    (gh, gw), p = cfg.grid_size, cfg.patch_size
    rng = np.random.default_rng(3)
    images = rng.standard_normal((2, cfg.in_chans, *cfg.img_size)).astype(np.float32)
    images[..., (gw // 2) * p:] = 0.0
    valid = np.zeros((2, gh, gw), bool)
    valid[..., : gw // 2] = True
    valid = valid.reshape(2, -1)
    other = images.copy()
    other[..., (gw // 2) * p:] = rng.normal(size=other[..., (gw // 2) * p:].shape) * 5
    np.testing.assert_allclose(engine.run(images, valid)[0], engine.run(other, valid)[0], atol=1e-2)
    assert not np.allclose(engine.run(images)[0], engine.run(other)[0], atol=1e-2)


def test_a_rejected_export_removes_the_earlier_file_and_a_passing_one_the_rejected(classifier_dir, tmp_path):
    """A re-export that misses its tolerance must not leave the earlier file loadable under the name
    the SDK opens; a later one that passes clears the rejected copy."""
    from radiofm.engines import open_engine

    _, first = export(classifier_dir, tmp_path, "fp16", samples=4)
    assert first.passed and (tmp_path / "model.fp16.onnx").is_file()
    _, bad = export(classifier_dir, tmp_path, "fp16", samples=4, atol=1e-9)
    assert not bad.passed and bad.path == tmp_path / "model.fp16.rejected.onnx" and bad.path.is_file()
    assert not (tmp_path / "model.fp16.onnx").exists()
    with pytest.raises(FileNotFoundError, match="no model.fp16.onnx"):
        open_engine(tmp_path, "onnx", "cpu", "fp16")
    _, again = export(classifier_dir, tmp_path, "fp16", samples=4)
    assert again.passed and (tmp_path / "model.fp16.onnx").is_file()
    assert not (tmp_path / "model.fp16.rejected.onnx").exists()
    assert json.loads((tmp_path / "onnx.json").read_text())["fp16"]["file"] == "model.fp16.onnx"


def test_calibration_data_of_another_kind_than_the_model_takes_is_refused(tmp_path):
    """Spectrogram models calibrate on spectrograms, CSI models on CSI: int8 ranges of data the model
    never sees would pass validation and mean nothing (or fail deep in preprocessing)."""
    from radiofm.config import PreprocessConfig
    from radiofm.export.samples import calibration_set
    from radiofm.model import build_model
    from radiofm.training.synth import synthesize

    synthesize("signals", 2, tmp_path / "signals", seed=3, progress=False)
    synthesize("csi-har", 2, tmp_path / "csi", seed=3, progress=False)
    spectrogram_cfg = preset("vit-micro", task="classify", num_classes=8)
    csi_cfg = preset("vit-micro", task="classify", num_classes=6, in_chans=3,
                     preprocess=PreprocessConfig(kind="csi", offset=0.0, scale=1.0, mean=[0.5] * 3, std=[0.2] * 3))
    spectrogram_model = save_model(build_model(spectrogram_cfg), tmp_path / "spec")
    csi_model = save_model(build_model(csi_cfg), tmp_path / "csi-model")

    with pytest.raises(ValueError, match=rf"--calib {tmp_path / 'csi'} holds CSI amplitude \(csi data\), but the "
                                         rf"model takes spectrograms \(preprocess kind 'spectrogram'\)"):
        export(spectrogram_model, tmp_path / "out1", "int8", calib=tmp_path / "csi", samples=2)
    with pytest.raises(ValueError, match=rf"--calib {tmp_path / 'signals'} holds spectrograms \(spectrogram "
                                         rf"data\), but the model takes CSI amplitude \(preprocess kind 'csi'\)"):
        export(csi_model, tmp_path / "out2", "int8", calib=tmp_path / "signals", samples=2)
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()  # refused before any work
    with pytest.raises(ValueError, match="holds CSI of 3 channel.*the model takes 2"):
        calibration_set(tmp_path / "csi", csi_cfg.replace(in_chans=2, preprocess=PreprocessConfig(
            kind="csi", offset=0.0, scale=1.0, mean=[0.5] * 2, std=[0.2] * 2)))
    assert calibration_set(tmp_path / "csi", csi_cfg).images.shape == (2, 3, 32, 32)
    assert calibration_set(tmp_path / "signals", spectrogram_cfg).images.shape == (2, 1, 32, 32)
    result = runner.invoke(app, ["export", str(spectrogram_model), "-p", "int8", "--calib", str(tmp_path / "csi"),
                                 "--out", str(tmp_path / "out3")], terminal_width=400)
    assert result.exit_code == 1 and "holds CSI amplitude" in result.output


def test_a_csi_model_is_validated_on_synthetic_csi_and_others_on_normalised_noise():
    """Parity on the model's own kind of input: csi-har recordings, labelled where the model's classes
    are the generator's, prepared as the SDK prepares them; standard-normal input only where no
    generator fits (CSI of another antenna count), and the report says which."""
    from radiofm.config import PreprocessConfig
    from radiofm.export.samples import validation_set
    from radiofm.signal import prepare
    from radiofm.training.synth.csi_har import CLASSES, generate_csi

    pre = PreprocessConfig(kind="csi", offset=0.0, scale=60.0, mean=[0.3] * 3, std=[0.15] * 3)
    cfg = preset("vit-micro", task="classify", num_classes=6, in_chans=3, labels=list(CLASSES), preprocess=pre)
    samples = validation_set(cfg, 7, seed=4)
    assert "csi-har generator" in samples.source and samples.images.shape == (7, 3, 32, 32)
    np.testing.assert_array_equal(samples.targets, [0, 1, 2, 3, 4, 5, 0])
    rng = np.random.default_rng(4)
    first = generate_csi(CLASSES[0], rng, float(rng.uniform(15, 35)))
    np.testing.assert_allclose(samples.images[0], prepare(first, pre, (32, 32))[0], rtol=1e-6)
    assert validation_set(cfg.replace(labels=[f"c{i}" for i in range(6)]), 2).targets is None

    two = cfg.replace(in_chans=2, preprocess=PreprocessConfig(kind="csi", offset=0.0, scale=60.0, mean=[0.3] * 2,
                                                               std=[0.15] * 2))
    noise = validation_set(two, 3)
    assert "standard-normal" in noise.source and noise.targets is None and noise.images.shape == (3, 2, 32, 32)
