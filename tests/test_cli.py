import json
import subprocess
import sys

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
