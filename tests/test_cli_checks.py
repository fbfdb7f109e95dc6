"""Command-line options checked at the door: numbers out of range, data of the wrong kind, and what
a command prints once under torchrun."""

import pytest
from typer.testing import CliRunner

from radiofm.cli import app

runner = CliRunner()


@pytest.fixture
def no_work(monkeypatch):
    """Every long piece of work a command could start fails the test if it is reached."""
    import radiofm.benchmarks.bench as bench
    import radiofm.checkpoint as checkpoint
    import radiofm.export.onnx as onnx_export
    import radiofm.training.evaluate as evaluate
    import radiofm.training.finetune as finetune
    import radiofm.training.pretrain as pretrain
    import radiofm.training.synth as synth

    def never(*args, **kwargs):
        raise AssertionError("the work started before the options were checked")

    for module, name in ((bench, "run_bench"), (onnx_export, "export"), (evaluate, "evaluate"),
                         (finetune, "finetune"), (pretrain, "pretrain"), (synth, "synthesize"),
                         (checkpoint, "load_model")):
        monkeypatch.setattr(module, name, never)


def test_numbers_out_of_range_are_refused_before_any_work_naming_option_and_value(tmp_path, no_work):
    d, out = str(tmp_path), str(tmp_path / "run")
    pretrain = ["train", "pretrain", "--data", d, "--out", out, "-e", "1"]
    finetune = ["train", "finetune", "--task", "classify", "--data", d, "--out", out, "-e", "1", "--model", "vit-pico"]
    evaluate = ["eval", "signals-nano", "--data", d]
    bench = ["bench", "signals-nano"]
    synth = ["data", "synth", "--task", "signals", "--out", str(tmp_path / "set")]
    cases = [
        (pretrain + ["--threads", "-1"], "--threads must be at least 1, got -1"),
        (evaluate + ["--threads", "-1"], "--threads must be at least 1, got -1"),
        (finetune + ["--img-size", "0x0"], "--img-size must be two positive sizes like 256x64 (height x width), got '0x0'"),
        (finetune + ["--img-size", "-32x32"], "--img-size must be two positive sizes like 256x64 (height x width), got '-32x32'"),
        (finetune + ["--drop-path", "1.5"], "--drop-path must be in [0, 1), got 1.5"),
        (finetune + ["--layer-decay", "0"], "--layer-decay must be in (0, 1], got 0"),
        (finetune + ["--layer-decay", "1.2"], "--layer-decay must be in (0, 1], got 1.2"),
        (finetune + ["--weight-decay", "-0.1"], "--weight-decay must be at least 0, got -0.1"),
        (finetune + ["--label-fraction", "0"], "--label-fraction must be in (0, 1], got 0"),
        (evaluate + ["--batch", "0"], "--batch must be at least 1, got 0"),
        (evaluate + ["--batch", "-1"], "--batch must be at least 1, got -1"),
        (pretrain + ["--lr", "0"], "--lr must be a positive number, got 0"),
        (pretrain + ["--blr", "-1e-3"], "--blr must be a positive number, got -0.001"),
        (pretrain + ["--blr", "nan"], "--blr must be a positive number, got nan"),
        (pretrain + ["--min-lr", "-1e-6"], "--min-lr must be at least 0, got -1e-06"),
        (pretrain + ["--mask-ratio", "1"], "--mask-ratio must be in (0, 1), got 1"),
        (pretrain + ["--mask-ratio", "0"], "--mask-ratio must be in (0, 1), got 0"),
        (pretrain + ["--warmup-epochs", "-1"], "--warmup-epochs must be at least 0, got -1"),
        (pretrain + ["--ckpt-every", "-1"], "--ckpt-every must be at least 0 (0: once per epoch), got -1"),
        (pretrain + ["--sample-every", "-1"], "--sample-every must be at least 0 (0: none), got -1"),
        (pretrain + ["--batch", "0"], "--batch must be at least 1, got 0"),
        (pretrain + ["--accum", "0"], "--accum must be at least 1, got 0"),
        (bench + ["--limit", "-5"], "--limit must be at least 1, got -5"),
        (bench + ["--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (bench + ["--repeat", "0"], "--repeat must be at least 1, got 0"),
        (bench + ["--threads", "0"], "--threads must be at least 1, got 0"),
        (bench + ["-b", "1", "-b", "0"], "--batch must be at least 1, got 0"),
        (["export", "signals-nano", "--atol", "-1"], "--atol must be at least 0, got -1"),
        (["export", "signals-nano", "--atol", "nan"], "--atol must be at least 0, got nan"),
        (["export", "signals-nano", "--samples", "0"], "--samples must be at least 1, got 0"),
        (synth + ["--n", "4", "--workers", "-1"], "--workers must be at least 0 (0: one per CPU core), got -1"),
        (synth + ["--n", "0"], "--n must be at least 1, got 0"),
        (synth + ["--n", "4", "--seed", "-1"], "--seed must be at least 0, got -1"),
    ]
    for args, said in cases:
        result = runner.invoke(app, args, terminal_width=400)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0] == f"error: {said}", (args, result.output)
    assert not (tmp_path / "run").exists() and not (tmp_path / "set").exists()


def test_eval_refuses_data_of_another_kind_and_a_confusion_png_for_an_mae(tmp_path):
    from radiofm.training.synth import synthesize

    synthesize("csi-har", 2, tmp_path / "csi", workers=1, progress=False)
    result = runner.invoke(app, ["eval", "msm-nano", "--data", str(tmp_path / "csi")], terminal_width=400)
    assert result.exit_code == 1, result.output
    line = " ".join(result.output.split())
    assert line.startswith("error: ") and "holds CSI amplitudes" in line and "msm-nano (mae) takes power spectrograms" in line
    assert "reconstruction MSE" not in line

    png = tmp_path / "cm.png"
    result = runner.invoke(app, ["eval", "msm-nano", "--data", str(tmp_path / "csi"), "--png", str(png)],
                           terminal_width=400)
    assert result.exit_code == 1 and not png.exists()
    assert "--png" in result.output and "msm-nano is an MAE" in result.output and "no confusion matrix" in result.output


@pytest.mark.parametrize("rank, printed", [(None, True), ("0", True), ("1", False)])
def test_train_says_which_model_it_wrote_once_under_torchrun(tmp_path, monkeypatch, rank, printed):
    import radiofm.training.pretrain as pretrain

    monkeypatch.setattr(pretrain, "pretrain", lambda *args, **kwargs: tmp_path / "run" / "final")
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    result = runner.invoke(app, ["train", "pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "-e", "1"])
    assert result.exit_code == 0, result.output
    flat = "".join(result.output.split())  # the console wraps long paths
    assert (f"wrote{tmp_path / 'run' / 'final'}" in flat) == printed, result.output
