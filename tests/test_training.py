"""The training loop: DDP agreement, exact resume, linear probing, crash-safe checkpoints, evaluation.

Everything runs a vit-micro (32x32, patch 8) on a few tiny datasets written in real on-disk layouts
(float TIFF class folders, MATLAB LTE/NR frames), with one torch thread per process.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from radiofm.checkpoint import load_model, save_model
from radiofm.cli import app
from radiofm.config import preset
from radiofm.model import build_model
from radiofm.training.finetune import adapt_patch_embed, finetune
from radiofm.training.loop import TrainConfig
from radiofm.training.optim import lr_at, param_groups
from radiofm.training.pretrain import pretrain
from radiofm.training.state import STATE_FILE, load_state, save_state

runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _power(rng, bright_rows):
    x = rng.exponential(1e-3, (32, 32)).astype(np.float32)
    x[bright_rows] *= 1e3
    return x


@pytest.fixture(scope="module")
def classify_dir(tmp_path_factory):
    """Two classes of 32x32 power spectrograms: a bright band low or high in frequency."""
    from PIL import Image

    root = tmp_path_factory.mktemp("classify")
    rng = np.random.default_rng(0)
    for c, band in enumerate((slice(4, 10), slice(20, 26))):
        (root / f"class{c}").mkdir()
        for i in range(8):
            Image.fromarray(_power(rng, band), mode="F").save(root / f"class{c}" / f"{i}.tif")
    return root


@pytest.fixture(scope="module")
def segment_dir(tmp_path_factory):
    """MATLAB LTE/NR layout: a band of NR (127) or LTE (255) pixels on noise."""
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("segment")
    rng = np.random.default_rng(1)
    for i in range(8):
        lo = int(rng.integers(0, 20))
        labels = np.zeros((32, 32), np.uint8)
        labels[lo : lo + 8] = 127 if i % 2 else 255
        x = _power(rng, slice(lo, lo + 8))
        savemat(root / f"LTE_NR_spect_frame_{i}.mat", {"rxSpectrogram": x})
        savemat(root / f"LTE_NR_labels_frame_{i}.mat", {"data": labels})
    return root


def _tc(out, **kw):
    base = dict(out=out, epochs=2, batch_size=4, warmup_epochs=0.5, seed=3, threads=1, progress=False)
    return TrainConfig(**{**base, **kw})


def _weights(run):
    return load_file(str(run / "final" / "model.safetensors"))


# --------------------------------------------------------------------------- optimizer and schedule
def test_param_groups_skip_decay_on_norms_biases_and_tokens_and_decay_layers():
    model = build_model(preset("vit-micro", task="classify", num_classes=2))
    groups = param_groups(model, 0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    for name in ("cls_token", "blocks.0.norm1.weight", "blocks.1.attn.qkv.bias", "head.bias"):
        assert by_name[name]["weight_decay"] == 0.0
    for name in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "head.weight"):
        assert by_name[name]["weight_decay"] == 0.05
    assert "pos_embed" not in by_name  # fixed sin-cos table, never trained
    # depth 2: head at 1, block 1 at 0.5, block 0 at 0.25, patch embedding at 0.125
    scales = [by_name[n]["lr_scale"] for n in ("head.weight", "blocks.1.mlp.fc1.weight", "blocks.0.mlp.fc1.weight",
                                               "patch_embed.proj.weight")]
    assert scales == [1.0, 0.5, 0.25, 0.125]


def test_lr_schedule_warms_up_linearly_then_follows_a_cosine():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0, 0.01) == pytest.approx(0.01)


# --------------------------------------------------------------------------- resume and checkpoints
def test_a_run_stopped_mid_epoch_and_resumed_ends_with_the_uninterrupted_weights(classify_dir, tmp_path):
    # MAE pretraining: the masks and the data order are random, so only exact RNG bookkeeping passes.
    whole = tmp_path / "whole"
    pretrain(classify_dir, "vit-micro", 0.75, _tc(whole), sample_every=0)
    broken = tmp_path / "broken"
    # 4 steps per epoch; the checkpoint at step 3 is mid-epoch, the "kill" at step 6 loses steps 4-6.
    pretrain(classify_dir, "vit-micro", 0.75, _tc(broken, ckpt_every=3, stop_after=6), sample_every=0)
    assert not (broken / "final").exists()
    steps_logged = [json.loads(line)["step"] for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert max(steps_logged) > 3
    pretrain(classify_dir, "vit-micro", 0.75, _tc(broken, ckpt_every=3), sample_every=0)
    a, b = _weights(whole), _weights(broken)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line)["step"] for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(logged)  # records of the lost steps were dropped on resume, not duplicated


def test_finetune_with_drop_path_resumes_exactly(classify_dir, tmp_path):
    kw = dict(task="classify", data=classify_dir, model="vit-micro", drop_path=0.2)
    finetune(tc=_tc(tmp_path / "whole"), **kw)
    finetune(tc=_tc(tmp_path / "broken", ckpt_every=2, stop_after=5), **kw)
    finetune(tc=_tc(tmp_path / "broken", ckpt_every=2), **kw)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "broken")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_other_settings_is_refused(classify_dir, tmp_path):
    pretrain(classify_dir, "vit-micro", 0.75, _tc(tmp_path / "r", epochs=1), sample_every=0)
    with pytest.raises(ValueError, match="resume it unchanged"):
        pretrain(classify_dir, "vit-micro", 0.75, _tc(tmp_path / "r", epochs=1, batch_size=8), sample_every=0)


_WRITER = """
import sys, torch
from radiofm.training.state import save_state
model = torch.nn.Linear(1024, 1024)
opt = torch.optim.AdamW(model.parameters())
model(torch.ones(1, 1024)).sum().backward()
opt.step()
for i in range(1, 10**6):
    with torch.no_grad():
        model.weight.fill_(i)
    save_state(sys.argv[1], model, opt, {"step": i})
    print(i, flush=True)
"""


def test_a_crash_while_writing_leaves_the_last_checkpoint_whole(tmp_path):
    # A process rewrites a 4 MB checkpoint in a loop and is killed (SIGKILL) at an arbitrary moment,
    # most likely mid-write; what is on disk must still load, with the model and step of one save.
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "last")], stdout=subprocess.PIPE,
                            env=ENV, text=True)
    for _ in range(3):
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    model = torch.nn.Linear(1024, 1024)
    info = load_state(tmp_path / "last", model, torch.optim.AdamW(model.parameters()))
    assert info["step"] >= 3
    assert torch.all(model.weight == info["step"])
    assert [p.name for p in (tmp_path / "last").iterdir() if not p.name.startswith(".")] == [STATE_FILE]


def test_state_round_trip_restores_optimizer_moments(tmp_path):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    save_state(tmp_path, model, opt, {"step": 1})
    model2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    assert load_state(tmp_path, model2, opt2) == {"step": 1}
    for p, q in zip(opt.state.values(), opt2.state.values()):
        assert all(torch.equal(p[k], q[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


# --------------------------------------------------------------------------- DDP
def test_two_torchrun_processes_agree_with_one_process_on_the_same_global_batch(classify_dir, tmp_path):
    finetune("classify", classify_dir, _tc(tmp_path / "one", batch_size=8, seed=5, warmup_epochs=0.2, layer_decay=0.75),
             model="vit-micro", drop_path=0.0)
    common = ["train", "finetune", "--task", "classify", "--model", "vit-micro", "--data", str(classify_dir),
              "--epochs", "2", "--drop-path", "0", "--seed", "5", "--threads", "1", "--no-progress"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(29500 + os.getpid() % 1000), "-m", "radiofm.cli", *common, "--batch", "4",
                          "--out", str(tmp_path / "two")], env=ENV, capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    init = build_model(preset("vit-micro", task="classify", num_classes=2)).state_dict()
    assert not torch.allclose(a["head.weight"], init["head.weight"])  # it trained
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    plan = json.loads((tmp_path / "two" / "args.json").read_text())["plan"]
    assert (plan["world"], plan["global_batch"]) == (2, 8)


# --------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def mae_folder(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(build_model(preset("vit-micro")), tmp_path_factory.mktemp("mae") / "model")


def test_linear_probe_leaves_patch_embedding_and_blocks_unchanged(classify_dir, mae_folder, tmp_path):
    finetune("classify", classify_dir, _tc(tmp_path / "lp"), init=str(mae_folder), mode="linear-probe")
    before, after = load_file(str(mae_folder / "model.safetensors")), _weights(tmp_path / "lp")
    frozen = [k for k in after if k.startswith(("patch_embed.", "blocks."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["cls_token"], after["cls_token"])  # not frozen, as in the paper's code
    cfg = load_model(tmp_path / "lp").cfg
    assert (cfg.task, cfg.labels, cfg.preprocess) == ("classify", ["class0", "class1"], load_model(mae_folder).cfg.preprocess)


def test_full_finetune_moves_the_encoder_and_label_fraction_subsets(classify_dir, mae_folder, tmp_path):
    finetune("classify", classify_dir, _tc(tmp_path / "ft", batch_size=2), init=str(mae_folder), label_fraction=0.25)
    before, after = load_file(str(mae_folder / "model.safetensors")), _weights(tmp_path / "ft")
    assert not torch.equal(before["blocks.0.attn.qkv.weight"], after["blocks.0.attn.qkv.weight"])
    assert json.loads((tmp_path / "ft" / "args.json").read_text())["plan"]["items"] == 4  # 2 of 8 per class


def test_finetune_on_another_input_grid_keeps_the_encoder_and_rebuilds_positions(classify_dir, mae_folder, tmp_path):
    finetune("classify", classify_dir, _tc(tmp_path / "g", epochs=1), init=str(mae_folder), mode="linear-probe",
             img_size=(64, 16))
    model = load_model(tmp_path / "g")
    assert model.cfg.img_size == (64, 16) and model.pos_embed.shape == (1, 1 + 8 * 2, 64)
    before = load_file(str(mae_folder / "model.safetensors"))
    assert torch.equal(model.blocks[1].mlp.fc2.weight, before["blocks.1.mlp.fc2.weight"])


def test_three_channel_patch_embedding_from_one_channel_embeds_equal_channels_alike():
    w = torch.randn(16, 1, 8, 8)
    w3 = adapt_patch_embed(w, 3, "init")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), w3), torch.nn.functional.conv2d(x, w))


def test_wrong_data_and_missing_init_give_clear_errors(classify_dir, segment_dir, tmp_path):
    with pytest.raises(ValueError, match="'classify' dataset; a 'segment' model needs segment data"):
        finetune("segment", classify_dir, _tc(tmp_path / "x"), model="vit-micro")
    with pytest.raises(FileNotFoundError, match="no model folder or zoo model named"):
        finetune("classify", classify_dir, _tc(tmp_path / "y"), init=str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="exactly one of --init"):
        finetune("classify", classify_dir, _tc(tmp_path / "z"))


# --------------------------------------------------------------------------- evaluation
def test_segment_finetune_and_eval_write_the_metrics_json_and_confusion_png(segment_dir, mae_folder, tmp_path):
    finetune("segment", segment_dir, _tc(tmp_path / "seg", epochs=1), init=str(mae_folder), class_weights="auto")
    args = json.loads((tmp_path / "seg" / "args.json").read_text())
    assert len(args["extra"]["class_weights_used"]) == 3
    result = runner.invoke(app, ["eval", str(tmp_path / "seg"), "--data", str(segment_dir), "--json",
                                 str(tmp_path / "m.json")], terminal_width=200)
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"accuracy", "mean_class_accuracy", "per_class_accuracy", "miou"} <= m.keys()
    assert list(m["per_class_accuracy"]) == ["noise", "NR", "LTE"]
    assert np.array(m["confusion_matrix"]).sum() == 8 * 32 * 32
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert "mIoU" in result.output


def test_eval_scores_what_is_deployed_an_export_or_another_precision(tmp_path):
    """`radiofm eval` on an exported file runs it on its own runtime and precision, and says which:
    an fp32 ONNX export makes torch's decisions; int8 and bf16 are scored on the same captures. An
    MAE is refused an export engine, with what to do instead."""
    from radiofm.export.onnx import export
    from radiofm.training.evaluate import evaluate
    from radiofm.training.synth import synthesize

    synthesize("signals", 24, tmp_path / "test", seed=5, workers=1, progress=False)
    export("signals-nano", tmp_path / "x", "int8", samples=16, batch_sizes=(1,))
    torch_fp32 = evaluate("signals-nano", tmp_path / "test")
    onnx_fp32 = evaluate(str(tmp_path / "x" / "model.onnx"), tmp_path / "test", batch_size=5)
    assert torch_fp32["engine"] == "torch (cpu, fp32)" and onnx_fp32["engine"].startswith("onnx (")
    assert onnx_fp32["engine"].endswith("fp32)") and onnx_fp32["items"] == torch_fp32["items"] == 24
    assert onnx_fp32["confusion_matrix"] == torch_fp32["confusion_matrix"]
    assert evaluate("signals-nano", tmp_path / "test", precision="bf16")["engine"] == "torch (cpu, bf16)"
    with pytest.raises(ValueError, match="is an MAE: it is scored by its reconstruction error"):
        evaluate("msm-nano", tmp_path / "test", engine="onnx")
    result = runner.invoke(app, ["eval", str(tmp_path / "x" / "model.int8.onnx"), "--data", str(tmp_path / "test"),
                                 "--json", str(tmp_path / "int8.json")], terminal_width=200)
    assert result.exit_code == 0, result.output
    int8 = json.loads((tmp_path / "int8.json").read_text())
    assert int8["engine"].endswith("int8)") and int8["model"] == str(tmp_path / "x" / "model.int8.onnx")
    assert sum(map(sum, int8["confusion_matrix"])) == 24 and (tmp_path / "int8.png").is_file()
    assert "on onnx (" in result.output
    refused = runner.invoke(app, ["eval", "signals-nano", "--data", str(tmp_path / "test"), "--engine", "tpu"])
    assert refused.exit_code == 1 and "--engine must be torch, onnx or trt, got 'tpu'" in refused.output


def test_eval_metrics_from_a_known_confusion():
    from radiofm.training.evaluate import accuracy_by_snr, classification_metrics, confusion

    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 2, 0])
    cm = confusion(pred, target, 3)
    m = classification_metrics(cm, ["a", "b", "c"], segment=True)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class_accuracy"] == pytest.approx({"a": 0.75, "b": 1.0, "c": 0.5})
    assert m["mean_class_accuracy"] == pytest.approx(0.75)
    assert m["per_class_iou"]["a"] == pytest.approx(3 / 5) and m["miou"] == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    bins = accuracy_by_snr(np.array([1, 0, 1, 1.0]), np.array([-3.0, 2.0, 12.0, np.nan]))
    assert bins == {"-5..0 dB": {"n": 1, "accuracy": 1.0}, "0..5 dB": {"n": 1, "accuracy": 0.0},
                    "10..15 dB": {"n": 1, "accuracy": 1.0}}


def test_pretrain_cli_writes_the_run_folder(classify_dir, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "pretrain", "--data", str(classify_dir), "--model", "vit-micro", "--epochs",
                                 "2", "--batch", "8", "--out", str(run), "--sample-every", "1", "--threads", "1",
                                 "--no-progress"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir()) == ["args.json", "final", "last", "metrics.jsonl", "samples"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert load_model(run).cfg.task == "mae"  # the run folder stands for its final model
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 4 and {"loss", "lr", "samples_per_s"} <= records[-1].keys()


@pytest.mark.parametrize("name, task", [("msm-nano", "mae"), ("signals-nano", "classify"), ("lte-nr-nano", "segment"),
                                        ("csi-har-nano", "classify")])
def test_zoo_models_load_by_name_and_stay_small(name, task):
    from radiofm.checkpoint import resolve_model_dir

    model = load_model(name)
    folder = resolve_model_dir(name)
    assert model.cfg.task == task
    assert (folder / "model.safetensors").stat().st_size <= 10 * 2**20
    assert "radiofm eval" in (folder / "README.md").read_text()


def test_zoo_signals_nano_meets_its_target_on_freshly_generated_captures(tmp_path):
    """The card's held-out set (800 captures, seed 103), generated here from scratch, scored as
    `radiofm eval` scores it: >= 90 % at SNR >= 10 dB, and the figures the card states."""
    from radiofm.checkpoint import resolve_model_dir
    from radiofm.training.evaluate import evaluate
    from radiofm.training.synth import synthesize

    synthesize("signals", 800, tmp_path / "test", seed=103, workers=2, progress=False)
    metrics = evaluate("signals-nano", tmp_path / "test")
    assert metrics["accuracy_snr_ge_10db"] >= 0.90
    card = (resolve_model_dir("signals-nano") / "README.md").read_text()
    assert f"accuracy {100 * metrics['accuracy']:.2f}%" in card
    assert f"accuracy at SNR >= 10 dB {100 * metrics['accuracy_snr_ge_10db']:.2f}%" in card


def test_zoo_csi_har_nano_scores_what_its_card_says_on_freshly_generated_recordings(tmp_path):
    """The card's held-out set (600 recordings, seed 103), generated here from scratch: at least 90 %,
    and the figures the card states, per activity too."""
    from radiofm.checkpoint import resolve_model_dir
    from radiofm.training.evaluate import evaluate
    from radiofm.training.synth import synthesize

    synthesize("csi-har", 600, tmp_path / "test", seed=103, workers=2, progress=False)
    metrics = evaluate("csi-har-nano", tmp_path / "test")
    assert metrics["accuracy"] >= 0.90
    card = (resolve_model_dir("csi-har-nano") / "README.md").read_text()
    assert f"accuracy {100 * metrics['accuracy']:.2f}%" in card
    for name, accuracy in metrics["per_class_accuracy"].items():
        assert f"│ {name:<6} │ {100 * accuracy:7.2f}% │" in card, name


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_prepared_data_is_the_same_from_forked_workers_and_serially(classify_dir, segment_dir, task, monkeypatch):
    from radiofm.training import prepared
    from radiofm.training.prepared import open_data, prepare_data

    monkeypatch.setattr(prepared, "_CHUNK", 3)  # 8 items -> 3 chunks, so the pool really splits them
    data = open_data(classify_dir if task == "classify" else segment_dir, task)
    cfg = preset("vit-micro", task=task, num_classes=2 if task == "classify" else 3)
    serial = prepare_data(data, cfg, workers=1)
    forked = prepare_data(data, cfg, workers=2)
    assert torch.equal(serial.x, forked.x) and torch.equal(serial.y, forked.y)
    assert serial.x.abs().sum() > 0 and len(torch.unique(serial.y)) >= 2  # filled, not left empty


# --------------------------------------------------------------------------- resume rules, stops, damage
def _mae_data(n=8):
    from radiofm.training.prepared import PreparedData

    return PreparedData(torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)), None, None, [])


def _train_mae(tc, loss_hook=None, on_epoch_end=None):
    """The loop on random 32x32 inputs with a vit-micro MAE; ``loss_hook(call, loss)`` may change a loss."""
    from radiofm.training.loop import train

    cfg = preset("vit-micro")
    torch.manual_seed(0)
    calls = []

    def loss_fn(m, x, _y, generator):
        loss = m(x, 0.75, generator)[0]
        calls.append(None)
        return loss if loss_hook is None else loss_hook(len(calls), loss)

    return train(build_model(cfg), cfg, _mae_data(), loss_fn, tc, on_epoch_end)


def _records(run):
    # parse_constant refuses NaN / Infinity: the file must be strict JSON
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON {c} in metrics.jsonl"))
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_refuses_every_changed_setting_and_names_it(classify_dir, tmp_path):
    run = tmp_path / "r"
    pretrain(classify_dir, "vit-micro", 0.75, _tc(run, epochs=1), sample_every=0)
    args = (run / "args.json").read_text()
    for change, kw, match in [
        ("model", dict(model="vit-pico"), r"--model vit-micro \(now vit-pico\)"),
        ("mask ratio", dict(mask_ratio=0.5), r"--mask-ratio 0.75 \(now 0.5\)"),
        ("pixel loss", dict(norm_pix_loss=True), r"--norm-pix-loss false \(now true\)"),
        ("blr", dict(tc=_tc(run, epochs=1, blr=2e-3)), r"--blr 0.001 \(now 0.002\)"),
        ("warmup", dict(tc=_tc(run, epochs=1, warmup_epochs=0)), r"--warmup-epochs 0.5 \(now 0\)"),
        ("accumulation", dict(tc=_tc(run, epochs=1, accum_steps=2, batch_size=2)), r"--accum 1 \(now 2\)"),
        ("data", dict(data=tmp_path), r"--data \S+classify\S* \(now \S+\)"),
    ]:
        call = {**dict(data=classify_dir, model="vit-micro", mask_ratio=0.75, tc=_tc(run, epochs=1)), **kw}
        with pytest.raises(ValueError, match=match) as e:
            pretrain(call.pop("data"), call.pop("model"), call.pop("mask_ratio"), call.pop("tc"), sample_every=0,
                     **call)
        assert "use a new --out" in str(e.value) and "\n" not in str(e.value), change
    assert (run / "args.json").read_text() == args  # a refused resume leaves the record alone
    # What does not shape the weights may change: checkpoint frequency, threads, PNGs.
    pretrain(classify_dir, "vit-micro", 0.75, _tc(run, epochs=1, ckpt_every=1, threads=2), sample_every=1)


def test_finetune_resume_refuses_another_mode_or_label_fraction(classify_dir, mae_folder, tmp_path):
    run = tmp_path / "ft"
    finetune("classify", classify_dir, _tc(run, epochs=1), init=str(mae_folder))
    with pytest.raises(ValueError, match=r"--mode full \(now linear-probe\)"):
        finetune("classify", classify_dir, _tc(run, epochs=1), init=str(mae_folder), mode="linear-probe")
    with pytest.raises(ValueError, match=r"--label-fraction 1.0 \(now 0.5\)"):
        finetune("classify", classify_dir, _tc(run, epochs=1), init=str(mae_folder), label_fraction=0.5)
    with pytest.raises(ValueError, match=r"--init \S+ \(now unset\), --model unset \(now vit-micro\)"):
        finetune("classify", classify_dir, _tc(run, epochs=1), model="vit-micro")


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path):
    small, other = build_model(preset("vit-micro")), build_model(preset("vit-micro", task="classify", num_classes=2))
    save_state(tmp_path, small, torch.optim.AdamW(small.parameters()), {"step": 1})
    with pytest.raises(ValueError, match="holds the weights of another model"):
        load_state(tmp_path, other, torch.optim.AdamW(other.parameters()))


def test_mask_ratio_and_numeric_options_are_checked_before_any_data_work(classify_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--mask-ratio \(mask_ratio\) must be in \(0, 1\)"):
        pretrain(classify_dir, "vit-micro", 0.0, _tc(tmp_path / "a"))
    with pytest.raises(ValueError, match="--sample-every"):
        pretrain(classify_dir, "vit-micro", 0.75, _tc(tmp_path / "a"), sample_every=-1)
    for kw, match in [(dict(lr=-1.0), "--lr must be a positive number, got -1"), (dict(blr=0.0), "--blr"),
                      (dict(warmup_epochs=-1.0), "--warmup-epochs"), (dict(ckpt_every=-1), "--ckpt-every"),
                      (dict(min_lr=float("nan")), "--min-lr"), (dict(layer_decay=1.5), "--layer-decay"),
                      (dict(weight_decay=-0.1), "--weight-decay"), (dict(epochs=0), "--epochs")]:
        with pytest.raises(ValueError, match=match):
            finetune("classify", classify_dir, _tc(tmp_path / "b", **kw), model="vit-micro")
        with pytest.raises(ValueError, match=match):
            pretrain(classify_dir, "vit-micro", 0.75, _tc(tmp_path / "c", **kw))
    with pytest.raises(ValueError, match=r"--drop-path must be in \[0, 1\)"):
        finetune("classify", classify_dir, _tc(tmp_path / "b"), model="vit-micro", drop_path=1.5)
    with pytest.raises(ValueError, match="--label-fraction"):
        finetune("classify", classify_dir, _tc(tmp_path / "b"), model="vit-micro", label_fraction=0)
    with pytest.raises(ValueError, match="--class-weights weights the per-pixel loss of --task segment"):
        finetune("classify", classify_dir, _tc(tmp_path / "b"), model="vit-micro", class_weights="auto")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "nan"
    # 8 items, batch 4: 2 steps per epoch, a checkpoint every epoch; the 3rd step's loss is NaN.
    with pytest.raises(ValueError, match=r"the loss is nan at step 3 \(epoch 2 of 2\).*step 2\) is kept.*"
                                         r"Lower the learning rate.*new --out"):
        _train_mae(_tc(run, log_every=1), loss_hook=lambda call, loss: loss * float("nan") if call == 3 else loss)
    assert not (run / "final").exists()
    assert [r["step"] for r in _records(run)] == [1, 2]
    from radiofm.training.state import read_info

    assert read_info(run / "last")["step"] == 2


def test_an_interrupted_run_saves_its_step_and_resumes_to_the_uninterrupted_result(classify_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    from radiofm.training import loop

    def run(out, **kw):
        return pretrain(classify_dir, "vit-micro", 0.75, _tc(out, log_every=3, **kw), sample_every=0)

    run(tmp_path / "whole")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    lr_at = loop.lr_at

    def ctrl_c_at_step_4(step, *args):  # Ctrl-C while the 5th optimizer step (index 4) is under way
        if step == 4:
            signal.raise_signal(signal.SIGINT)
        return lr_at(step, *args)

    monkeypatch.setattr(loop, "lr_at", ctrl_c_at_step_4)
    with pytest.raises(loop.Interrupted) as e:
        run(tmp_path / "broken")
    assert (e.value.code, e.value.step) == (130, 5)
    assert "interrupted at step 5 (epoch 1.25)" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert not (tmp_path / "broken" / "final").exists()
    monkeypatch.setattr(loop, "lr_at", lr_at)
    run(tmp_path / "broken")
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "broken")
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("step", "epoch", "loss", "lr")  # the timings differ; the log window was carried over
    assert [[r[k] for k in keys] for r in _records(tmp_path / "whole")] == \
           [[r[k] for k in keys] for r in _records(tmp_path / "broken")]


def test_sigterm_stops_with_status_143_and_a_checkpoint(tmp_path):
    from radiofm.training.loop import Interrupted
    from radiofm.training.state import read_info

    def term_at_call_2(call, loss):
        if call == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    with pytest.raises(Interrupted) as e:
        _train_mae(_tc(tmp_path / "t", ckpt_every=100), loss_hook=term_at_call_2)
    assert e.value.code == 143 and read_info(tmp_path / "t" / "last")["step"] == 2


def test_pretraining_on_csi_takes_the_antennas_as_channels(tmp_path):
    from radiofm.training.synth import synthesize

    synthesize("csi-har", 8, tmp_path / "csi", seed=1, progress=False)
    pretrain(tmp_path / "csi", "vit-micro", 0.75, _tc(tmp_path / "run", epochs=1), sample_every=1)
    model = load_model(tmp_path / "run")
    assert (model.cfg.in_chans, model.cfg.preprocess.kind, len(model.cfg.preprocess.mean)) == (3, "csi", 3)
    assert model.cfg.preprocess.capture_samples == 500  # packets per recording: stream_csi's window
    assert (tmp_path / "run" / "samples" / "epoch_001.png").is_file()


def test_a_partial_last_metrics_line_is_dropped_on_resume_and_other_damage_named(classify_dir, tmp_path, capsys):
    run = tmp_path / "m"
    pretrain(classify_dir, "vit-micro", 0.75, _tc(run, log_every=1, ckpt_every=3, stop_after=5), sample_every=0)
    metrics = run / "metrics.jsonl"
    good = metrics.read_text()
    metrics.write_text(good + '{"step": 6, "lo')  # a write cut short
    pretrain(classify_dir, "vit-micro", 0.75, _tc(run, log_every=1, ckpt_every=3), sample_every=0)
    assert "dropped the partial last line 6" in capsys.readouterr().err
    assert [r["step"] for r in _records(run)] == list(range(1, 9))
    lines = good.splitlines()
    metrics.write_text("\n".join([lines[0], "{oops", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a metrics record"):
        pretrain(classify_dir, "vit-micro", 0.75, _tc(run, log_every=1, ckpt_every=3), sample_every=0)


def test_an_unfinished_run_as_init_says_to_resume_it(classify_dir, tmp_path):
    run = tmp_path / "unfinished"
    pretrain(classify_dir, "vit-micro", 0.75, _tc(run, ckpt_every=2, stop_after=3), sample_every=0)
    with pytest.raises(ValueError, match=r"has not finished \(last checkpoint at step 2 of 8\).*same train command"):
        finetune("classify", classify_dir, _tc(tmp_path / "ft"), init=str(run))
    # Opening it as a model (eval, export, the SDK) says the same.
    from radiofm.checkpoint import resolve_model_dir

    with pytest.raises(FileNotFoundError, match=r"has not finished \(last checkpoint at step 2 of 8\)"):
        resolve_model_dir(run)


def test_throughput_leaves_out_the_epoch_end_work(tmp_path):
    def slow_png(_model, _epoch):
        time.sleep(1.0)  # as drawing reconstructions takes time that is not training

    _train_mae(_tc(tmp_path / "s", epochs=3), on_epoch_end=slow_png)
    rates = [r["samples_per_s"] for r in _records(tmp_path / "s")]
    assert len(rates) == 3 and min(rates) > 16  # 8 samples per epoch: with the hook's second in it, under 8


def test_cut_short_pads_a_share_of_the_samples_as_the_sdk_pads_a_short_capture():
    from radiofm.training.finetune import cut_short

    x = torch.randn(64, 3, 16, 40)  # a 2 x 5 grid of 8-pixel patches
    g = torch.Generator().manual_seed(0)
    cut, valid = cut_short(x, (2, 5), 8, 1.0, g)
    cols = valid.reshape(64, 2, 5)[:, 0].sum(1)
    assert set(cols.tolist()) == {1, 2, 3, 4}  # every sample short, by 1..W-1 patch columns
    for n, c in enumerate(cols.tolist()):
        assert valid.reshape(64, 2, 5)[n].tolist() == [[True] * c + [False] * (5 - c)] * 2
        assert torch.equal(cut[n, ..., : 8 * c], x[n, ..., : 8 * c]) and not cut[n, ..., 8 * c:].any()
    kept, all_valid = cut_short(x, (2, 5), 8, 0.0, g)
    assert torch.equal(kept, x) and all_valid.all()
    half = cut_short(x, (2, 5), 8, 0.5, torch.Generator().manual_seed(1))[1].reshape(64, -1).all(1).float().mean()
    assert 0.3 < half < 0.7


def test_finetune_with_short_captures_trains_on_padded_input_and_checks_its_option(classify_dir, segment_dir, tmp_path):
    finetune("classify", classify_dir, _tc(tmp_path / "a", epochs=1), model="vit-micro", short_captures=0.5)
    finetune("classify", classify_dir, _tc(tmp_path / "b", epochs=1), model="vit-micro")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert not torch.equal(a["head.weight"], b["head.weight"])  # the cut samples changed what was learnt
    assert json.loads((tmp_path / "a" / "args.json").read_text())["settings"]["--short-captures"] == 0.5
    with pytest.raises(ValueError, match=r"--short-captures 0.5 \(now 0.0\)"):
        finetune("classify", classify_dir, _tc(tmp_path / "a", epochs=2), model="vit-micro")
    kw = dict(task="classify", data=classify_dir, model="vit-micro", short_captures=0.5)
    finetune(tc=_tc(tmp_path / "whole"), **kw)
    finetune(tc=_tc(tmp_path / "broken", ckpt_every=2, stop_after=3), **kw)
    finetune(tc=_tc(tmp_path / "broken", ckpt_every=2), **kw)  # resumed: the same cuts as an unbroken run
    whole, broken = _weights(tmp_path / "whole"), _weights(tmp_path / "broken")
    assert all(torch.equal(whole[k], broken[k]) for k in whole)
    with pytest.raises(ValueError, match="--short-captures must be in \\[0, 1\\]"):
        finetune("classify", classify_dir, _tc(tmp_path / "c"), model="vit-micro", short_captures=1.5)
    with pytest.raises(ValueError, match="leave it at 0 for --task segment"):
        finetune("segment", segment_dir, _tc(tmp_path / "d"), model="vit-micro", short_captures=0.5)
