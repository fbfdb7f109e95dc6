import os
import subprocess
import sys

import pytest
import torch

import radiofm.checkpoint as ckpt
from radiofm.config import preset
from radiofm.model import build_model


def _model(**kw):
    torch.manual_seed(0)
    return build_model(preset("vit-micro", **kw)).eval()


@pytest.mark.parametrize("task, extra", [("classify", dict(num_classes=3, labels=["noise", "lte", "nr"])),
                                         ("segment", dict(num_classes=3)), ("mae", {}), ("encode", {})])
def test_save_then_load_reproduces_outputs_exactly(tmp_path, task, extra):
    model = _model(task=task, **extra)
    x = torch.randn(2, 1, 32, 32)
    ckpt.save_model(model, tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    loaded = ckpt.load_model(tmp_path / "m")
    assert loaded.cfg == model.cfg
    with torch.no_grad():
        if task == "mae":
            g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
            assert torch.equal(model(x, generator=g1)[1], loaded(x, generator=g2)[1])
        elif task == "encode":
            assert all(torch.equal(a, b) for a, b in zip(model(x), loaded(x)))
        else:
            assert torch.equal(model(x), loaded(x))


def test_run_folder_stands_for_its_final_model(tmp_path):
    ckpt.save_model(_model(task="classify", num_classes=2), tmp_path / "run" / "final")
    assert ckpt.load_config(tmp_path / "run").num_classes == 2


def test_missing_folder_names_the_zoo(tmp_path):
    with pytest.raises(FileNotFoundError, match="zoo models"):
        ckpt.resolve_model_dir("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        ckpt.resolve_model_dir(tmp_path / "empty")


def test_failure_in_the_middle_of_a_save_keeps_the_previous_folder(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    first = _model(task="classify", num_classes=3)
    ckpt.save_model(first, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    import safetensors.torch

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_midway)
    second = build_model(preset("vit-micro", task="classify", num_classes=3))
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_model(second, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temp files left either
    monkeypatch.undo()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(ckpt.load_model(folder)(x), first(x))


def test_newer_format_folder_is_refused(tmp_path):
    ckpt.save_model(_model(), tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text().replace('"format_version": 1', '"format_version": 7')
    (tmp_path / "m" / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match="newer than this radiofm"):
        ckpt.load_model(tmp_path / "m")


def test_corrupt_weights_name_the_file(tmp_path):
    ckpt.save_model(_model(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        ckpt.load_model(tmp_path / "m")


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_carries_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": _Payload(str(marker))}, evil)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refuses"):
        ckpt.read_original_checkpoint(evil)
    assert not marker.exists()
    result = subprocess.run([sys.executable, "-m", "radiofm.cli", "convert", str(evil), "--model", "vit-micro",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 1 and "refuses" in result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("task, extra, chans", [
    ("classify", dict(num_classes=5, pool="avg"), 1),
    ("classify", dict(num_classes=6, pool="cls"), 3),
    ("mae", {}, 1),
    ("segment", dict(num_classes=3), 1),
])
def test_original_layout_converts_to_the_same_outputs(tmp_path, task, extra, chans):
    source = _model(task=task, in_chans=chans, **extra)
    # the original implementation saves {'model': state_dict, 'epoch': ..., 'args': ...}
    torch.save({"model": source.state_dict(), "epoch": 399}, tmp_path / "orig.pth")
    folder, cfg = ckpt.convert_original(tmp_path / "orig.pth", "vit-micro", tmp_path / "conv")
    assert (cfg.task, cfg.in_chans, cfg.num_classes) == (task, chans, extra.get("num_classes", 0))
    converted = ckpt.load_model(folder)
    x = torch.randn(2, chans, 32, 32)
    with torch.no_grad():
        if task == "mae":
            a = source(x, generator=torch.Generator().manual_seed(0))[1]
            b = converted(x, generator=torch.Generator().manual_seed(0))[1]
        else:
            a, b = source(x), converted(x)
    assert torch.equal(a, b)


def test_conversion_with_the_wrong_preset_says_which_to_pick(tmp_path):
    torch.save({"model": _model(task="mae").state_dict()}, tmp_path / "orig.pth")
    with pytest.raises(ValueError, match="pick the matching --model"):
        ckpt.convert_original(tmp_path / "orig.pth", "vit-nano", tmp_path / "conv")


def test_encoder_view_of_a_pretrained_mae_folder(tmp_path):
    mae = _model(task="mae")
    ckpt.save_model(mae, tmp_path / "m")
    enc = ckpt.load_model(tmp_path / "m", task="encode")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        tokens, pooled = enc(x)
        assert torch.equal(tokens, mae.forward_tokens(x)[:, 1:])
        assert torch.allclose(pooled, tokens.mean(1))


def test_saved_files_are_readable_by_others(tmp_path):
    folder = ckpt.save_model(_model(), tmp_path / "m")
    for name in ("config.json", "model.safetensors"):
        assert (folder / name).stat().st_mode & 0o044 == 0o044


def test_an_average_pooled_classifier_has_no_encoder_view(tmp_path):
    ckpt.save_model(_model(task="classify", num_classes=3, pool="avg"), tmp_path / "m")
    with pytest.raises(ValueError, match="average pooling.*pretrained MAE"):
        ckpt.load_model(tmp_path / "m", task="encode")


def test_weights_checksum_is_cached_until_the_file_is_replaced(tmp_path, monkeypatch):
    import hashlib

    folder = ckpt.save_model(_model(), tmp_path / "m")
    weights = folder / ckpt.WEIGHTS_FILE
    first = ckpt.sha256_file(weights)
    assert first == hashlib.sha256(weights.read_bytes()).hexdigest()
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert ckpt.sha256_file(weights) == first and not reads  # answered from the cache
    monkeypatch.undo()
    torch.manual_seed(1)
    ckpt.save_model(build_model(preset("vit-micro")), folder)  # new weights, same path
    second = ckpt.sha256_file(weights)
    assert second != first and second == hashlib.sha256(weights.read_bytes()).hexdigest()


class _Stopped(Exception):
    pass


@pytest.mark.skipif(sys.platform == "win32", reason="sends itself SIGTERM, which Windows does not deliver to a handler")
@pytest.mark.parametrize("writer", ["atomic_path", "synth atomic_write"])
def test_a_stop_arriving_as_the_temporary_file_is_made_leaves_no_file(tmp_path, monkeypatch, writer):
    """A SIGTERM (or Ctrl-C) that lands just after the temporary file is created, before the writer
    holds its name, would leave a hidden .tmp behind that nothing removes (a synth worker stopped at
    that moment did, once in a CI run): it waits until the name is held, and the file goes with it."""
    import signal
    import tempfile

    from radiofm.training.synth.common import atomic_write

    made = tempfile.mkstemp

    def mkstemp_then_stop(*args, **kwargs):
        result = made(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # undeferred, the handler raises right here
        return result

    def stop(signum, frame):
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_stop)
    try:
        with pytest.raises(_Stopped):
            if writer == "atomic_path":
                with ckpt.atomic_path(tmp_path / "out.json") as tmp:
                    tmp.write_text("{}")
            else:
                atomic_write(tmp_path / "out.npz", lambda f: f.write(b"x"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.listdir(tmp_path) == []
