"""The SDK's engines agree: torch and ONNX Runtime on the bundled models, on freshly generated data."""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from radiofm import Classifier, Encoder, Segmenter
from radiofm.engines import KEY_PADDING, open_engine


@pytest.fixture(scope="module")
def signals_onnx(tmp_path_factory):
    """A fixed-length fp32 export of signals-nano, where a cache at its parent folder keeps it (tests
    that want it found as the zoo model's own set RADIOFM_CACHE to ``signals_onnx.parent``)."""
    from radiofm.checkpoint import ZOO_DIR, exports_dir
    from radiofm.export.onnx import export

    out = tmp_path_factory.mktemp("signals-cache") / exports_dir(ZOO_DIR / "signals-nano").name
    export("signals-nano", out, samples=8, batch_sizes=(1, 7))
    return out


@pytest.fixture(scope="module")
def lte_nr_onnx(tmp_path_factory):
    from radiofm.export.onnx import export

    out = tmp_path_factory.mktemp("lte-nr-onnx")
    export("lte-nr-nano", out, samples=4, batch_sizes=(1,))
    return out


def _signal_captures(n_per_class, seed):
    from radiofm.training.synth import signals

    rng = np.random.default_rng(seed)
    kinds = [k for k in signals.CLASSES for _ in range(n_per_class)]
    return np.stack([signals.generate_signal(k, rng, rng.uniform(-10, 30)) for k in kinds])


def test_torch_and_onnx_give_the_same_labels_on_signal_captures(signals_onnx):
    iq = _signal_captures(8, seed=4242)
    torch_clf = Classifier.from_pretrained("signals-nano", engine="torch")
    onnx_clf = Classifier.from_pretrained(signals_onnx, engine="onnx")
    assert onnx_clf.engine.name == "onnx" and onnx_clf.classes == torch_clf.classes
    a, b = torch_clf.predict_iq(iq), onnx_clf.predict_iq(iq)
    assert np.array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    assert len(set(a.labels)) > 3  # a real mix of decisions, not one class everywhere


def test_torch_and_onnx_give_the_same_segmentation_maps(lte_nr_onnx):
    from radiofm.training.synth.lte_nr import make_lte_nr_frame

    rng = np.random.default_rng(77)
    spectra = np.stack([make_lte_nr_frame(rng, duration_ms=10)[0] for _ in range(3)])
    a = Segmenter.from_pretrained("lte-nr-nano", engine="torch").predict(spectra)
    b = Segmenter.from_pretrained(lte_nr_onnx, engine="onnx").predict(spectra)
    assert (a.indices == b.indices).mean() > 0.9999  # an exact tie may flip a pixel between runtimes
    assert len(np.unique(a.indices)) > 1


def test_auto_picks_onnx_when_an_export_is_there(signals_onnx):
    assert open_engine(signals_onnx).name == "onnx"


def test_a_zoo_model_is_opened_with_the_exports_that_radiofm_export_made(monkeypatch, tmp_path):
    """`radiofm export signals-nano` writes to the cache (the package folder may be read-only);
    opening "signals-nano" must find it there, and say which command makes it when it is not."""
    from radiofm.checkpoint import ZOO_DIR, exports_dir
    from radiofm.export.onnx import export

    monkeypatch.setenv("RADIOFM_CACHE", str(tmp_path))
    assert open_engine("signals-nano").name == "torch"
    with pytest.raises(FileNotFoundError, match="run `radiofm export signals-nano --engine onnx --precision fp32`"):
        Classifier.from_pretrained("signals-nano", engine="onnx")

    export("signals-nano", samples=2, batch_sizes=(1,))
    assert (exports_dir(ZOO_DIR / "signals-nano") / "model.onnx").is_file()
    assert not (ZOO_DIR / "signals-nano" / "model.onnx").exists()
    assert open_engine("signals-nano").name == "onnx"
    clf = Classifier.from_pretrained("signals-nano", engine="onnx")
    assert clf.engine.name == "onnx"
    assert Classifier.from_pretrained("signals-nano", engine="torch").engine.name == "torch"
    with pytest.raises(FileNotFoundError, match="run `radiofm export signals-nano --engine onnx --precision int8`"):
        Classifier.from_pretrained("signals-nano", engine="onnx", precision="int8")


def test_an_onnx_application_never_imports_torch(signals_onnx):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from radiofm import Classifier
        clf = Classifier.from_pretrained({str(signals_onnx)!r}, engine="onnx")
        rng = np.random.default_rng(0)
        iq = (rng.normal(size=32768) + 1j * rng.normal(size=32768)).astype(np.complex64)
        pred = clf.predict_iq(iq)
        print(pred.labels[0] in clf.classes, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_corrupt_onnx_file_is_a_clear_error(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(ValueError, match="model.onnx"):
        open_engine(tmp_path / "model.onnx")


def test_torch_bf16_casts_the_linear_weights_once_and_gives_autocasts_numbers():
    """Autocast alone copies every weight to bf16 on every call; the engine casts them at load. The
    outputs must be exactly those of autocast over the fp32 model."""
    import torch

    from radiofm.checkpoint import load_model
    from radiofm.engines import TorchEngine

    for name in ("signals-nano", "lte-nr-nano"):
        engine = TorchEngine(name, precision="bf16")
        linears = [m for m in engine.model.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
        assert engine.model.patch_embed.proj.weight.dtype == torch.float32  # the Triton kernel reads it
        reference = load_model(name).eval()
        cfg = reference.cfg
        x = np.random.default_rng(1).standard_normal((3, cfg.in_chans, *cfg.img_size)).astype(np.float32)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected = reference(torch.from_numpy(x))
        (out,) = engine.run(x)
        assert torch.equal(torch.from_numpy(out), expected.float())
        assert not torch.equal(expected.float(), reference(torch.from_numpy(x)).detach())  # bf16 did change them


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_plan_that_export_writes_for_each_precision_is_the_one_opened(monkeypatch, tmp_path, precision):
    """`radiofm export --engine trt --precision P` writes model.<P>.plan; opening stops before TensorRT."""
    from radiofm import engines

    (tmp_path / "model.onnx").write_bytes(b"placeholder")
    for p in ("fp32", "fp16", "int8"):
        (tmp_path / f"model.{p}.plan").write_bytes(b"placeholder")
    opened = []
    monkeypatch.setattr(engines, "TensorRTEngine", lambda path: opened.append(path) or "engine")
    assert open_engine(tmp_path, "trt", "cuda", precision) == "engine"
    assert [p.name for p in opened] == [f"model.{precision}.plan"]
    (tmp_path / f"model.{precision}.plan").unlink()
    calib = " --calib DATASET" if precision == "int8" else ""
    with pytest.raises(FileNotFoundError, match=rf"no TensorRT plan for {precision} \(model.{precision}.plan\).*"
                                                rf"--engine trt --precision {precision}{calib} --out {tmp_path}"):
        open_engine(tmp_path, "trt", "cuda", precision)
    with pytest.raises(ValueError, match="runs on a CUDA GPU, not device 'cpu'"):
        open_engine(tmp_path, "trt", "cpu", "fp16" if precision != "fp16" else "fp32")


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_auto_without_an_export_of_the_precision_names_the_export_command(monkeypatch, tmp_path, precision):
    monkeypatch.setenv("RADIOFM_CACHE", str(tmp_path))
    wanted = rf"no {precision} ONNX export \(model.{precision}.onnx\) of signals-nano"
    with pytest.raises(FileNotFoundError, match=wanted + rf".*run `radiofm export signals-nano --precision {precision}`"):
        Classifier.from_pretrained("signals-nano", device="cpu", precision=precision)


def test_auto_runs_a_short_capture_on_torch_where_the_cached_export_cannot_mask_it(monkeypatch, signals_onnx):
    monkeypatch.setenv("RADIOFM_CACHE", str(signals_onnx.parent))
    auto = Classifier.from_pretrained("signals-nano", device="cpu")
    reference = Classifier.from_pretrained("signals-nano", engine="torch", device="cpu")
    assert auto.engine.name == "onnx" and not auto.engine.takes_key_padding
    rng = np.random.default_rng(8)
    short = (rng.normal(size=(2, 8000)) + 1j * rng.normal(size=(2, 8000))).astype(np.complex64)
    np.testing.assert_allclose(auto.predict_iq(short).probs, reference.predict_iq(short).probs, atol=1e-6)
    fallback = auto._torch_engine
    assert fallback is not None and fallback.name == "torch"
    auto.predict_iq(short[0])
    assert auto._torch_engine is fallback  # opened once, then reused
    full = (rng.normal(size=(2, 32768)) + 1j * rng.normal(size=(2, 32768))).astype(np.complex64)
    np.testing.assert_allclose(auto.predict_iq(full).probs, reference.predict_iq(full).probs, atol=1e-4)
    onnx = Classifier.from_pretrained("signals-nano", engine="onnx", device="cpu")  # chosen: keeps the clear error
    with pytest.raises(ValueError, match="has no key_padding input.*--variable-length"):
        onnx.predict_iq(short)
    # An encoder asked of it on auto explains, as the torch engine does, why it has none.
    with pytest.raises(ValueError, match="no encoder view"):
        Encoder.from_pretrained("signals-nano")


def test_an_encoders_missing_export_names_the_command_that_makes_one(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from radiofm.cli import app

    monkeypatch.setenv("RADIOFM_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"msm-nano is a 'mae' model.*`radiofm export msm-nano --task encode "
                                                r"--out DIR`, then open DIR \(Encoder.from_pretrained\(DIR\)\)"):
        Encoder.from_pretrained("msm-nano", engine="onnx")
    with pytest.raises(FileNotFoundError, match=r"--task encode --precision int8 --out DIR`.*precision='int8'"):
        Encoder.from_pretrained("msm-nano", engine="onnx", precision="int8")
    help_text = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).output
    assert "--task" in help_text and "--out" in help_text  # the options the command above uses


def test_an_onnx_file_refuses_an_engine_or_precision_it_contradicts(signals_onnx):
    onnx_file = signals_onnx / "model.onnx"
    for engine in ("torch", "trt"):
        with pytest.raises(ValueError, match=rf"model.onnx is an ONNX file, which engine 'onnx' \(or 'auto'\) "
                                             rf"runs, not engine='{engine}'"):
            Classifier.from_pretrained(onnx_file, engine=engine)
    with pytest.raises(ValueError, match=r"is a fp32 ONNX export \(as its metadata records\), not int8.*"
                                         r"`radiofm export MODEL --precision int8`"):
        Classifier.from_pretrained(onnx_file, precision="int8")
    for precision in (None, "fp32"):
        assert Classifier.from_pretrained(onnx_file, precision=precision).engine.precision == "fp32"
    with pytest.raises(FileNotFoundError, match=rf"{signals_onnx} has no fp16 ONNX export \(model.fp16.onnx\).*"
                                                rf"`radiofm export MODEL --precision fp16 --out {signals_onnx}`"):
        Classifier.from_pretrained(signals_onnx, precision="fp16")
    with pytest.raises(ValueError, match="device must be .* got 'gpu'"):
        Classifier.from_pretrained(signals_onnx, engine="onnx", device="gpu")


def test_a_plan_file_refuses_a_precision_its_sidecar_contradicts(tmp_path):
    plan = tmp_path / "model.fp16.plan"
    plan.write_bytes(b"placeholder")
    (tmp_path / "model.fp16.plan.json").write_text('{"precision": "fp16"}')
    with pytest.raises(ValueError, match=r"is a fp16 TensorRT plan \(as model.fp16.plan.json records\), not fp32"):
        open_engine(plan, precision="fp32")
    with pytest.raises(ValueError, match="is a TensorRT plan, which engine 'trt'"):
        open_engine(plan, engine="onnx")
    with pytest.raises(ValueError, match="runs on a CUDA GPU, not device 'cpu'"):
        open_engine(plan, device="cpu")


def _classifier_folder(folder, seed):
    """A vit-micro classifier with weights drawn from ``seed``, saved (again) into ``folder``."""
    import torch

    from radiofm.checkpoint import save_model
    from radiofm.config import preset
    from radiofm.model import build_model

    torch.manual_seed(seed)
    cfg = preset("vit-micro", task="classify", num_classes=3, labels=["a", "b", "c"])
    return save_model(build_model(cfg).eval(), folder, cfg)


def test_an_export_made_before_the_weights_changed_is_skipped_on_auto_and_refused_when_chosen(tmp_path):
    """`radiofm convert` (or training) into a folder that holds exports: the exports record the old
    weights' checksum, so auto runs torch on the new weights and a chosen ONNX engine is refused."""
    import shutil

    from radiofm.export.onnx import export

    folder = _classifier_folder(tmp_path / "m", seed=0)
    export(folder, samples=2, batch_sizes=(1,))
    assert open_engine(folder).name == "onnx"
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    old = open_engine(folder).run(x)[0]
    _classifier_folder(folder, seed=1)  # new weights, same folder

    auto = open_engine(folder)
    assert auto.name == "torch"
    new = open_engine(folder, "torch").run(x)[0]
    np.testing.assert_array_equal(auto.run(x)[0], new)
    assert not np.allclose(old, new, rtol=0, atol=1e-6)  # (an untrained head: small logits)
    stale = rf"{tmp_path / 'm' / 'model.onnx'} is stale: .*changed since it was exported; refresh it with " \
            rf"`radiofm export {folder} --precision fp32`"
    with pytest.raises(ValueError, match=stale):
        open_engine(folder, "onnx")
    with pytest.raises(ValueError, match=stale):  # named directly, with the weights beside it
        open_engine(folder / "model.onnx")
    with pytest.raises(ValueError, match=stale):
        Classifier.from_pretrained(folder, engine="onnx")
    # Without weights at hand a file is taken as it is.
    (tmp_path / "bare").mkdir()
    shutil.copy(folder / "model.onnx", tmp_path / "bare" / "model.onnx")
    np.testing.assert_allclose(open_engine(tmp_path / "bare" / "model.onnx").run(x)[0], old, rtol=0, atol=1e-7)
    assert open_engine(tmp_path / "bare").name == "onnx"

    export(folder, samples=2, batch_sizes=(1,))  # refreshed: auto takes it again, with the new answer
    fresh = open_engine(folder)
    assert fresh.name == "onnx"
    np.testing.assert_allclose(fresh.run(x)[0], new, rtol=0, atol=1e-7)


def _new_weights_name_the_refresh(folder, options: str) -> str:
    """New weights in ``folder`` make its int8 export stale: the refusal names ``radiofm export FOLDER
    --precision int8`` with ``options``, the command returned."""
    _classifier_folder(folder, seed=1)
    command = f"radiofm export {folder} --precision int8{options}"
    with pytest.raises(ValueError, match=rf"model.int8.onnx is stale: .*refresh it with `{re.escape(command)}`"):
        open_engine(folder, "onnx", precision="int8")
    return command


@pytest.mark.parametrize("variable_length, scope, options", [
    (False, None, ""),
    (False, "partial", " --int8-scope partial"),
    (True, None, " --variable-length"),
    (True, "full", " --int8-scope full --variable-length"),
])
def test_a_stale_int8_export_is_refreshed_with_its_own_scope(tmp_path, variable_length, scope, options):
    """The command a stale int8 export names makes the same kind of file again: the scope is spelled out
    where it is not that export's default (full; partial for a variable-length export), and the command
    it names does make that scope when run."""
    import json
    import shlex

    from radiofm.cli import app
    from radiofm.export.onnx import export

    folder = _classifier_folder(tmp_path / "m", seed=0)
    export(folder, precision="int8", samples=4, batch_sizes=(1,), int8_scope=scope, atol=None,
           variable_length=variable_length)
    made = json.loads((folder / "onnx.json").read_text())["int8"]["scope"]
    command = _new_weights_name_the_refresh(folder, options)

    result = CliRunner().invoke(app, [*shlex.split(command)[1:], "--samples", "4"])
    assert result.exit_code == 0, result.output
    entry = json.loads((folder / "onnx.json").read_text())["int8"]
    assert entry["scope"] == made and (KEY_PADDING in entry["inputs"]) == variable_length
    assert open_engine(folder, "onnx", precision="int8").name == "onnx"


@pytest.mark.parametrize("variable_length, options", [(False, " --int8-scope partial"), (True, " --variable-length")])
def test_an_int8_export_recorded_before_scopes_existed_is_refreshed_as_partial(tmp_path, variable_length, options):
    """An onnx.json entry with no scope comes from before there was a choice, when int8 was partial: its
    refresh command keeps it partial, which needs the option only where partial is not the default."""
    import json

    from radiofm.export.onnx import export

    folder = _classifier_folder(tmp_path / "m", seed=0)
    export(folder, precision="int8", samples=4, batch_sizes=(1,), int8_scope="partial", atol=None,
           variable_length=variable_length)
    report = json.loads((folder / "onnx.json").read_text())
    del report["int8"]["scope"]
    (folder / "onnx.json").write_text(json.dumps(report))
    _new_weights_name_the_refresh(folder, options)


@pytest.mark.parametrize("method, recorded, options", [
    (None, True, " --calib DATASET"),
    ("minmax", True, " --calib DATASET --calib-method minmax"),
    ("minmax", False, " --calib DATASET --calib-method minmax"),  # recorded before there was a choice
])
def test_a_stale_static_int8_export_is_refreshed_with_its_own_calibration(tmp_path, method, recorded, options):
    """A static int8 export's refresh command keeps how its ranges were calibrated: the method is spelled
    out where it is not the default (percentile), and entries from before methods existed were minmax."""
    import json
    import shlex

    from radiofm.cli import app
    from radiofm.engines import DEFAULT_CALIB_METHOD
    from radiofm.export.onnx import export
    from radiofm.training.synth import synthesize

    synthesize("signals", 8, tmp_path / "calib", seed=3, progress=False)
    folder = _classifier_folder(tmp_path / "m", seed=0)
    export(folder, precision="int8", calib=tmp_path / "calib", calib_method=method, samples=4, batch_sizes=(1,))
    report = json.loads((folder / "onnx.json").read_text())
    assert report["int8"]["method"] == "static"
    assert report["int8"]["calibration"]["method"] == (method or DEFAULT_CALIB_METHOD)
    if not recorded:
        del report["int8"]["calibration"]
        (folder / "onnx.json").write_text(json.dumps(report))
    command = _new_weights_name_the_refresh(folder, options)

    result = CliRunner().invoke(app, [*shlex.split(command.replace("DATASET", str(tmp_path / "calib")))[1:],
                                      "--samples", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "onnx.json").read_text())["int8"]["calibration"]["method"] == (method or DEFAULT_CALIB_METHOD)
    assert open_engine(folder, "onnx", precision="int8").name == "onnx"

def test_an_export_made_before_config_json_was_edited_is_skipped_on_auto_and_refused_when_chosen(tmp_path):
    """An export preprocesses and labels by the config it carries: after config.json is edited (labels
    renamed, the dB scaling changed) auto runs torch, which reads the edited file, and a chosen ONNX
    engine is refused naming what changed. Which radiofm wrote the config does not make it stale."""
    import json

    from radiofm.export.onnx import export

    folder = _classifier_folder(tmp_path / "m", seed=0)
    export(folder, samples=2, batch_sizes=(1,))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "radiofm_version": "0.0.1", "format_version": 1}))
    assert open_engine(folder).name == "onnx"  # provenance only: still current

    edited = {**config, "labels": ["noise", "lte", "nr"], "preprocess": {**config["preprocess"], "offset": 120.0}}
    (folder / "config.json").write_text(json.dumps(edited))
    auto = open_engine(folder)
    assert auto.name == "torch" and auto.cfg.labels == ["noise", "lte", "nr"]
    stale = (rf"{tmp_path / 'm' / 'model.onnx'} is stale: {tmp_path / 'm' / 'config.json'} has changed since it "
             rf"was exported \(export -> now: .*labels: \['a', 'b', 'c'\] -> \['noise', 'lte', 'nr'\].*"
             rf"preprocess.offset: 155.8 -> 120.0.*\); refresh it with `radiofm export {folder} --precision fp32`")
    with pytest.raises(ValueError, match=stale):
        open_engine(folder, "onnx")
    with pytest.raises(ValueError, match=stale):  # named directly, with the config beside it
        open_engine(folder / "model.onnx")
    with pytest.raises(ValueError, match="model.onnx is stale"):
        Classifier.from_pretrained(folder, engine="onnx")

    export(folder, samples=2, batch_sizes=(1,))  # refreshed: auto takes it again, with the new labels
    fresh = open_engine(folder)
    assert fresh.name == "onnx" and fresh.cfg.labels == ["noise", "lte", "nr"]


def test_an_encoder_export_is_refused_into_the_folder_whose_exports_are_of_its_own_head(tmp_path):
    """Written there, the encoder's model.onnx would replace the classifier's own."""
    from radiofm.checkpoint import save_model
    from radiofm.config import preset
    from radiofm.export.onnx import ExportError, export
    from radiofm.model import build_model

    cfg = preset("vit-micro", task="classify", num_classes=3, pool="cls")  # a cls token: an encoder view
    folder = save_model(build_model(cfg).eval(), tmp_path / "m", cfg)
    for out in (None, folder, tmp_path / "m" / "." ):
        with pytest.raises(ExportError, match=r"holds a classify model.*as 'encode' needs --out DIR, another folder"):
            export(folder, out, task="encode", samples=2, batch_sizes=(1,))
    assert not (folder / "model.onnx").exists()
    export(folder, tmp_path / "encoder", task="encode", samples=2, batch_sizes=(1,))
    assert open_engine(tmp_path / "encoder").cfg.task == "encode"


def test_a_run_folder_retrained_after_its_export_runs_the_new_weights(tmp_path):
    from radiofm.export.onnx import export

    _classifier_folder(tmp_path / "run" / "final", seed=0)
    export(tmp_path / "run", samples=2, batch_sizes=(1,))
    assert open_engine(tmp_path / "run").name == "onnx"
    _classifier_folder(tmp_path / "run" / "final", seed=1)
    assert open_engine(tmp_path / "run").name == "torch"
    with pytest.raises(ValueError, match=r"model.onnx is stale.*`radiofm export .*run --precision fp32`"):
        open_engine(tmp_path / "run", "onnx")


def _gpu_with_tensorrt(monkeypatch):
    """This machine as one with a GPU and TensorRT, as far as choosing an engine goes: opening a plan
    records its path and gives back a stand-in (nothing is deserialised); torch and ONNX Runtime see no GPU."""
    import types

    from radiofm import engines

    opened, loaded = [], types.SimpleNamespace(takes_key_padding=True)
    monkeypatch.setattr(engines, "TensorRTEngine", lambda path: opened.append(path) or loaded)
    for name, value in (("cuda_visible", True), ("_trt_usable", True), ("_torch_has_cuda", False),
                        ("_ort_has_cuda", False)):
        monkeypatch.setattr(engines, name, lambda value=value: value)
    return opened, loaded


def test_a_stale_plan_is_skipped_on_auto_and_refused_when_chosen(monkeypatch, tmp_path):
    """A TensorRT plan records its weights' checksum in its sidecar; one of other weights is never loaded."""
    import json

    from radiofm.checkpoint import sha256_file

    folder = _classifier_folder(tmp_path / "m", seed=0)
    plan = folder / "model.fp16.plan"
    plan.write_bytes(b"placeholder")
    command = f"radiofm export {folder} --engine trt --precision fp16 --batch 1:8:64"
    sidecar = {"precision": "fp16", "source_sha256": "0" * 64, "build_command": command}
    (folder / "model.fp16.plan.json").write_text(json.dumps(sidecar))
    opened, loaded = _gpu_with_tensorrt(monkeypatch)
    with pytest.raises(ValueError, match=rf"model.fp16.plan is stale: .*refresh it with `{command}`"):
        open_engine(folder, "trt", "cuda", "fp16")
    with pytest.raises(ValueError, match="model.fp16.plan is stale"):
        open_engine(plan)
    assert open_engine(folder, precision="fp32").name == "torch"  # no fp32 plan: torch, on the CPU
    (folder / "model.fp32.plan").write_bytes(b"placeholder")
    (folder / "model.fp32.plan.json").write_text(json.dumps({**sidecar, "precision": "fp32"}))
    assert open_engine(folder).name == "torch" and not opened  # the stale plan is passed over
    current = {**sidecar, "precision": "fp32", "source_sha256": sha256_file(folder / "model.safetensors"),
               "config": json.loads((folder / "config.json").read_text())}
    (folder / "model.fp32.plan.json").write_text(json.dumps(current))
    assert open_engine(folder) is loaded and [p.name for p in opened] == ["model.fp32.plan"]
    # The config the plan carries (it preprocesses and labels by it) is not config.json's any more.
    (folder / "model.fp32.plan.json").write_text(json.dumps({**current, "config": {**current["config"], "labels": ["x", "y", "z"]}}))
    assert open_engine(folder).name == "torch" and len(opened) == 1
    with pytest.raises(ValueError, match=r"model.fp32.plan is stale: .*config.json has changed .*labels: \['x', 'y', 'z'\] "
                                         r"-> \['a', 'b', 'c'\]"):
        open_engine(folder, "trt", "cuda", "fp32")


def test_a_plan_that_missed_its_tolerance_is_passed_over_on_auto_and_refused_when_chosen(monkeypatch, tmp_path):
    """A plan whose build-time parity failed keeps its name, with "passed": false in its sidecar: never loaded."""
    import json

    from radiofm.checkpoint import sha256_file

    folder = _classifier_folder(tmp_path / "m", seed=0)
    plan = folder / "model.fp32.plan"
    plan.write_bytes(b"placeholder")
    command = f"radiofm export {folder} --engine trt --precision fp32 --batch 1:8:64"
    sidecar = {"precision": "fp32", "source_sha256": sha256_file(folder / "model.safetensors"),
               "build_command": command, "passed": False, "failures": ["batch 1: max_abs_diff 0.3 > 0.0001"]}
    (folder / "model.fp32.plan.json").write_text(json.dumps(sidecar))
    opened, loaded = _gpu_with_tensorrt(monkeypatch)
    missed = rf"model.fp32.plan missed its tolerance .*max_abs_diff 0.3 > 0.0001.*rebuild it with `{command}`"
    with pytest.raises(ValueError, match=missed):
        open_engine(folder, "trt", "cuda", "fp32")
    with pytest.raises(ValueError, match="model.fp32.plan missed its tolerance"):
        open_engine(plan)
    assert open_engine(folder).name == "torch" and not opened  # auto passes over it
    (folder / "model.fp32.plan.json").write_text(json.dumps({**sidecar, "passed": True, "failures": []}))
    assert open_engine(folder) is loaded and [p.name for p in opened] == ["model.fp32.plan"]
