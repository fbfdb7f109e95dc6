"""One benchmark measurement in a process of its own: ``python -m radiofm.benchmarks.run_one SPEC.json``.

The parent (``radiofm.benchmarks.bench``) starts one of these per engine, precision and batch size:
runtimes in one process disturb each other (thread pools, allocator caches, oneDNN primitive
caches), and the peak memory of a process is then that configuration's alone. The spec file names
the engine and what to time; the record is written to the spec's ``result_file``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from radiofm.engines import open_engine


def timed_runs(run: Callable[[], Any], warmup: int, repeat: int, cuda: bool) -> list[float]:
    """Milliseconds per call after ``warmup`` untimed calls; CUDA events on a GPU.

    ``Engine.run`` returns host arrays, so each call includes the copies in and out: the latency an
    application sees. On a GPU the events bracket the call on the current stream after a
    synchronize, so queued work from an earlier call cannot leak into the next figure.
    """
    for _ in range(warmup):
        run()
    times = []
    if cuda:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(repeat):
            torch.cuda.synchronize()
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def predict(engine, images: np.ndarray, batch: int) -> np.ndarray:
    """Arg-max classes over the whole set (per sample, or per pixel for a segmenter)."""
    parts = [engine.run(images[i:i + batch])[0].argmax(1) for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def thread_settings(engine, requested: int) -> dict[str, Any]:
    """The thread counts the runtime actually uses, not only the ones asked for."""
    found: dict[str, Any] = {"requested": requested}
    if engine.name.startswith("torch"):
        import torch

        found["torch_intra_op"] = torch.get_num_threads()
        found["torch_inter_op"] = torch.get_num_interop_threads()
    elif engine.name == "onnx":
        options = engine.session.get_session_options()
        found["ort_intra_op"] = options.intra_op_num_threads
        found["ort_inter_op"] = options.inter_op_num_threads
    return found


def open_subject(spec: dict[str, Any]):
    """The engine a spec names; ``torch-graph`` and ``torch-triton`` are the torch engine replaying CUDA
    graphs, the second with radiofm's Triton kernels for attention and patch embedding; ``trt`` the
    TensorRT plan the parent built."""
    name = spec["engine"]
    if name in ("torch-graph", "torch-triton"):
        from radiofm.engines import TorchEngine

        engine = TorchEngine(spec["model_dir"], spec["device"], spec["precision"], spec["threads"], cuda_graphs=True)
        if name == "torch-triton":
            engine.model.set_backends(attn="triton", patch="triton")
        engine.name = name
        return engine
    if name == "trt":
        from radiofm.engines import TensorRTEngine

        return TensorRTEngine(spec["plan_file"])
    source = spec["onnx_file"] if name == "onnx" else spec["model_dir"]
    return open_engine(source, name, spec["device"], spec["precision"], spec["threads"])


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    device, batch = spec["device"], spec["batch"]
    cuda = device.startswith("cuda")
    t0 = time.perf_counter()
    engine = open_subject(spec)
    load_s = time.perf_counter() - t0
    cfg = engine.cfg
    images = np.random.default_rng(0).standard_normal((batch, cfg.in_chans, *cfg.img_size), dtype=np.float32)
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    times = timed_runs(lambda: engine.run(images), spec["warmup"], spec["repeat"], cuda)

    record: dict[str, Any] = {
        "engine": spec["engine"],
        "precision": spec["precision"],
        "batch": batch,
        "device": device,
        "runtime": engine.describe(),
        "threads": thread_settings(engine, spec["threads"]),
        "warmup": spec["warmup"],
        "repeat": spec["repeat"],
        "load_s": round(load_s, 3),
        "latencies_ms": [round(t, 4) for t in times],
    }
    record.update(latency_stats(times, batch))
    if spec.get("data_file"):
        data = np.load(spec["data_file"])
        t0 = time.perf_counter()
        predictions = predict(engine, data["images"], batch)
        record["eval_s"] = round(time.perf_counter() - t0, 3)
        record["eval_samples"] = len(data["images"])
        record["eval_batch"] = batch
        if "targets" in data:
            record["accuracy"] = float((predictions == data["targets"]).mean())
        predictions_file = Path(spec["result_file"]).with_suffix(".predictions.npy")
        np.save(predictions_file, predictions)
        record["predictions_file"] = str(predictions_file)
    record["peak_rss_mb"] = peak_rss_mb()
    if cuda and engine.name.startswith("torch"):
        import torch

        record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    elif engine.name == "trt":  # TensorRT's own activation memory, beside the weights
        size = getattr(engine.engine, "device_memory_size_v2", None) or engine.engine.device_memory_size
        record["trt_device_memory_mb"] = round(size / 2**20, 1)
    return record


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory: runtime, weights and activations.

    Linux's VmHWM belongs to the process image and starts afresh at exec; ``ru_maxrss`` is kept
    across exec, so it would report the parent's peak (torch loaded to build the model) instead.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    # Elsewhere ru_maxrss is the best there is: KiB on Linux, bytes on macOS.
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def latency_stats(times_ms: list[float], batch: int) -> dict[str, float]:
    # From the latencies as the record stores them (4 decimals), so that every statistic lies
    # within the stored values (a 3-decimal p99 could round above the stored maximum).
    t = np.round(np.asarray(times_ms, dtype=np.float64), 4)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {
        "p50_ms": round(float(p50), 4),
        "p90_ms": round(float(p90), 4),
        "p99_ms": round(float(p99), 4),
        "mean_ms": round(float(t.mean()), 4),
        "min_ms": round(float(t.min()), 4),
        # Samples per second over all timed calls, so slow outliers count against it.
        "throughput": round(batch * len(t) / (t.sum() / 1e3), 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m radiofm.benchmarks.run_one SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    record = measure(spec)
    Path(spec["result_file"]).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
