import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radiofm.cli import app

runner = CliRunner()


def test_info_models_lists_paper_sizes_with_counts():
    result = runner.invoke(app, ["info", "--models"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name, count in (("vit-s", "38.0 M"), ("vit-m", "85.3 M"), ("vit-l", "302.6 M")):
        line = next(l for l in result.output.splitlines() if f" {name} " in l)
        assert count in line


def test_info_reports_versions_and_engines():
    result = runner.invoke(app, ["info"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "torch" in result.output and "onnxruntime" in result.output and "trt" in result.output


def test_info_names_the_cpu_and_the_unit_each_precision_runs_on():
    from radiofm.benchmarks.machine import cpu_info, cpu_ops_per_cycle

    result = runner.invoke(app, ["info"], terminal_width=200)
    assert result.exit_code == 0, result.output
    cpu = cpu_info()
    assert f"{cpu['cores']} cores" in result.output
    for precision in ("fp32", "bf16", "int8"):
        line = next(l for l in result.output.splitlines() if l.strip("│ ").startswith(precision + " "))
        assert cpu_ops_per_cycle(cpu, precision)[1] in line, line


def test_convert_reads_task_and_classes_from_the_checkpoint(tmp_path):
    import torch

    from radiofm.config import preset
    from radiofm.model import build_model

    net = build_model(preset("vit-micro", task="classify", num_classes=4))
    torch.save({"model": net.state_dict()}, tmp_path / "ft.pth")
    result = runner.invoke(app, ["convert", str(tmp_path / "ft.pth"), "--model", "vit-micro", "--out",
                                 str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code == 0, result.output
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["task"], cfg["num_classes"]) == ("classify", 4)


def test_convert_missing_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["convert", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_import_radiofm_does_not_import_torch():
    code = "import sys, radiofm, radiofm.config, radiofm.checkpoint; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_shows_defaults_written_in_brackets_and_reflows_docstrings():
    # Rich markup would take "[default: ...]" in an option's help for a style tag and drop it.
    def help_of(*command):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    flat = lambda text: " ".join(text.replace("│", " ").split())
    pretrain = flat(help_of("train", "pretrain"))
    assert "Linear warmup length [default: 10% of --epochs]" in pretrain
    assert "[default: once per epoch]." in pretrain and "once per epoch]. [default: 0]" not in pretrain
    assert "[default: beside --json]" in flat(help_of("eval"))
    # The docstring's line breaks are not kept: at 200 columns its paragraph is one line.
    assert "beside the true labels, the accuracy and a latency table" in help_of("demo")


class Unpicklable:
    """Pickled by reference to its module: loading it would run this file's code."""


def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path, monkeypatch):
    import radiofm.benchmarks.bench as bench
    import radiofm.demo as demo
    import radiofm.export.onnx as onnx_export
    import radiofm.training.evaluate as evaluate
    import radiofm.training.synth as synth

    def never(*args, **kwargs):
        raise AssertionError("the long work ran before the output was checked")

    for module, name in ((bench, "run_bench"), (demo, "run_demo"), (onnx_export, "export"), (evaluate, "evaluate"),
                         (synth, "synthesize")):
        monkeypatch.setattr(module, name, never)
    (tmp_path / "afile").touch()
    afile = str(tmp_path / "afile")
    below = str(tmp_path / "afile" / "x.png")
    commands = [
        (["export", "signals-nano", "--out", afile], afile),
        (["data", "synth", "--task", "signals", "--n", "2", "--out", afile], afile),
        (["convert", str(tmp_path / "x.pth"), "--model", "vit-pico", "--out", afile], afile),
        (["demo", "--out", below], below),
        (["data", "show", str(tmp_path), "--out", below], below),
        (["predict", "signals-nano", str(tmp_path / "rec.npy"), "--plot", below], below),
        (["eval", "signals-nano", "--data", str(tmp_path), "--json", str(tmp_path / "afile" / "e.json")], "e.json"),
        (["bench", "signals-nano", "-e", "onnx", "--json", str(tmp_path / "afile" / "b.json")], "b.json"),
        (["train", "pretrain", "--data", str(tmp_path), "--out", afile, "-e", "1"], afile),
    ]
    for args, named in commands:
        result = runner.invoke(app, args, terminal_width=400)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.exception)
        line = " ".join(result.output.split())
        assert line.startswith("error: ") and named in line and "is a file, not a folder" in line, (args, line)
    # A picture type that cannot be written is refused up front, with the ones that can.
    jpg = runner.invoke(app, ["data", "show", str(tmp_path), "--out", str(tmp_path / "sig.jpg")], terminal_width=400)
    assert jpg.exit_code == 1 and "sig.jpg" in jpg.output and ".png, .pdf, .svg" in jpg.output
    confusion = runner.invoke(app, ["eval", "signals-nano", "--data", str(tmp_path), "--png", str(tmp_path / "cm.pdf")],
                              terminal_width=400)
    assert confusion.exit_code == 1 and "cm.pdf" in confusion.output and ".png" in confusion.output
    assert not list(tmp_path.glob(".radiofm-check-*"))  # the checks leave nothing behind


def test_a_failed_write_names_the_path_asked_for_not_a_temporary_file(tmp_path):
    from radiofm.checkpoint import write_text_atomic

    (tmp_path / "afile").touch()
    with pytest.raises(OSError) as info:
        write_text_atomic(tmp_path / "afile" / "x.json", "{}")
    assert str(info.value) == f"cannot write {tmp_path / 'afile' / 'x.json'}: {tmp_path / 'afile'} is a file, not a folder"
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(OSError, match=r"cannot write .*folder\.json: ") as info:
        write_text_atomic(tmp_path / "folder.json", "{}")
    assert ".tmp" not in str(info.value)
    if Path("/proc/self").is_dir():  # a folder where no file can be made
        result = runner.invoke(app, ["predict", "signals-nano", "x.npy", "--plot", "/proc/x.png"], terminal_width=400)
        assert result.exit_code == 1 and "/proc/x.png" in result.output and ".tmp" not in result.output


def test_convert_refuses_damaged_and_code_carrying_checkpoints_in_plain_words(tmp_path):
    import torch

    (tmp_path / "junk.pth").write_bytes(b"junk")
    torch.save({"model": Unpicklable()}, tmp_path / "code.pth")
    for name, said in (("junk.pth", "junk.pth is not a readable checkpoint ("),
                       ("code.pth", "code.pth needs arbitrary code to be unpickled")):
        result = runner.invoke(app, ["convert", str(tmp_path / name), "--model", "vit-pico", "--out",
                                     str(tmp_path / "conv")], terminal_width=1000)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert said in result.output and "\x1b" not in result.output
    assert "Unpicklable" in result.output  # what the file asked for, without torch's styling


def test_data_show_says_why_there_is_nothing_to_show(tmp_path):
    import numpy as np
    import sigmf
    from sigmf import SigMFFile

    iq = np.ones(8500, np.complex64)  # 8.5 ms at 1 MHz: shorter than one 16 ms crop
    iq.tofile(tmp_path / "short.sigmf-data")
    meta = SigMFFile(data_file=str(tmp_path / "short.sigmf-data"),
                     global_info={sigmf.DATATYPE_KEY: "cf32_le", sigmf.SAMPLE_RATE_KEY: 1e6,
                                  sigmf.VERSION_KEY: sigmf.__specification__})
    meta.add_capture(0, metadata={})
    meta.tofile(str(tmp_path / "short.sigmf-meta"))
    out = str(tmp_path / "g.png")
    short = runner.invoke(app, ["data", "show", str(tmp_path / "short.sigmf-meta"), "--out", out], terminal_width=400)
    assert short.exit_code == 1
    assert "8500 samples (8.5 ms" in short.output and "16 ms crop (16000 samples)" in short.output
    none = runner.invoke(app, ["data", "show", str(tmp_path / "short.sigmf-meta"), "--n", "0", "--out", out])
    assert none.exit_code == 1 and "--n must be at least 1, got 0" in none.output


def test_data_show_writes_the_picture_type_its_name_asks_for(tmp_path):
    from radiofm.training.synth import synthesize

    synthesize("csi-har", 2, tmp_path / "d", workers=1, progress=False)
    for name, start in (("g.svg", b"<?xml"), ("g.pdf", b"%PDF"), ("g.png", b"\x89PNG")):
        result = runner.invoke(app, ["data", "show", str(tmp_path / "d"), "--n", "2", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).read_bytes().startswith(start)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "g.pdf", "g.png", "g.svg"]  # no temporary file left


def test_predict_refuses_a_sample_rate_that_is_not_a_positive_number_first(tmp_path):
    for rate in ("0", "-5", "nan"):
        result = runner.invoke(app, ["predict", "no-such-model", str(tmp_path / "missing.npy"), f"--sample-rate={rate}"])
        assert result.exit_code == 1
        assert f"--sample-rate must be a positive number of Hz, got {rate}" in result.output


def test_predict_refuses_a_negative_join_gap_first(tmp_path):
    for gap in ("-1", "nan"):
        result = runner.invoke(app, ["predict", "no-such-model", str(tmp_path / "missing.npy"), f"--join-gap={gap}"])
        assert result.exit_code == 1
        assert f"--join-gap must be at least 0 ms, got {gap}" in result.output
