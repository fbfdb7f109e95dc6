"""The SDK's engines agree: torch and ONNX Runtime on the bundled models, on freshly generated data."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from radiofm import Classifier, Segmenter
from radiofm.engines import open_engine


@pytest.fixture(scope="module")
def signals_onnx(tmp_path_factory):
    from radiofm.export.onnx import export

    out = tmp_path_factory.mktemp("signals-onnx")
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
