import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from radiofm.benchmarks.bench import BenchError, BenchSettings, add_agreement, plan, trt_missing
from radiofm.benchmarks.machine import cpu_ops_per_cycle, cpu_peak
from radiofm.cli import app

ONNX_EXPORT = importlib.util.find_spec("radiofm.export.onnx") is not None


def test_bench_cli_writes_json_table_and_plot(tmp_path):
    engines = ["torch", "onnx"] if ONNX_EXPORT else ["torch"]
    out = tmp_path / "bench.json"
    args = ["bench", "vit-micro", "--precision", "fp32", "--batch", "1", "--batch", "2", "--warmup", "1",
            "--repeat", "2", "--threads", "1", "--json", str(out), "--plot", str(tmp_path / "bench.png")]
    for engine in engines:
        args += ["--engine", engine]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output

    doc = json.loads(out.read_text())
    assert [(r["engine"], r["batch"]) for r in doc["results"]] == [(e, b) for e in engines for b in (1, 2)]
    for r in doc["results"]:
        assert r["model"] == "vit-micro" and r["precision"] == "fp32"
        assert len(r["latencies_ms"]) == 2
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= max(r["latencies_ms"]) + 1e-6
        assert r["throughput"] > 0 and r["peak_rss_mb"] > 0 and r["gflops"] > 0
        assert 0 < r["fraction_of_peak"] < 1
        assert r["threads"]["requested"] == 1
    assert doc["settings"]["threads"] == 1
    assert doc["models"][0]["weights"] == "random" and doc["models"][0]["flops_per_forward"] > 0
    cpu = doc["machine"]["cpu"]
    assert cpu["cores"] >= 1 and {"avx512f", "amx_bf16", "amx_int8"} <= set(cpu["flags"])
    assert "torch" in doc["machine"]["libraries"]

    table = (tmp_path / "bench.md").read_text()
    assert table.count("| vit-micro |") == len(doc["results"]) and "p99 ms" in table
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not ONNX_EXPORT, reason="radiofm.export is not installed")
@pytest.mark.parametrize("scope", [None, "partial"])
def test_int8_scope_reaches_the_export_the_records_and_the_table(tmp_path, scope):
    from radiofm.benchmarks.bench import run_bench
    from radiofm.benchmarks.report import markdown

    settings = BenchSettings(["vit-micro"], ["onnx"], ["int8"], warmup=0, repeat=1, threads=1, work=str(tmp_path),
                             **({"int8_scope": scope} if scope else {}))
    doc = run_bench(settings, log=lambda _: None)
    record, = doc["results"]
    expected = scope or "full"  # the default, as radiofm export's
    assert record["int8_scope"] == expected and record["export_method"] == "dynamic"
    report = json.loads((tmp_path / ("vit-micro-onnx-full" if expected == "full" else "vit-micro-onnx")
                         / "onnx.json").read_text())
    assert report["int8"]["scope"] == expected
    assert (report["int8"]["smoothing"]["alpha"] > 0) if expected == "full" else report["int8"]["smoothing"] is None
    assert f"| int8 (dynamic, {expected}) |" in markdown(doc)


def test_unsupported_pairs_are_skipped_with_a_reason():
    pairs, skipped = plan(BenchSettings(["vit-micro"], ["torch", "onnx"], ["fp32", "bf16", "int8", "fp16"]))
    assert pairs == [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("onnx", "fp16")]
    reasons = {(s["engine"], s["precision"]): s["reason"] for s in skipped}
    assert set(reasons) == {("torch", "int8"), ("torch", "fp16"), ("onnx", "bf16")}
    assert "CUDA" in reasons[("torch", "fp16")]


def test_cuda_graph_engines_need_cuda():
    pairs, skipped = plan(BenchSettings(["vit-micro"], ["torch-graph", "torch-triton"], ["fp16"]))
    assert pairs == [] and all("--device cuda" in s["reason"] for s in skipped)
    pairs, skipped = plan(BenchSettings(["vit-micro"], ["torch-graph", "torch-triton"], ["fp16"], device="cuda"))
    assert pairs == [("torch-graph", "fp16"), ("torch-triton", "fp16")] and not skipped


def test_tensorrt_runs_where_it_can_and_is_skipped_with_what_is_missing_elsewhere():
    pairs, skipped = plan(BenchSettings(["vit-micro"], ["torch", "trt"], ["fp32", "bf16"]))
    assert pairs == [("torch", "fp32"), ("torch", "bf16")]
    reasons = {(s["engine"], s["precision"]): s["reason"] for s in skipped}
    assert "--device cuda" in reasons[("trt", "fp32")] and "has no bf16" in reasons[("trt", "bf16")]
    pairs, skipped = plan(BenchSettings(["vit-micro"], ["trt"], ["fp16", "int8"], device="cuda"))
    missing = trt_missing()
    if missing is None:  # TensorRT and a GPU: both precisions are built and timed
        assert pairs == [("trt", "fp16"), ("trt", "int8")] and not skipped
    else:
        assert pairs == [] and [s["reason"] for s in skipped] == [missing, missing]
        assert 'pip install "radiofm[gpu]"' in missing


@pytest.mark.gpu
@pytest.mark.skipif(trt_missing() is not None, reason=f"builds TensorRT plans: {trt_missing()}")
def test_tensorrt_bench_builds_its_plans_and_refuses_int8_without_calibration(tmp_path):
    from radiofm.benchmarks.bench import prepare_subject, trt_plans

    subject = prepare_subject("vit-micro", tmp_path, lambda m: None)
    trt_plans(subject, ["fp16", "int8"], [1, 4], tmp_path, None, lambda m: None)
    assert subject.plans["fp16"].is_file() and subject.plan_info["fp16"]["plan_profile"]["max"] == 4
    assert "--calib" in subject.plan_unavailable["int8"]


@pytest.mark.parametrize("settings", [
    BenchSettings(["vit-micro"], engines=["tensorflow"]),
    BenchSettings(["vit-micro"], precisions=["int4"]),
    BenchSettings(["vit-micro"], batches=[0]),
    BenchSettings(["vit-micro"], int8_scope="most"),
    BenchSettings(["vit-micro"], calib="data", calib_method="entropy"),
    BenchSettings(["vit-micro"], calib_method="minmax"),  # a method with no data to calibrate on
])
def test_bad_settings_are_refused(settings):
    with pytest.raises(BenchError):
        settings.check()


def test_a_kept_tensorrt_plan_is_reused_only_if_it_is_what_bench_would_build():
    """The work folder's plan stands in for a build only while its profile covers the batches and, for
    int8, its sidecar says it was quantised in the scope and calibrated by the method asked for."""
    from types import SimpleNamespace

    from radiofm.benchmarks.bench import plan_fits

    profile = SimpleNamespace(min=1, opt=8, max=8)
    made = {"method": "static", "scope": "full", "calibration": {"method": "percentile", "percentile": 99.999}}
    sidecar = {"profile": {"min": 1, "opt": 8, "max": 16}, "int8": made}
    assert plan_fits(sidecar, profile, "int8", "full", "percentile")
    assert plan_fits(sidecar, profile, "fp16", "partial", "minmax")  # scope and method are int8's alone
    assert not plan_fits(sidecar, profile, "int8", "partial", "percentile")
    assert not plan_fits(sidecar, profile, "int8", "full", "minmax")
    assert not plan_fits({**sidecar, "profile": {"min": 1, "opt": 4, "max": 4}}, profile, "fp16", "full", "percentile")
    assert not plan_fits({"profile": sidecar["profile"]}, profile, "int8", "full", "percentile")  # made how: unknown
    assert not plan_fits(None, profile, "fp16", "full", "percentile")


def test_peak_follows_the_widest_unit():
    flags = dict.fromkeys(["avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                           "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"], False)
    avx2 = {"vendor": "AuthenticAMD", "family": "25", "cores": 2, "mhz": 2500.0, "mhz_source": "test",
            "flags": {**flags, "avx2": True, "fma": True}}
    amx = {**avx2, "vendor": "GenuineIntel", "family": "6",
           "flags": {**flags, "avx2": True, "fma": True, "avx512f": True, "avx512_vnni": True, "amx_bf16": True,
                     "amx_int8": True}}
    assert cpu_ops_per_cycle(avx2, "fp32")[0] == 32 and cpu_ops_per_cycle(avx2, "bf16")[0] == 32
    assert cpu_ops_per_cycle(avx2, "int8")[0] == 64
    assert [cpu_ops_per_cycle(amx, p)[0] for p in ("fp32", "bf16", "int8")] == [64, 1024, 2048]
    assert cpu_peak(avx2, "fp32")["peak_gflops"] == pytest.approx(2 * 2.5 * 32)


def test_agreement_is_against_fp32_and_copied_to_other_batches(tmp_path):
    def record(engine, precision, batch, preds=None):
        r = {"engine": engine, "precision": precision, "batch": batch}
        if preds is not None:
            path = tmp_path / f"{engine}-{precision}.npy"
            np.save(path, np.asarray(preds))
            r.update(predictions_file=str(path), accuracy=0.5, eval_batch=batch)
        return r

    records = [record("onnx", "int8", 1, [0, 1, 1, 0]), record("torch", "fp32", 1, [0, 1, 2, 0]),
               record("onnx", "int8", 8)]
    add_agreement(records)
    assert records[0]["agreement_vs_fp32"] == 0.75 and records[0]["agreement_reference"] == "torch fp32"
    assert records[1]["agreement_vs_fp32"] == 1.0
    assert records[2]["agreement_vs_fp32"] == 0.75 and records[2]["eval_batch"] == 1
    assert all("predictions_file" not in r for r in records)


@pytest.mark.skipif(not ONNX_EXPORT, reason="radiofm.export is not installed")
def test_a_zoo_model_is_timed_on_the_export_radiofm_export_made(tmp_path, monkeypatch):
    from radiofm.benchmarks.bench import run_bench
    from radiofm.checkpoint import ZOO_DIR, exports_dir
    from radiofm.export.onnx import export

    monkeypatch.setenv("RADIOFM_CACHE", str(tmp_path / "cache"))
    export("signals-nano", samples=2, batch_sizes=(1,))
    lines = []
    settings = BenchSettings(["signals-nano"], ["onnx"], ["fp32"], warmup=0, repeat=1, threads=1,
                             work=str(tmp_path / "work"))
    doc = run_bench(settings, log=lines.append)
    assert [r["engine"] for r in doc["results"]] == ["onnx"]
    assert not any("exporting" in line for line in lines), lines
    assert not list((tmp_path / "work").glob("signals-nano-onnx*"))
    assert (exports_dir(ZOO_DIR / "signals-nano") / "model.onnx").is_file()


@pytest.mark.skipif(not ONNX_EXPORT, reason="radiofm.export is not installed")
@pytest.mark.parametrize("change", ["weights", "config"])
def test_a_stale_export_beside_the_model_is_exported_afresh_not_timed(tmp_path, change):
    """New weights, or an edited config.json, in a folder whose model.onnx came from the old ones:
    bench must not time (and report as passed) the old graph."""
    import torch

    from radiofm.benchmarks.bench import run_bench
    from radiofm.checkpoint import save_model, sha256_file
    from radiofm.config import preset
    from radiofm.engines import recorded_config, recorded_source
    from radiofm.export.onnx import export
    from radiofm.model import build_model

    cfg = preset("vit-micro", task="classify", num_classes=3)
    for seed in (0, 1):
        torch.manual_seed(seed if change == "weights" else 0)
        folder = save_model(build_model(cfg), tmp_path / "m", cfg if seed == 0 or change == "weights"
                            else cfg.replace(labels=["noise", "lte", "nr"]))
        if seed == 0:
            export(folder, samples=2, batch_sizes=(1,))
    lines = []
    settings = BenchSettings([str(folder)], ["onnx"], ["fp32"], warmup=0, repeat=1, threads=1,
                             work=str(tmp_path / "work"))
    doc = run_bench(settings, log=lines.append)
    timed = doc["models"][0]["onnx_files"]["fp32"]
    assert timed.startswith(str(tmp_path / "work")), timed
    assert recorded_source(timed) == sha256_file(folder / "model.safetensors")
    assert recorded_config(timed)["labels"] == ([] if change == "weights" else ["noise", "lte", "nr"])
    assert any("stale" in line for line in lines) and any("exporting" in line for line in lines), lines
    assert doc["results"][0]["export_passed"] is True
    # validated as `radiofm export` validates a trained classifier, not on a handful of inputs
    from radiofm.export import read_report
    from radiofm.export.onnx import default_samples

    entry = read_report(Path(timed).parent)["fp32"]
    assert entry["validation"]["samples"] == default_samples(cfg)


@pytest.mark.skipif(not ONNX_EXPORT, reason="needs radiofm.export (torch and onnx)")
def test_bench_times_static_int8_calibrated_the_default_way_and_reuses_it(tmp_path):
    """A static int8 export kept in the work folder is timed again only while it is what bench would make
    now: one calibrated another way (minmax, as exports were before percentile) is exported afresh."""
    from radiofm.benchmarks.bench import onnx_files, prepare_subject
    from radiofm.engines import DEFAULT_CALIB_METHOD
    from radiofm.export import read_report
    from radiofm.export.onnx import export
    from radiofm.training.synth import synthesize

    synthesize("signals", 8, tmp_path / "calib", seed=3, progress=False)
    subject = prepare_subject("vit-micro", tmp_path, lambda m: None)
    out = tmp_path / f"{subject.folder.name}-onnx-static-full"
    export(subject.folder, out, "int8", calib=tmp_path / "calib", calib_method="minmax", samples=4, batch_sizes=(1,))
    logged = []
    onnx_files(subject, ["int8"], tmp_path, str(tmp_path / "calib"), logged.append)
    assert subject.onnx["int8"] == out / "model.int8.onnx" and any("exporting ONNX int8" in m for m in logged)
    assert read_report(out)["int8"]["calibration"]["method"] == DEFAULT_CALIB_METHOD
    logged.clear()
    onnx_files(subject, ["int8"], tmp_path, str(tmp_path / "calib"), logged.append)  # now it is: reused
    assert subject.onnx["int8"] == out / "model.int8.onnx" and not any("exporting" in m for m in logged)


@pytest.mark.skipif(not ONNX_EXPORT, reason="needs radiofm.export (torch and onnx)")
def test_calib_method_reaches_the_static_export_the_records_and_the_table(tmp_path):
    """`--calib-method minmax` times a static export calibrated that way, kept in its own work folder so
    that a run with the default method neither reuses nor overwrites it; each row says how it was made."""
    from radiofm.benchmarks.bench import run_bench
    from radiofm.benchmarks.report import markdown
    from radiofm.export import read_report
    from radiofm.training.synth import synthesize

    synthesize("signals", 8, tmp_path / "calib", seed=3, progress=False)
    work = tmp_path / "work"
    docs, logs = {}, {}
    for method in ("minmax", "percentile", "minmax"):
        logs[method] = []
        settings = BenchSettings(["vit-micro"], ["onnx"], ["int8"], warmup=0, repeat=1, threads=1, work=str(work),
                                 calib=str(tmp_path / "calib"), calib_method=method)
        docs[method] = run_bench(settings, log=logs[method].append)
    assert not any("exporting" in m for m in logs["minmax"]), logs["minmax"]  # the second minmax run reused its own
    for method, folder in (("minmax", "vit-micro-onnx-static-minmax-full"), ("percentile", "vit-micro-onnx-static-full")):
        record, = docs[method]["results"]
        assert record["calib_method"] == method and record["export_method"] == "static"
        assert docs[method]["models"][0]["onnx_files"]["int8"] == str(work / folder / "model.int8.onnx")
        assert read_report(work / folder)["int8"]["calibration"]["method"] == method
        assert f"| int8 (static {method}, full) |" in markdown(docs[method])
