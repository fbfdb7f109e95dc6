"""``radiofm bench``: latency, throughput, memory, work done and accuracy per engine and precision.

For every model, engine, precision and batch size a child process (``run_one``) opens the engine,
warms it up and times ``Engine.run``; this module prepares what the children need (a random-weight
model for a preset name, ONNX files through ``radiofm.export``, the prepared test set), collects
their records, adds the work counted (FLOPs, GFLOP/s, fraction of the machine's peak) and label
agreement with fp32, and returns one JSON-ready document. ``report`` turns it into a table and a plot.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from radiofm.checkpoint import load_config, resolve_model_dir
from radiofm.config import PRESET_NAMES, ModelConfig, preset
from radiofm.engines import (CALIB_METHODS, DEFAULT_CALIB_METHOD, DEFAULT_INT8_SCOPE, INT8_SCOPES, ONNX_FILES,
                             recorded_calib_method, recorded_int8_scope)

from .machine import cpu_peak, describe_machine, gpu_peak, load_average

FORMAT = "radiofm-bench/1"
ENGINE_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnx": ("fp32", "fp16", "int8"),
                     # CUDA only: the torch engine replaying CUDA graphs, and that with radiofm's Triton
                     # kernels for attention and patch embedding
                     "torch-graph": ("fp32", "bf16", "fp16"), "torch-triton": ("fp32", "bf16", "fp16"),
                     # a TensorRT plan built here by ``radiofm.export.tensorrt`` (needs TensorRT and a GPU)
                     "trt": ("fp32", "fp16", "int8")}
CUDA_ONLY = ("torch-graph", "torch-triton", "trt")
PRESET_CLASSES = 10  # head width of the random-weight classifier built for a preset name


class BenchError(RuntimeError):
    """A benchmark that cannot be set up as asked (unknown model, unusable data, bad options)."""


@dataclass
class BenchSettings:
    models: list[str]
    engines: list[str] = field(default_factory=lambda: ["torch", "onnx"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batches: list[int] = field(default_factory=lambda: [1])
    device: str = "cpu"
    threads: int | None = None  # None: every core this process may run on
    warmup: int = 10
    repeat: int = 50
    data: str | None = None  # test set folder: accuracy and agreement with fp32 per engine and precision
    limit: int = 512  # test samples scored at most
    calib: str | None = None  # dataset folder: int8 exports become static QDQ calibrated on it
    int8_scope: str = DEFAULT_INT8_SCOPE  # what int8 exports quantise: one of INT8_SCOPES
    calib_method: str = DEFAULT_CALIB_METHOD  # with calib: how the data sets the int8 ranges, one of CALIB_METHODS
    work: str | None = None  # keeps built models and exports for the next run; a temporary folder if None
    timeout_s: float = 1800.0  # per child process

    def check(self) -> None:
        unknown = sorted(set(self.engines) - set(ENGINE_PRECISIONS))
        if unknown:
            raise BenchError(f"unknown engine(s) {', '.join(unknown)}; bench runs {', '.join(ENGINE_PRECISIONS)}")
        known = {p for ps in ENGINE_PRECISIONS.values() for p in ps}
        if set(self.precisions) - known:
            raise BenchError(f"unknown precision(s) {', '.join(sorted(set(self.precisions) - known))}; "
                             f"choose from {', '.join(sorted(known))}")
        if not self.models or not self.engines or not self.precisions or not self.batches:
            raise BenchError("give at least one model, engine, precision and batch size")
        if min(self.batches) < 1 or self.warmup < 0 or self.repeat < 1:
            raise BenchError("batch sizes and --repeat must be at least 1, --warmup at least 0")
        if self.device not in ("cpu", "cuda"):
            raise BenchError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise BenchError("--threads must be at least 1")
        if self.int8_scope not in INT8_SCOPES:
            raise BenchError(f"--int8-scope must be one of {', '.join(INT8_SCOPES)}, got {self.int8_scope!r}")
        if self.calib_method not in CALIB_METHODS:
            raise BenchError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {self.calib_method!r}")
        if self.calib_method != DEFAULT_CALIB_METHOD and self.calib is None:
            raise BenchError("--calib-method chooses how --calib data sets the int8 ranges; use it with --calib DIR")


@dataclass
class Subject:
    """One model under test and the files its children open."""

    name: str  # as the user gave it
    folder: Path
    cfg: ModelConfig
    weights: str  # "random" (a preset) or "trained"
    onnx: dict[str, Path] = field(default_factory=dict)
    export_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # per precision: passed, int8 method
    unavailable: dict[str, str] = field(default_factory=dict)  # ONNX precisions that could not be made: why
    plans: dict[str, Path] = field(default_factory=dict)  # TensorRT plan per precision
    plan_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # per precision: parity passed
    plan_unavailable: dict[str, str] = field(default_factory=dict)  # TensorRT precisions not built: why
    data_file: Path | None = None


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------- preparing the models
def prepare_subject(name: str, work: Path, log: Callable[[str], None]) -> Subject:
    """A model folder, zoo name or preset. A preset becomes a random-weight classifier: its latency is a
    trained model's, its predictions mean nothing."""
    if name in PRESET_NAMES and not Path(name).exists():
        folder = work / name
        if not (folder / "config.json").is_file():
            from radiofm.checkpoint import save_model
            from radiofm.model import build_model

            log(f"{name}: building a random-weight classifier in {folder}")
            cfg = preset(name, task="classify", num_classes=PRESET_CLASSES)
            save_model(build_model(cfg), folder, cfg)
        return Subject(name, folder, load_config(folder), "random")
    try:
        folder = resolve_model_dir(name)
    except FileNotFoundError as e:
        raise BenchError(f"{e}; or give a preset: {', '.join(PRESET_NAMES)}") from None
    return Subject(name, folder, load_config(folder), "trained")


def export_scope(entry: dict[str, Any], precision: str) -> str | None:
    """The int8 scope an ``onnx.json`` entry was exported with (see ``recorded_int8_scope``); None for
    the other precisions."""
    return recorded_int8_scope(entry) if precision == "int8" else None


def int8_record(entry: dict[str, Any]) -> dict[str, Any]:
    """What a result row says of how its int8 model was made, from its ``onnx.json`` entry or TensorRT
    sidecar record: the scope, and for a static export the calibration method."""
    record = {"int8_scope": recorded_int8_scope(entry)}
    if entry.get("method") == "static":
        record["calib_method"] = recorded_calib_method(entry)
    return record


def validation_samples(subject: Subject) -> int | None:
    """How many inputs an export made for timing is validated on: a trained model's as ``radiofm
    export`` checks it (None: 256 for a classifier), so ``export_passed`` means what it means there (on
    16, the 99 % int8 bound meant every decision); a preset's random weights only on 16, since their
    parity says nothing either way."""
    return None if subject.weights == "trained" else 16


def onnx_files(subject: Subject, precisions: list[str], work: Path, calib: str | None,
               log: Callable[[str], None], int8_scope: str = DEFAULT_INT8_SCOPE,
               calib_method: str = DEFAULT_CALIB_METHOD) -> None:
    """Find or make the ONNX file per precision: the model's own export if it has one (beside it, or
    for a zoo model in the export cache, as ``radiofm export`` writes it), else an export into the
    work folder through ``radiofm.export`` (the folder the user gave is left alone).

    The model folder's int8 export is taken only if it has the ``int8_scope`` asked for, and a static one
    in the work folder only if it was calibrated by ``calib_method`` (each method has its own folder there,
    so a run with the other one does not undo it). Every export
    is taken only if it was made from the model's present weights and config (the ``source_sha256``
    and config it records): one made before either changed is stale, and is exported afresh into the work folder rather
    than timed. One that missed its parity tolerance is still timed (its speed is real) and its
    records say ``export_passed: false``; with random weights (a preset) int8 parity on noise often
    fails, and means nothing.
    """
    from radiofm.checkpoint import exports_dir, sha256_file
    from radiofm.engines import export_is_current
    from radiofm.export import read_report
    from radiofm.export.onnx import export

    weights = subject.folder / "model.safetensors"
    source_sha = sha256_file(weights)
    own_folder = exports_dir(subject.folder)
    own_report = read_report(own_folder)
    # Every export writes fp32 first: asking for fp32 last finds it already made.
    for precision in sorted(precisions, key=lambda p: p == "fp32"):
        static = precision == "int8" and calib is not None
        scope = int8_scope if precision == "int8" else None
        own_file = own_folder / ONNX_FILES[precision]
        own = own_report.get(precision, {})
        if own.get("file") != own_file.name:  # onnx.json speaks of another file (a rejected one): not this one
            own = {}
        fresh = own_file.is_file() and export_is_current(own_file, weights)
        if own_file.is_file() and not fresh:
            log(f"{subject.name}: {own_file} is stale (exported from other weights or another config than "
                f"{subject.folder} holds now): a fresh export is timed instead")
        if fresh and not static and export_scope(own, precision) == scope:
            entry = {**own, "file": own_file.name}
            out = own_folder
        else:
            # Static and dynamic int8, the two int8 scopes and the calibration methods share a file name:
            # separate folders (the default method's keeps the name it had before methods were a choice).
            method = calib_method if static else None
            out = work / (f"{subject.folder.name}-onnx{'-static' if static else ''}"
                          f"{'-' + method if method not in (None, DEFAULT_CALIB_METHOD) else ''}"
                          f"{'-full' if scope == 'full' else ''}")
            entry = read_report(out).get(precision)
            if (entry is None or entry.get("source_sha256") != source_sha or not (out / entry["file"]).is_file()
                    or not export_is_current(out / entry["file"], weights) or export_scope(entry, precision) != scope
                    or (static and recorded_calib_method(entry) != method)):
                log(f"{subject.name}: exporting ONNX {precision} into {out}")
                results = export(subject.folder, out, precision=precision, calib=calib if static else None,
                                 samples=validation_samples(subject), batch_sizes=(1, 4), int8_scope=scope,
                                 calib_method=method, log=lambda m: log(f"  {m}"))
                entry = next((r.entry for r in results if r.precision == precision), None)
                if entry is None:  # nothing is derived from an fp32 graph that failed its parity check
                    failures = "; ".join(results[0].entry["failures"])
                    subject.unavailable[precision] = f"the fp32 export it derives from failed parity ({failures})"
                    continue
        subject.onnx[precision] = out / entry["file"]
        subject.export_info[precision] = {"export_passed": entry.get("passed"), "export_method": entry.get("method")}
        if precision == "int8":
            subject.export_info[precision].update(int8_record(entry))


def plan_fits(sidecar: dict[str, Any] | None, profile: Any, precision: str, int8_scope: str,
              calib_method: str) -> bool:
    """Whether a TensorRT plan kept in the work folder (its sidecar; None: none there, or built for
    another TensorRT or GPU) is the one bench would build now, weights aside: its batch profile covers
    ``profile``'s, and an int8 plan was quantised in ``int8_scope`` from ranges calibrated by
    ``calib_method``. An int8 plan whose sidecar does not say how (built before it did) is built again."""
    if sidecar is None or not (sidecar["profile"]["min"] <= profile.min and sidecar["profile"]["max"] >= profile.max):
        return False
    if precision != "int8":
        return True
    made = sidecar.get("int8")
    return made is not None and recorded_int8_scope(made) == int8_scope and recorded_calib_method(made) == calib_method


def trt_plans(subject: Subject, precisions: list[str], batches: list[int], work: Path, calib: str | None,
              log: Callable[[str], None], int8_scope: str = DEFAULT_INT8_SCOPE,
              calib_method: str = DEFAULT_CALIB_METHOD) -> None:
    """Build a TensorRT plan per precision into the work folder, for a batch profile spanning the
    benchmark's batch sizes, with ``radiofm.export.tensorrt.export_engine`` (which validates it against
    torch). A plan there is reused if it was built from the same weights and config for a profile that
    covers those batches, on this TensorRT and GPU (``plan_fits``). int8 plans come from a QDQ graph
    calibrated on ``calib`` by ``calib_method``, in ``int8_scope``; each scope and method has its own folder."""
    from radiofm.engines import export_is_current
    from radiofm.export.tensorrt import (
        BatchProfile,
        EngineMismatch,
        check_engine_compatible,
        current_runtime,
        export_engine,
        read_sidecar,
    )

    weights = subject.folder / "model.safetensors"
    profile = BatchProfile(min(batches), max(batches), max(batches))
    for precision in precisions:
        how = "" if precision != "int8" else (
            f"-{int8_scope}" + (f"-{calib_method}" if calib_method != DEFAULT_CALIB_METHOD else ""))
        out = work / f"{subject.folder.name}-trt-{precision}{how}"
        plan = out / f"model.{precision}.plan"
        try:
            sidecar = read_sidecar(plan) if plan.is_file() else None
            if sidecar is not None:
                check_engine_compatible(sidecar, current_runtime())
        except (EngineMismatch, FileNotFoundError):
            sidecar = None
        if not (plan_fits(sidecar, profile, precision, int8_scope, calib_method) and export_is_current(plan, weights)):
            log(f"{subject.name}: building TensorRT {precision}, batch {profile}, into {out}")
            try:
                results, plan = export_engine(subject.folder, out, precision, profile, calib=calib,
                                              samples=validation_samples(subject), log=lambda m: log(f"  {m}"),
                                              int8_scope=int8_scope if precision == "int8" else None,
                                              calib_method=calib_method if precision == "int8" else None)
            except (RuntimeError, ValueError) as e:  # TensorRTUnavailable; int8 without --calib
                subject.plan_unavailable[precision] = str(e)
                continue
            if plan is None:
                failures = "; ".join(results[0].entry["failures"])
                subject.plan_unavailable[precision] = f"the ONNX export it is built from failed parity ({failures})"
                continue
            sidecar = read_sidecar(plan)
        subject.plans[precision] = plan
        subject.plan_info[precision] = {"export_passed": sidecar.get("passed"), "plan_profile": sidecar["profile"]}
        if precision == "int8":
            subject.plan_info[precision].update(int8_record(sidecar["int8"]))


# --------------------------------------------------------------------------- the test set
def prepare_test_set(subject: Subject, data: str, limit: int, work: Path) -> Path:
    """The first ``limit`` samples of ``data`` as model input, with targets in the model's class order,
    saved once so every child scores the same arrays."""
    from radiofm import signal
    from radiofm.training.datasets import open_dataset

    cfg = subject.cfg
    if cfg.task not in ("classify", "segment"):
        raise BenchError(f"--data scores classifiers and segmenters; {subject.name} is a {cfg.task!r} model")
    try:
        dataset = open_dataset(data)
    except (FileNotFoundError, ValueError) as e:
        raise BenchError(str(e)) from None
    if dataset.task != cfg.task:
        raise BenchError(f"{data} is a {dataset.task!r} dataset, {subject.name} a {cfg.task!r} model")
    remap = _class_map(dataset.classes, cfg.class_names, data, subject.name)
    n = min(limit, len(dataset))
    if n == 0:
        raise BenchError(f"{data} holds no samples")
    pairs = [dataset[i] for i in range(n)]
    images = signal.prepare(np.stack([x for x, _ in pairs]), cfg.preprocess, cfg.img_size)
    targets = remap[np.stack([np.asarray(t) for _, t in pairs])]
    if cfg.task == "segment":
        targets = signal.resize_labels(targets, cfg.img_size)
    path = work / f"{subject.folder.name}-test-{n}.npz"
    np.savez(path, images=images.astype(np.float32), targets=targets)
    return path


def _class_map(data_classes: list[str], model_classes: list[str], data: str, model: str) -> np.ndarray:
    """Index map from the dataset's class order to the model's, matched by name."""
    if not data_classes:
        return np.arange(len(model_classes))
    missing = [c for c in data_classes if c not in model_classes]
    if missing:
        raise BenchError(f"classes {missing} of {data} are not among {model}'s classes {model_classes}: "
                         f"score a model trained on this kind of data")
    return np.array([model_classes.index(c) for c in data_classes])


# --------------------------------------------------------------------------- running the children
def run_child(spec: dict[str, Any], scratch: Path, threads: int, timeout_s: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; returns its record or raises BenchError with its stderr."""
    name = f"{spec['model_key']}-{spec['engine']}-{spec['precision']}-b{spec['batch']}"
    spec_file = scratch / f"{name}.spec.json"
    spec["result_file"] = str(scratch / f"{name}.result.json")
    spec_file.write_text(json.dumps(spec))
    # Fixed thread pools: OpenMP (torch, oneDNN) and MKL read these at start-up, before any API call.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        done = subprocess.run([sys.executable, "-m", "radiofm.benchmarks.run_one", str(spec_file)], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise BenchError(f"{name} failed (exit {done.returncode}):\n{tail}")
    return json.loads(Path(spec["result_file"]).read_text())


def plan(settings: BenchSettings) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """(engine, precision) pairs to run, and the ones skipped with the reason."""
    pairs, skipped = [], []
    no_trt = trt_missing() if "trt" in settings.engines and settings.device == "cuda" else None
    for engine in settings.engines:
        for precision in settings.precisions:
            if precision not in ENGINE_PRECISIONS[engine]:
                skipped.append({"engine": engine, "precision": precision,
                                "reason": f"the {engine} engine has no {precision} "
                                          f"(it runs {', '.join(ENGINE_PRECISIONS[engine])})"})
            elif engine in CUDA_ONLY and settings.device != "cuda":
                what = "runs TensorRT plans" if engine == "trt" else "replays CUDA graphs"
                skipped.append({"engine": engine, "precision": precision,
                                "reason": f"{engine} {what}: it needs --device cuda"})
            elif engine == "trt" and no_trt:
                skipped.append({"engine": engine, "precision": precision, "reason": no_trt})
            elif engine == "torch" and precision == "fp16" and settings.device != "cuda":
                skipped.append({"engine": engine, "precision": precision,
                                "reason": "torch fp16 needs a CUDA device; bf16 is the CPU's half precision"})
            else:
                pairs.append((engine, precision))
    return pairs, skipped


def trt_missing() -> str | None:
    """Why TensorRT plans cannot be built and run here (what is missing and how to get it), or None."""
    from radiofm.export.tensorrt import TensorRTUnavailable, require_tensorrt

    try:
        require_tensorrt()
    except TensorRTUnavailable as e:
        return str(e)
    return None


def run_bench(settings: BenchSettings, command: str = "", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole benchmark and return the document ``write_results`` saves."""
    from radiofm.model import encoder_param_count, flops_per_forward

    settings.check()
    threads = settings.threads or default_threads()
    pairs, skipped = plan(settings)
    if not pairs:
        raise BenchError("nothing to run: " + "; ".join(s["reason"] for s in skipped))
    machine = describe_machine()
    if settings.device == "cuda" and machine["gpu"] is None:
        raise BenchError("--device cuda asked for, but torch sees no CUDA GPU here")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "settings": {**asdict(settings), "threads": threads},
        "machine": {**machine, "load_average_before": load_average()},
        "models": [],
        "results": [],
        "skipped": skipped,
        "failures": [],
    }
    with tempfile.TemporaryDirectory(prefix="radiofm-bench-") as tmp:
        work = Path(settings.work) if settings.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        scratch = Path(tmp) / "runs"
        scratch.mkdir()
        for name in settings.models:
            subject = prepare_subject(name, work, log)
            onnx_precisions = sorted({p for e, p in pairs if e == "onnx"})
            if onnx_precisions:
                onnx_files(subject, onnx_precisions, work, settings.calib, log, settings.int8_scope,
                           settings.calib_method)
            trt_precisions = sorted({p for e, p in pairs if e == "trt"})
            if trt_precisions:
                trt_plans(subject, trt_precisions, settings.batches, work, settings.calib, log, settings.int8_scope,
                          settings.calib_method)
            if settings.data:
                if subject.weights == "random":
                    raise BenchError(f"{name} is a preset with random weights: scoring it on {settings.data} "
                                     f"means nothing; give a trained model folder or zoo name")
                subject.data_file = prepare_test_set(subject, settings.data, settings.limit, work)
            flops = flops_per_forward(subject.cfg)
            doc["models"].append({
                "name": name, "config": subject.cfg.name, "task": subject.cfg.task, "weights": subject.weights,
                "folder": str(subject.folder), "encoder_params": encoder_param_count(subject.cfg),
                "flops_per_forward": flops, "onnx_files": {p: str(f) for p, f in subject.onnx.items()},
            })
            records = []
            for engine, precision in pairs:
                unavailable = {"onnx": subject.unavailable, "trt": subject.plan_unavailable}.get(engine, {})
                if precision in unavailable:
                    doc["skipped"].append({"model": name, "engine": engine, "precision": precision,
                                           "reason": unavailable[precision]})
                    continue
                for i, batch in enumerate(sorted(set(settings.batches))):
                    log(f"{name}: {engine} {precision} batch {batch}")
                    spec = {
                        "model_key": subject.folder.name, "model_dir": str(subject.folder),
                        "onnx_file": str(subject.onnx.get(precision, "")),
                        "plan_file": str(subject.plans.get(precision, "")), "engine": engine,
                        "precision": precision, "batch": batch, "device": settings.device, "threads": threads,
                        "warmup": settings.warmup, "repeat": settings.repeat,
                        # Predictions do not depend on the batch size: score once per engine and precision.
                        "data_file": str(subject.data_file) if subject.data_file and i == 0 else None,
                    }
                    try:
                        record = run_child(spec, scratch, threads, settings.timeout_s)
                    except BenchError as e:
                        log(f"  failed: {e}")
                        doc["failures"].append({"model": name, "engine": engine, "precision": precision,
                                                "batch": batch, "error": str(e)})
                        continue
                    record = {"model": name, **record, **work_done(record, flops, precision, machine, settings.device)}
                    if engine == "onnx":
                        record.update(subject.export_info[precision])
                    elif engine == "trt":
                        record.update(subject.plan_info[precision])
                    log(f"  p50 {record['p50_ms']:.2f} ms, {record['throughput']:.1f} samples/s")
                    records.append(record)
            add_agreement(records)
            doc["results"].extend(records)
    doc["machine"]["load_average_after"] = load_average()
    return doc


def _significant(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def work_done(record: dict[str, Any], flops: int, precision: str, machine: dict[str, Any], device: str) -> dict[str, Any]:
    """GFLOP/s at the median latency and its fraction of the device's nominal peak for this precision."""
    achieved = flops * record["batch"] / (record["p50_ms"] / 1e3) / 1e9
    peak = gpu_peak(machine["gpu"]) if device == "cuda" else cpu_peak(machine["cpu"], precision)
    return {  # significant digits, not fixed decimals: a tiny model's figures must not round to zero
        "gflop_per_forward": _significant(flops / 1e9),
        "gflops": _significant(achieved),
        "peak_gflops": _significant(peak["peak_gflops"]) if peak["peak_gflops"] else None,
        "fraction_of_peak": _significant(achieved / peak["peak_gflops"]) if peak["peak_gflops"] else None,
        "peak_unit": peak["peak_unit"],
        "peak_formula": peak["peak_formula"],
    }


def add_agreement(records: list[dict[str, Any]]) -> None:
    """Label agreement of each scored record with the fp32 reference (torch's if it ran, else ONNX's).

    Every engine and precision predicted the same prepared samples, so agreement is the fraction of
    samples (or pixels) whose arg-max class equals the reference's. The prediction files are read
    and dropped here: the document keeps the figures only.
    """
    scored = [r for r in records if "predictions_file" in r]
    predictions = {id(r): np.load(r.pop("predictions_file")) for r in scored}
    reference = next((r for engine in ("torch", "torch-graph", "torch-triton", "onnx", "trt") for r in scored
                      if r["engine"] == engine and r["precision"] == "fp32"), None)
    for r in scored:
        if reference is not None:
            r["agreement_vs_fp32"] = float((predictions[id(r)] == predictions[id(reference)]).mean())
            r["agreement_reference"] = f"{reference['engine']} fp32"
    # Only the first batch size was scored (``eval_batch``): the others run the same weights, and
    # scoring each again would multiply the benchmark's time for figures that barely move.
    by_pair = {(r["engine"], r["precision"]): r for r in scored}
    for r in records:
        source = by_pair.get((r["engine"], r["precision"]))
        if source is not None and r is not source:
            for key in ("accuracy", "agreement_vs_fp32", "agreement_reference", "eval_samples", "eval_batch"):
                if key in source:
                    r[key] = source[key]


def write_results(doc: dict[str, Any], json_path: Path | None, md_path: Path | None, plot_path: Path | None) -> None:
    from radiofm.checkpoint import write_json_atomic, write_text_atomic

    from .report import markdown, plot

    if json_path:
        write_json_atomic(json_path, doc)
    if md_path:
        write_text_atomic(md_path, markdown(doc))
    if plot_path:
        plot(doc, plot_path)


def command_line(argv: list[str]) -> str:
    return "radiofm " + " ".join(shlex.quote(a) for a in argv)
