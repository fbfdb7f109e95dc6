"""TensorRT engines from the exported ONNX files, with the TensorRT Python API.

An engine only runs with the TensorRT version and the GPU model it was built for, so every
``model.<precision>.plan`` gets a sidecar ``model.<precision>.plan.json`` recording both (plus the
batch profile and precision); :func:`check_engine_compatible` compares it with the machine before a
load is tried, and says how to rebuild. Builds reuse a timing cache per GPU and TensorRT version.

TensorRT is imported only inside the functions that need it; everything else here (profile
parsing, sidecars, compatibility checks) works without it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from radiofm.checkpoint import atomic_path, write_json_atomic
from radiofm.engines import (  # noqa: F401  (EngineMismatch, check_engine_compatible: re-exported)
    EngineMismatch,
    TensorRTEngine,
    check_engine_compatible,
    cuda_devices,
    read_sidecar,
    sidecar_path,
)

from .metadata import INPUT_NAME, KEY_PADDING, OUTPUT_NAMES, read_onnx_metadata, utc_now

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = 'pip install "radiofm[gpu]"'
# Layers whose reductions or squares overflow fp16; fp16 engines keep them in fp32.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing on this machine."""


# --------------------------------------------------------------------------- batch profile
@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_batch_profile(text: str) -> BatchProfile:
    """``"1:8:64"`` -> BatchProfile(1, 8, 64); a single number ``"8"`` means a fixed batch."""
    parts = str(text).split(":")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise ValueError(f"batch profile {text!r} must be MIN:OPT:MAX, e.g. 1:8:64")
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"batch profile {text!r} must hold three integers MIN:OPT:MAX, e.g. 1:8:64") from None
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch profile {text!r} must satisfy 1 <= MIN <= OPT <= MAX")
    return BatchProfile(lo, opt, hi)


def profile_shapes(inputs, profile: BatchProfile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of each network input for ``profile``: ``inputs`` are (name, shape) pairs
    as TensorRT's parser reports them, -1 on the dynamic batch axis; every other axis must be fixed
    (``images`` (N, C, H, W), and with ``--variable-length`` ``key_padding`` (N, patches))."""
    shapes = {}
    for name, shape in inputs:
        shape = tuple(int(d) for d in shape)
        if not shape or any(d < 0 for d in shape[1:]):
            raise ValueError(f"TensorRT input {name!r} has shape {shape}: only its first (batch) axis may be "
                             f"dynamic; re-export the ONNX with `radiofm export`")
        shapes[name] = tuple((b, *shape[1:]) for b in (profile.min, profile.opt, profile.max))
    return shapes


def onnx_inputs(onnx_file: str | os.PathLike) -> list[str]:
    """The graph input names of an ONNX file (weights are not needed to read them)."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


# --------------------------------------------------------------------------- the machine
def require_tensorrt():
    """The ``tensorrt`` module, or TensorRTUnavailable with one line saying what is missing and how to get it."""
    missing = []
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
        missing.append(f"TensorRT ({INSTALL_HINT})")
    if not cuda_devices():
        missing.append("a CUDA GPU with its NVIDIA driver (engines are built on the GPU that runs them)")
    if missing:
        raise TensorRTUnavailable(f"cannot build a TensorRT engine here: missing {' and '.join(missing)}")
    return trt


def current_runtime() -> dict[str, str]:
    """TensorRT version, GPU name and compute capability of this machine (device 0)."""
    trt = require_tensorrt()
    return {"tensorrt_version": trt.__version__, **cuda_devices()[0]}




# --------------------------------------------------------------------------- building
class EngineBuilder:
    """ONNX -> serialized TensorRT engine: parse, configure precision, profile and workspace, build.

    ``timing_cache`` is read before and written after every build, so a later build of the same
    layers on the same GPU and TensorRT version skips most of the tactic timing.
    """

    def __init__(self, workspace_gib: float = 4.0, timing_cache: str | os.PathLike | None = None, verbose: bool = False):
        self.trt = require_tensorrt()
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        try:
            # Without a usable CUDA context TensorRT logs "CUDA initialization failure" and the
            # binding raises TypeError from a null builder.
            self.builder = trt.Builder(self.logger)
        except TypeError:
            self.builder = None
        if self.builder is None:
            raise TensorRTUnavailable("TensorRT could not initialise CUDA on this machine; check the NVIDIA driver (nvidia-smi)")
        self.workspace_gib = workspace_gib
        self.timing_cache = Path(timing_cache) if timing_cache else default_timing_cache(self.trt.__version__)

    def build(self, onnx_file: str | os.PathLike, precision: str, profile: BatchProfile) -> bytes:
        trt = self.trt
        if precision not in ENGINE_PRECISIONS:
            raise ValueError(f"engine precision must be one of {ENGINE_PRECISIONS}, got {precision!r}")
        network = self.builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_file)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_file}: {errors}")

        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_gib * (1 << 30)))
        self._set_precision(network, config, precision)
        inputs = [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]
        opt_profile = self.builder.create_optimization_profile()
        for name, shapes in profile_shapes(inputs, profile).items():
            opt_profile.set_shape(name, *shapes)
        config.add_optimization_profile(opt_profile)

        cache = config.create_timing_cache(self.timing_cache.read_bytes() if self.timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = self.builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_file}; rerun with verbose=True for its log")
        with atomic_path(self.timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    def _set_precision(self, network, config, precision: str) -> None:
        trt = self.trt
        if precision == "fp32":
            # TF32 matmuls (on by default on Ampere and newer) would miss the fp32 tolerance of 1e-4.
            config.clear_flag(trt.BuilderFlag.TF32)
            return
        # int8 comes from a QDQ graph (explicit quantisation); its unquantised layers run in fp16.
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        fp32_types = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES if hasattr(trt.LayerType, name)}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.ELEMENTWISE:
                layer.__class__ = trt.IElementWiseLayer  # get_layer returns the base class; .op lives on the subclass
            if layer.type in fp32_types or (layer.type == trt.LayerType.ELEMENTWISE
                                            and layer.op == trt.ElementWiseOperation.POW):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)


def default_timing_cache(tensorrt_version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "radiofm" / "tensorrt"
    gpu = cuda_devices()[0]
    name = f"{gpu['gpu_name']}-sm{gpu['compute_capability']}-trt{tensorrt_version}".replace(" ", "_")
    return base / f"{name}.timing-cache"


def engine_sidecar(precision: str, profile: BatchProfile, onnx_file: str, runtime: dict[str, str],
                   config: dict[str, Any], engine_file: str, build_command: str,
                   inputs: list[str] | None = None) -> dict[str, Any]:
    """What an engine needs beside it: the machine it runs on, its profile, and the model config
    (carried over from the ONNX metadata, so the SDK can serve the engine without the model folder)."""
    return {
        "engine_file": engine_file,
        "precision": precision,
        "onnx_file": onnx_file,
        "inputs": inputs or [INPUT_NAME],
        "outputs": OUTPUT_NAMES[config["task"]],
        "config": config,
        "profile": asdict(profile),
        **runtime,
        "build_command": build_command,
        "created": utc_now(),
    }


def build_engine(onnx_file: str | os.PathLike, precision: str, profile: BatchProfile, out: str | os.PathLike,
                 workspace_gib: float = 4.0, timing_cache: str | os.PathLike | None = None,
                 build_command: str = "") -> Path:
    """Build ``model.<precision>.plan`` in ``out`` from ``onnx_file`` and write its sidecar; returns the plan path."""
    builder = EngineBuilder(workspace_gib, timing_cache)
    plan = builder.build(onnx_file, precision, profile)
    engine = Path(out) / f"model.{precision}.plan"
    with atomic_path(engine) as tmp:
        tmp.write_bytes(plan)
    meta = read_onnx_metadata(onnx_file)
    sidecar = engine_sidecar(
        precision, profile, Path(onnx_file).name, current_runtime(), meta["config"],
        engine.name, build_command or f"radiofm export MODEL --engine trt --precision {precision} --batch {profile}",
        onnx_inputs(onnx_file),
    )
    sidecar["source_sha256"] = meta.get("source_sha256")  # the weights it was built from
    write_json_atomic(sidecar_path(engine), sidecar)
    return engine


# --------------------------------------------------------------------------- the export command
def export_engine(source: str | os.PathLike, out: str | os.PathLike | None, precision: str, profile: BatchProfile,
                  calib: str | os.PathLike | None = None, workspace_gib: float = 4.0,
                  timing_cache: str | os.PathLike | None = None, samples: int | None = None, build_command: str = "",
                  log=lambda _: None, int8_scope: str | None = None, variable_length: bool = False,
                  calib_method: str | None = None):
    """ONNX export (validated) -> TensorRT engine -> parity with torch, recorded in the sidecar.

    The ONNX files are written first even where TensorRT or a GPU is missing, so they can be built
    elsewhere; TensorRTUnavailable is raised right after. int8 engines come from a static QDQ export,
    so they need ``calib``; ``int8_scope`` and ``calib_method`` are the ONNX export's (None: its default). Returns (onnx results, engine path or
    None when the ONNX export failed). ``variable_length`` builds from a graph with a ``key_padding``
    input (see ``radiofm.export.onnx.export_graph``): the plan then takes captures shorter than the
    model's, padded and masked, and its parity is also measured on such input.
    """
    import numpy as np

    from radiofm.checkpoint import load_model, resolve_model_dir

    from . import onnx as onnx_export
    from .samples import validation_set

    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"engine precision must be one of {ENGINE_PRECISIONS}, got {precision!r}")
    if precision == "int8" and calib is None:
        raise ValueError("an int8 TensorRT engine is built from a calibrated QDQ model: pass --calib DIR")
    try:
        require_tensorrt()
        missing = None
    except TensorRTUnavailable as e:
        missing = e
    onnx_precision = "int8" if precision == "int8" else "fp32"
    results = onnx_export.export(source, out, onnx_precision, calib=calib, samples=samples, log=log,
                                 int8_scope=int8_scope if onnx_precision == "int8" else None,
                                 calib_method=calib_method if onnx_precision == "int8" else None,
                                 variable_length=variable_length)
    if missing is not None:
        raise missing
    if not all(r.passed for r in results):
        return results, None
    onnx_file = results[-1].path
    log(f"building TensorRT {precision} engine, batch {profile}")
    engine = build_engine(onnx_file, precision, profile, onnx_file.parent, workspace_gib, timing_cache, build_command)

    model = load_model(resolve_model_dir(source))
    val = validation_set(model.cfg, samples or onnx_export.default_samples(model.cfg))
    reference = onnx_export.run_torch(model, val.images)
    loaded = TensorRTEngine(engine)

    def run(images, key_padding=None, b=profile.max):
        chunks = [loaded.run(images[i:i + b], None if key_padding is None else key_padding[i:i + b])
                  for i in range(0, len(images), b)]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    parity = {}
    # The check's batch sizes inside the profile, and none past the number of samples (a larger one
    # would run the same single batch under another name).
    most = max(len(val.images), profile.min)
    for b in sorted({min(max(b, profile.min), profile.max, most) for b in onnx_export.BATCH_SIZES}):
        parity[str(b)] = onnx_export.compare(model.cfg.task, reference, run(val.images, b=b))
    if KEY_PADDING in loaded.inputs:  # shorter captures, padded as the SDK pads them, behind the mask
        parity["padded"] = onnx_export.padded_parity(model, val.images, run)
    tolerance = onnx_export.TOLERANCES["fp32" if precision == "fp32" else precision]
    failures = [f"batch {b}: {msg}" for b, p in parity.items() for msg in tolerance.failures(p)]
    sidecar = read_sidecar(engine)
    sidecar.update(parity=parity, passed=not failures, failures=failures,
                   validation={"samples": len(val.images), "source": val.source})
    if precision == "int8":  # how its QDQ graph was quantised, as onnx.json records it
        sidecar["int8"] = {k: results[-1].entry.get(k) for k in ("method", "scope", "calibration")}
    write_json_atomic(sidecar_path(engine), sidecar)
    return results, engine
