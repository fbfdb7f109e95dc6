"""Inference engines behind one small interface: run a batch of model input, get the outputs.

``TorchEngine`` runs the safetensors model, ``OnnxEngine`` an exported ONNX file through ONNX Runtime
(TensorRT, then CUDA, then CPU execution provider), ``TensorRTEngine`` a serialized TensorRT plan.
Each imports its runtime lazily, so an application that runs ONNX never imports torch.
``open_engine`` never opens an export made from other weights, or under another config, than the model
folder's present ones.
Every engine is safe to call from many threads: ONNX Runtime sessions are; the others lock where
the runtime is not (CUDA graphs, TensorRT execution contexts).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from radiofm.config import ModelConfig

ENGINES = ("torch", "onnx", "trt")
EXPORT_SUFFIXES = (".onnx", ".plan")  # exported files, each opened on the runtime it was made for
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# The contract with radiofm.export, which writes what these engines read: file names, graph I/O
# names, the metadata key that carries the model config, and the int8 scope an export makes unasked
# (by which a stale export's refresh command knows whether to spell its scope out).
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
INPUT_NAME = "images"
KEY_PADDING = "key_padding"
OUTPUT_NAMES = {"classify": ["logits"], "segment": ["logits"], "encode": ["tokens", "pooled"]}
ONNX_CONFIG_KEY = "radiofm_config"
# What an int8 export may quantise: partial (MLP and attention products) | full (also the qkv and
# output projections, after smoothing; radiofm.export.onnx.int8_nodes).
INT8_SCOPES = ("partial", "full")
# full: on a 2-core Xeon with AMX, vit-s int8 at batch 1 took 19.2 ms in full scope against 32.8 ms in
# partial, with 99.8 % against 100 % agreement on 800 captures; on a 2-core AVX2 EPYC the two were
# within run-to-run noise (87-100 against 96-111 ms) at 99.75 % against 99.50 %; on a 2-core EPYC with
# AVX-512 VNNI, 15.6-17.3 against 22.7-26.2 ms (docs/export.md).
DEFAULT_INT8_SCOPE = "full"
# Variable-length exports default to partial: padded, shorter captures carry near-tied decisions, and
# signals-nano's dynamic int8 kept 98.44 % of 256 padded ones in full scope, under the 99 % bound,
# against 100 % in partial (AVX-512 EPYC, 2026-12-06; docs/export.md has the static figures).
VARIABLE_LENGTH_INT8_SCOPE = "partial"


# How static int8 (--calib) sets activation ranges from the calibration data: percentile keeps the
# range holding 99.999 % of each tensor's |values| (ONNX Runtime's Percentile calibration), minmax the
# whole range. Percentile is the default: on signals-nano (256 `signals` captures, AVX-512 EPYC,
# 2026-12-07) it kept all 256 decisions in either scope where minmax kept 99.22 %, and all 256 padded
# captures in a --variable-length partial export, where minmax kept 98.05 % and missed the 99 % bound
# (docs/export.md). Exports recorded before methods existed were minmax.
CALIB_METHODS = ("percentile", "minmax")
DEFAULT_CALIB_METHOD = "percentile"
CALIB_PERCENTILE = 99.999


def default_int8_scope(variable_length: bool) -> str:
    """The scope of an int8 export that asks for none (what ``radiofm export`` makes without --int8-scope)."""
    return VARIABLE_LENGTH_INT8_SCOPE if variable_length else DEFAULT_INT8_SCOPE


def recorded_int8_scope(entry: dict) -> str:
    """The scope an ``onnx.json`` int8 entry was exported with: entries from before scopes existed are
    partial, as int8 then was."""
    return entry.get("scope", "partial")


def recorded_calib_method(entry: dict) -> str:
    """How a static int8 entry's ranges were calibrated: entries from before methods existed are minmax."""
    return (entry.get("calibration") or {}).get("method", "minmax")


def output_names(cfg: ModelConfig) -> list[str]:
    return OUTPUT_NAMES[cfg.task]


def check_device(device) -> None:
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def check_threads(threads) -> None:
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer (or None for the runtime's default), got {threads!r}")


class Engine:
    """What every engine offers. ``run`` takes (N, C, H, W) float32 and returns the outputs in order."""

    name: str = ""
    cfg: ModelConfig
    device: str = "cpu"
    precision: str = "fp32"
    max_batch: int | None = None
    input_name = INPUT_NAME
    # Set by open_engine in auto mode where the model's weights are at hand: opens the torch engine
    # on them, for padded input (captures shorter than the model's) that this engine cannot mask.
    mask_fallback: Callable[[], "Engine"] | None = None

    @property
    def output_names(self) -> list[str]:
        return output_names(self.cfg)

    @property
    def takes_key_padding(self) -> bool:
        """Whether ``run`` takes a ``key_padding`` mask (the torch engine always; exported graphs when
        they were exported with ``--variable-length``)."""
        return False

    def run(self, images: np.ndarray, key_padding: np.ndarray | None = None) -> list[np.ndarray]:
        """Outputs for ``images`` (N, C, H, W); ``key_padding`` (N, L) bool marks the valid patches
        of padded, variable-length input (engines whose graph has no such input refuse it)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.device}, {self.precision})"


def graph_feeds(inputs, images: np.ndarray, key_padding: np.ndarray | None, cfg: ModelConfig, source,
                rebuild: str) -> dict[str, np.ndarray]:
    """What an exported graph with input names ``inputs`` is fed: ``images`` as float32 and, where the
    graph has a ``key_padding`` input, the mask (all True for full-length input). A mask for a graph
    without that input is refused, naming the file and the command (``rebuild``) that makes one."""
    feeds = {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)}
    patches = cfg.grid_size[0] * cfg.grid_size[1]
    if key_padding is not None:
        if KEY_PADDING not in inputs:
            raise ValueError(f"{source} has no {KEY_PADDING} input, so it cannot mask padded input: export with "
                             f"`{rebuild}`, or use the torch engine for captures shorter than the model's")
        if np.shape(key_padding) != (len(images), patches):
            raise ValueError(f"key_padding must be (N, patches) = ({len(images)}, {patches}), "
                             f"got {np.shape(key_padding)}")
        feeds[KEY_PADDING] = np.ascontiguousarray(key_padding, dtype=bool)
    elif KEY_PADDING in inputs:  # a variable-length graph on full-length input: every patch is signal
        feeds[KEY_PADDING] = np.ones((len(images), patches), bool)
    return feeds


# --------------------------------------------------------------------------- torch
class TorchEngine(Engine):
    """The model itself. bf16 (and fp16 on CUDA) through autocast, with the Linear layers' weights
    cast once at load: autocast would otherwise copy every weight to half precision on every call
    (for vit-s, 38 M values, tens of ms a forward on a 2-core CPU), for the same numbers. On CUDA,
    fixed shapes can be replayed as CUDA graphs (``cuda_graphs=True``), captured once per batch size."""

    name = "torch"

    def __init__(self, model_dir, device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                 cuda_graphs: bool = False, task: str | None = None):
        import torch

        from radiofm.checkpoint import load_model

        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"the torch engine runs fp32, bf16 or fp16, not {precision!r}")
        check_device(device)
        check_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU")
        if precision == "fp16" and not device.startswith("cuda"):
            raise ValueError("fp16 on the torch engine needs a CUDA device; use bf16 or fp32 on the CPU")
        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(model_dir, device=device, task=task)
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if half is not None:
            # Only the Linear layers: autocast runs them in half precision anyway, while LayerNorm,
            # the position embedding and the patch projection (which the Triton kernel reads in the
            # images' dtype) stay fp32 as autocast would keep or compute them.
            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(half)
        self.cfg = self.model.cfg
        self.device, self.precision = device, precision
        self._torch = torch
        self._graphs: dict[int, tuple] = {}
        self._cuda_graphs = cuda_graphs and device.startswith("cuda")
        self._lock = threading.Lock()

    @property
    def takes_key_padding(self) -> bool:
        return True

    def _forward(self, x, key_padding=None):
        torch = self._torch
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.model(x) if key_padding is None else self.model(x, key_padding)
        return [o.float() for o in (out if isinstance(out, tuple) else (out,))]

    def run(self, images: np.ndarray, key_padding: np.ndarray | None = None) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
            if key_padding is not None:
                return [o.cpu().numpy() for o in self._forward(x, torch.from_numpy(key_padding).to(self.device))]
            if self._cuda_graphs:
                return [o.cpu().numpy() for o in self._run_graph(x)]
            return [o.cpu().numpy() for o in self._forward(x)]

    def _run_graph(self, x):
        torch = self._torch
        with self._lock:
            if x.shape[0] not in self._graphs:
                static_in = x.clone()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):  # warm-up outside the graph, as capture requires
                    for _ in range(2):
                        self._forward(static_in)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._forward(static_in)
                self._graphs[x.shape[0]] = (graph, static_in, static_out)
            graph, static_in, static_out = self._graphs[x.shape[0]]
            static_in.copy_(x)
            graph.replay()
            return [o.clone() for o in static_out]


# --------------------------------------------------------------------------- ONNX Runtime
def onnx_providers(device: str) -> list[str]:
    """Execution providers by preference: TensorRT, then CUDA, then CPU (CPU only for device 'cpu')."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] + wanted
    providers = [p for p in wanted if p in available]
    if device.startswith("cuda") and len(providers) == 1:
        raise ValueError(
            "device 'cuda' asked for, but ONNX Runtime has no CUDA or TensorRT provider here "
            f"(available: {', '.join(available)}); pip install \"radiofm[gpu]\""
        )
    return providers


def read_onnx_config(session, path) -> ModelConfig:
    meta = session.get_modelmeta().custom_metadata_map
    if ONNX_CONFIG_KEY not in meta:
        raise ValueError(f"{path} carries no {ONNX_CONFIG_KEY} metadata: export it with `radiofm export`")
    return ModelConfig.from_json(meta[ONNX_CONFIG_KEY])


class OnnxEngine(Engine):
    """An exported ONNX file on ONNX Runtime; the model config comes from the file's metadata."""

    name = "onnx"

    def __init__(self, onnx_path, device: str = "cpu", threads: int | None = None, precision: str | None = None):
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist: run `radiofm export MODEL --engine onnx`")
        check_device(device)
        check_threads(threads)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=onnx_providers(device))
        except Exception as e:  # ORT raises its own exception types for corrupt files
            if isinstance(e, ValueError) and "provider" in str(e):
                raise
            raise ValueError(f"{path} is not a loadable ONNX model ({type(e).__name__}: {e})") from e
        self.cfg = read_onnx_config(self.session, path)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.precision = precision or meta.get("precision", "fp32")
        self.device = "cuda" if self.session.get_providers()[0] != "CPUExecutionProvider" else "cpu"
        self.path = path
        self._ort = ort

    def describe(self) -> str:
        return f"onnx ({self.session.get_providers()[0]}, {self.precision})"

    @property
    def takes_key_padding(self) -> bool:
        return KEY_PADDING in {i.name for i in self.session.get_inputs()}

    def run(self, images: np.ndarray, key_padding: np.ndarray | None = None) -> list[np.ndarray]:
        feeds = graph_feeds({i.name for i in self.session.get_inputs()}, images, key_padding, self.cfg, self.path,
                            "radiofm export MODEL --variable-length")
        if self.device == "cpu":
            return self.session.run(self.output_names, feeds)
        binding = self.session.io_binding()  # keep outputs on the GPU until the copy back
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, self._ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


# --------------------------------------------------------------------------- TensorRT
class EngineMismatch(ValueError):
    """A TensorRT engine was built for another TensorRT version or GPU."""


def cuda_devices() -> list[dict[str, str]]:
    """Name and compute capability of each CUDA GPU, read from the driver (libcuda); [] without one.
    Needs neither torch nor TensorRT."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return []
    if cuda.cuInit(0) != 0:
        return []
    count = ctypes.c_int()
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for i in range(count.value):
        dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGet(ctypes.byref(dev), i)
        cuda.cuDeviceGetName(name, len(name), dev)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
        devices.append({"gpu_name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}"})
    return devices


def sidecar_path(engine) -> Path:
    return Path(f"{engine}.json")


def read_sidecar(engine) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: an engine without its metadata cannot be checked; "
                                f"rebuild it with `radiofm export MODEL --engine trt`")
    return json.loads(path.read_text())


def check_engine_compatible(sidecar: dict, runtime: dict[str, str]) -> None:
    """Raise EngineMismatch when an engine's sidecar names another TensorRT version or GPU than
    ``runtime`` (``tensorrt_version``, ``gpu_name``, ``compute_capability``); the message says how to rebuild."""
    required = ("tensorrt_version", "gpu_name", "compute_capability")
    absent = [k for k in required if k not in sidecar]
    rebuild = sidecar.get("build_command") or "radiofm export MODEL --engine trt --precision PRECISION"
    if absent:
        raise EngineMismatch(f"engine metadata lacks {', '.join(absent)}; rebuild the engine here: {rebuild}")
    differences = [
        f"{label} {sidecar[key]} (this machine: {runtime[key]})"
        for key, label in (("tensorrt_version", "TensorRT"), ("gpu_name", "GPU"), ("compute_capability", "compute capability"))
        if str(sidecar[key]) != str(runtime[key])
    ]
    if differences:
        raise EngineMismatch(
            f"engine {sidecar.get('engine_file', '')} was built for {'; '.join(differences)}. TensorRT engines run "
            f"only on the TensorRT version and GPU they were built with: rebuild it on this machine with `{rebuild}`"
        )


class TensorRTEngine(Engine):
    """A serialized TensorRT plan from ``radiofm export --engine trt`` (with its ``.plan.json`` sidecar)."""

    name = "trt"

    def __init__(self, plan_path, device: str = "cuda"):
        path = Path(plan_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: build it with `radiofm export MODEL --engine trt`")
        sidecar = read_sidecar(path)
        try:
            import tensorrt as trt
            import torch
        except ImportError as e:
            raise ImportError(f"the TensorRT engine needs tensorrt and CUDA torch ({e}); "
                              f"pip install \"radiofm[gpu]\" on a machine with a CUDA GPU") from e
        gpus = cuda_devices()
        if not gpus or not torch.cuda.is_available():
            raise ValueError("the TensorRT engine needs a CUDA GPU, and none is visible")
        check_engine_compatible(sidecar, {"tensorrt_version": trt.__version__, **gpus[0]})
        self.cfg = ModelConfig.from_dict(sidecar["config"])
        self.precision = sidecar.get("precision", "fp16")
        self.max_batch = int(sidecar["profile"]["max"])
        self.device = "cuda"
        self._torch = torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ValueError(f"TensorRT could not deserialize {path}; rebuild it with `radiofm export`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        # name -> torch dtype of each input; a plan built with --variable-length also takes key_padding
        # (TensorRT keeps ONNX's bool as BOOL, one byte per value like torch.bool).
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                  trt.DataType.INT32: torch.int32, trt.DataType.BOOL: torch.bool}
        self.inputs = {}
        for n in names:
            if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT:
                dtype = self.engine.get_tensor_dtype(n)
                if dtype not in dtypes:
                    raise ValueError(f"{path}: input {n!r} is TensorRT {dtype}, which this engine cannot feed; "
                                     f"rebuild it with `radiofm export MODEL --engine trt`")
                self.inputs[n] = dtypes[dtype]
        self.path = path
        self._lock = threading.Lock()  # one execution context: one call at a time

    @property
    def takes_key_padding(self) -> bool:
        return KEY_PADDING in self.inputs

    def run(self, images: np.ndarray, key_padding: np.ndarray | None = None) -> list[np.ndarray]:
        feeds = graph_feeds(self.inputs, images, key_padding, self.cfg, self.path,
                            "radiofm export MODEL --engine trt --variable-length")
        torch = self._torch
        with self._lock, torch.inference_mode():
            tensors = []  # kept alive until the run is done
            for name, value in feeds.items():
                t = torch.from_numpy(value).cuda().to(self.inputs[name])
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
                tensors.append(t)
            outputs = []
            for name in self.output_names:
                out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            stream = torch.cuda.current_stream()
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
            return [o.cpu().numpy() for o in outputs]


# --------------------------------------------------------------------------- stale exports
SOURCE_KEY = "source_sha256"  # the checksum of the model.safetensors an export was made from
_METADATA_PROPS = 14  # ModelProto.metadata_props, a repeated StringStringEntryProto (key = 1, value = 2)


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf, start: int, end: int):
    """(field number, payload) of each length-delimited protobuf field in ``buf[start:end]``; the other
    wire types are skipped. Raises ValueError (or IndexError) on anything that is not protobuf."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("field runs past the end")
            yield tag >> 3, (pos, pos + size)
            pos += size
        else:
            raise ValueError(f"wire type {wire}")
    if pos != end:
        raise ValueError("truncated")


def onnx_metadata_props(path) -> dict[str, str] | None:
    """An ONNX file's ``metadata_props`` read straight from its protobuf, without building a session
    (which parses and optimises the whole graph, and on a GPU may build TensorRT engines): the
    top-level fields are skipped by their lengths. None where the file is not readable as ONNX."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            props = {}
            for field, (start, end) in _fields(buf, 0, len(buf)):
                if field == _METADATA_PROPS:
                    entry = {k: bytes(buf[a:b]).decode() for k, (a, b) in _fields(buf, start, end) if k in (1, 2)}
                    props[entry.get(1, "")] = entry.get(2, "")
            return props
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def recorded_source(path) -> str | None:
    """The sha256 of the weights an export was made from, as it records it: an ONNX file in its
    metadata, a TensorRT plan in its sidecar; None where it records none (or cannot be read)."""
    path = Path(path)
    if path.suffix == ".plan":
        try:
            return json.loads(sidecar_path(path).read_text()).get(SOURCE_KEY)
        except (OSError, ValueError, AttributeError):
            return None
    return (onnx_metadata_props(path) or {}).get(SOURCE_KEY)


def _refresh_command(name: str, export_file: Path, precision: str) -> str:
    """The ``radiofm export`` command that writes ``export_file`` again from the model ``name``, with the
    options it was made with where its record says them (``onnx.json``, or a plan's sidecar)."""
    if export_file.suffix == ".plan":
        try:
            recorded = json.loads(sidecar_path(export_file).read_text()).get("build_command") or ""
        except (OSError, ValueError, AttributeError):
            recorded = ""
        if recorded.startswith("radiofm export MODEL "):
            recorded = recorded.replace("MODEL", name, 1)
        return recorded if recorded.startswith("radiofm export ") and "MODEL" not in recorded else \
            _export_command(name, precision, "trt")
    try:
        entry = json.loads((export_file.parent / "onnx.json").read_text()).get(precision) or {}
    except (OSError, ValueError, AttributeError):
        entry = {}
    command = _export_command(name, precision)
    if entry.get("method") == "static":
        command += " --calib DATASET"
        calib_method = recorded_calib_method(entry)
        if calib_method != DEFAULT_CALIB_METHOD:
            command += f" --calib-method {calib_method}"
    variable_length = KEY_PADDING in (entry.get("inputs") or [])
    # The scope is spelled out where it is not the export's default.
    scope = recorded_int8_scope(entry)
    if precision == "int8" and scope != default_int8_scope(variable_length):
        command += f" --int8-scope {scope}"
    if variable_length:
        command += " --variable-length"
    return command


def recorded_config(path) -> dict | None:
    """The model config an export carries, as it records it: an ONNX file in its metadata, a TensorRT
    plan in its sidecar; None where it records none (or cannot be read)."""
    path = Path(path)
    try:
        if path.suffix == ".plan":
            config = json.loads(sidecar_path(path).read_text()).get("config")
        else:
            text = (onnx_metadata_props(path) or {}).get(ONNX_CONFIG_KEY)
            config = None if text is None else json.loads(text)
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


# which radiofm wrote a config, not what the model does: an export stays current across versions
_PROVENANCE_KEYS = ("radiofm_version", "format_version")


def _settings(config: dict) -> dict:
    """A config's settings, defaults filled in as this radiofm reads them, flat with dotted keys
    (``preprocess.stored_size``), provenance left out."""
    flat = {}
    for key, value in ModelConfig.from_dict(config).to_dict().items():
        if key in _PROVENANCE_KEYS:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def config_changes(export_file: Path, config_file: Path) -> list[str]:
    """The settings in which ``config_file`` (a model folder's config.json) differs from the config
    ``export_file`` was exported under, each as ``"key: <export's> -> <config.json's>"``. Empty where
    they agree, or where either side cannot be read (the engine that opens it reports that)."""
    recorded = recorded_config(export_file)
    if recorded is None:
        return []
    try:
        then = _settings(recorded)
        now = _settings(json.loads(Path(config_file).read_text()))
    except (OSError, TypeError, ValueError):
        return []
    return [f"{key}: {then.get(key)!r} -> {now.get(key)!r}" for key in now | then if then.get(key) != now.get(key)]


def stale_reason(export_file: Path, weights: Path, name: str, precision: str) -> str | None:
    """Why ``export_file`` must not stand for the model whose weights are ``weights``: it records the
    checksum of other weights (they changed since it was exported), or a config other than the
    config.json beside ``weights`` (an export preprocesses and labels by the config it carries, so an
    edited config.json would not reach it); None where both match, or it records neither. The message
    names the file, what changed, and the command that refreshes it."""
    from radiofm.checkpoint import sha256_file

    refresh = f"refresh it with `{_refresh_command(name, export_file, precision)}`"
    recorded = recorded_source(export_file)
    if recorded is not None:
        current = sha256_file(weights)
        if recorded != current:
            return (f"{export_file} is stale: it was exported from weights with sha256 {recorded[:12]}, but {weights} "
                    f"(sha256 {current[:12]}) has changed since it was exported; {refresh}")
    config_file = weights.with_name("config.json")
    changes = config_changes(export_file, config_file)
    if changes:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        return (f"{export_file} is stale: {config_file} has changed since it was exported (export -> now: "
                f"{shown}); {refresh}")
    return None


def export_is_current(export_file: Path, weights: Path) -> bool:
    """``export_file`` records the checksum of ``weights`` and the config beside them: it was made from
    this model as it is now (one that records no checksum is not known to be)."""
    from radiofm.checkpoint import sha256_file

    return (recorded_source(export_file) == sha256_file(weights)
            and not config_changes(export_file, weights.with_name("config.json")))


def failed_plan_reason(plan: Path, name: str, precision: str) -> str | None:
    """Why a TensorRT plan must not be loaded although its file is there: its sidecar records that it
    missed its tolerance when it was built (an ONNX file that misses is renamed ``.rejected``; a plan
    keeps its name, with ``"passed": false`` and the failures in its sidecar). None where it passed or
    the sidecar says nothing (a missing sidecar is the engine's to report when it opens the plan)."""
    try:
        sidecar = read_sidecar(plan)
    except FileNotFoundError:
        return None
    if sidecar.get("passed") is not False:
        return None
    failures = "; ".join(sidecar.get("failures") or []) or "see its sidecar"
    return (f"{plan} missed its tolerance against torch when it was built ({failures}); it is kept for "
            f"inspection only: rebuild it with `{_refresh_command(name, plan, precision)}`")


def _weights_beside(export_file: Path) -> Path | None:
    """The model.safetensors of the model folder an export file sits in, where there is one."""
    folder = export_file.parent
    weights = folder / "model.safetensors"
    return weights if (folder / "config.json").is_file() and weights.is_file() else None


# --------------------------------------------------------------------------- choosing an engine
def cuda_visible() -> bool:
    """A CUDA GPU with its driver, asked of libcuda: no torch import, so ONNX applications stay torch-free."""
    return bool(cuda_devices())


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()))


def _torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _trt_usable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return cuda_visible()


# What `radiofm export --engine trt --precision P` builds: model.<P>.plan for each of these.
PLAN_PRECISIONS = ("fp32", "fp16", "int8")
# What each engine opens, for the message when a file is given to the wrong one.
OPENS = {"torch": "a model folder (config.json, model.safetensors) or zoo name",
         "onnx": "an .onnx file, or a folder holding model[.<precision>].onnx",
         "trt": "a .plan file, or a folder holding model.<precision>.plan"}


def find_artifacts(folder: Path) -> dict[str, Path]:
    """Engine files present in a folder: 'weights', 'onnx:<precision>', and 'trt:<precision>' for the
    ``model.<precision>.plan`` that ``radiofm export --engine trt --precision <precision>`` writes."""
    found = {}
    if (folder / "model.safetensors").is_file():
        found["weights"] = folder / "model.safetensors"
    for precision, name in ONNX_FILES.items():
        if (folder / name).is_file():
            found[f"onnx:{precision}"] = folder / name
    for plan in folder.glob("model.*.plan"):
        found[f"trt:{plan.suffixes[0].lstrip('.')}"] = plan
    return found


def _ort_device(device: str, auto_device: bool) -> str:
    """ONNX Runtime's device: on 'auto', the CPU where it has no CUDA or TensorRT provider."""
    return "cpu" if auto_device and device != "cpu" and not _ort_has_cuda() else device


def _torch_device(device: str, auto_device: bool) -> str:
    """The torch engine's device: on 'auto', the CPU where torch has no CUDA (asked only for a GPU
    machine, since it imports torch)."""
    return "cpu" if auto_device and device != "cpu" and not _torch_has_cuda() else device


def _torch_runs(precision: str, device: str, auto_device: bool) -> bool:
    return precision in ("fp32", "bf16") or (precision == "fp16" and _torch_device(device, auto_device) != "cpu")


def _check_trt_device(device: str, auto_device: bool) -> None:
    if not auto_device and device == "cpu":
        raise ValueError("the TensorRT engine runs on a CUDA GPU, not device 'cpu': pass device='cuda' or 'auto'")


def _export_command(name: str, precision: str, engine: str | None = None, out=None, task: str | None = None) -> str:
    words = ["radiofm export", name]
    if engine:
        words.append(f"--engine {engine}")
    if task:
        words.append(f"--task {task}")
    if precision != "fp32" or engine or not task:
        words.append(f"--precision {precision}")
    if engine == "trt" and precision == "int8":
        words.append("--calib DATASET")  # an int8 plan is built from a calibrated QDQ model
    if out is not None:
        words.append(f"--out {out}")
    return " ".join(words)


def _how_to_export(name: str, precision: str, kind: str, explicit: bool, model_dir: Path | None,
                   exports: Path, task: str | None, own_task: str | None) -> str:
    """The command that makes the ``kind`` ('onnx' or 'trt') file of ``precision`` that was not found."""
    if own_task is not None:  # an encoder asked of a model whose exports are of its own head
        opened = "DIR" if precision == "fp32" else f"DIR, precision={precision!r}"
        export_it = (f"`{_export_command(name, precision, task=task, out='DIR')}`, then open DIR "
                     f"(Encoder.from_pretrained({opened}))")
        if kind == "trt":
            return (f"{name} is a {own_task!r} model and `radiofm export --engine trt` builds a model's own head "
                    f"only; run its encoder on ONNX: {export_it}")
        return (f"{name} is a {own_task!r} model, so its exports are of that head, not an encoder: export its "
                f"encoder with {export_it}")
    engine = kind if explicit or kind == "trt" else None
    if model_dir is None:  # an export folder: the model it came from is not known here
        return (f"run `{_export_command('MODEL', precision, engine, out=exports)}` with the model folder or zoo "
                f"name it was exported from")
    return f"run `{_export_command(name, precision, engine)}`"


def open_engine(name_or_path, engine: str = "auto", device: str = "auto", precision: str | None = None,
                threads: int | None = None, task: str | None = None) -> Engine:
    """Open the engine for a model folder (or zoo name), an export folder, or an .onnx / .plan file.

    ``engine="auto"`` takes the fastest one available here: a TensorRT plan on a CUDA GPU, then an
    ONNX export on ONNX Runtime, then torch; where it takes an exported graph that cannot mask padded
    input and the weights are at hand, ``Engine.mask_fallback`` opens the torch engine for captures
    shorter than the model's. ``precision`` None is fp32, or for an .onnx / .plan file the precision
    it was exported at (an explicit one that the file contradicts is refused). ``task`` rebuilds torch
    weights under another head (``"encode"`` opens an MAE or classifier folder as its encoder).

    Where the model's weights are at hand, an export made from other weights (its recorded
    ``source_sha256`` is not the checksum of the present model.safetensors: they changed since) or
    under another config (the one it carries differs from config.json: labels, preprocessing) is
    stale: auto passes over it, and a chosen ``onnx`` / ``trt`` engine refuses it with the command
    that refreshes it (see ``stale_reason``). A file with no weights beside it is taken as it is.
    """
    if engine not in ENGINES + ("auto",):
        raise ValueError(f"engine must be one of {ENGINES + ('auto',)}, got {engine!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (or None), got {precision!r}")
    check_device(device)
    check_threads(threads)
    # device "auto" means the GPU where the chosen runtime can use it, the CPU otherwise
    auto_device = device == "auto"
    if auto_device:
        device = "cuda" if cuda_visible() else "cpu"
    path = Path(name_or_path)
    if path.suffix in EXPORT_SUFFIXES:
        return _open_file(path, engine, device, auto_device, precision, threads)
    if path.is_dir() and any(path.glob("*.onnx")):
        exports = path  # an export folder, or a model folder with its exports beside it
        model_dir = path if (path / "config.json").is_file() else None
    else:
        from radiofm.checkpoint import exports_dir, resolve_model_dir

        path = model_dir = resolve_model_dir(name_or_path)
        exports = exports_dir(path)  # a zoo model's are in the cache, keyed by its weights
    files = {**find_artifacts(exports), **find_artifacts(path)}
    own_task = None  # the model's own task, where ``task`` asks for another head of its weights
    if task is not None and model_dir is not None:
        from radiofm.checkpoint import load_config

        own_task = load_config(model_dir).task
        if own_task == task:
            own_task = None
        else:
            files = {k: v for k, v in files.items() if k == "weights"}  # its exports are of its own head
    asked = precision or "fp32"
    name = str(name_or_path)
    explicit = engine != "auto"
    reasons: dict[str, str | None] = {}

    def stale(key: str) -> str | None:
        """Why the export ``key`` (present in ``files``) must not stand for the model: a plan that missed
        its tolerance when built, or an export made from other weights than the model's own where those
        are at hand; None where neither holds."""
        if key not in reasons:
            kind, key_precision = key.split(":")
            failed = failed_plan_reason(files[key], name, key_precision) if kind == "trt" else None
            reasons[key] = failed or (None if model_dir is None or "weights" not in files
                                      else stale_reason(files[key], files["weights"], name, key_precision))
        return reasons[key]

    if engine == "auto":  # the fastest engine here whose file matches the weights
        if device != "cpu" and f"trt:{asked}" in files and _trt_usable() and not stale(f"trt:{asked}"):
            engine = "trt"
        elif f"onnx:{asked}" in files and not stale(f"onnx:{asked}"):
            engine = "onnx"
        elif "weights" in files and _torch_runs(asked, device, auto_device):
            engine = "torch"
        elif f"onnx:{asked}" in files:  # the export there is stale and nothing else runs this precision
            raise ValueError(stale(f"onnx:{asked}"))
        else:
            raise FileNotFoundError(_nothing_runs(name, asked, device, auto_device, files, model_dir, exports,
                                                  task, own_task))
    if engine == "trt":
        _check_trt_device(device, auto_device)
        if asked not in PLAN_PRECISIONS:
            raise ValueError(f"TensorRT plans are {', '.join(PLAN_PRECISIONS)}, not {asked}; "
                             f"{asked} runs on the torch engine")
        if f"trt:{asked}" not in files:
            raise FileNotFoundError(f"no TensorRT plan for {asked} (model.{asked}.plan) in {exports}: "
                                    + _how_to_export(name, asked, "trt", True, model_dir, exports, task, own_task))
        if stale(f"trt:{asked}"):
            raise ValueError(stale(f"trt:{asked}"))
        eng = TensorRTEngine(files[f"trt:{asked}"])
    elif engine == "onnx":
        if asked not in ONNX_FILES:
            raise ValueError(f"ONNX exports are {', '.join(ONNX_FILES)}, not {asked}; {asked} runs on the torch engine")
        if f"onnx:{asked}" not in files:
            raise FileNotFoundError(f"no {ONNX_FILES[asked]} in {exports}: "
                                    + _how_to_export(name, asked, "onnx", True, model_dir, exports, task, own_task))
        if stale(f"onnx:{asked}"):
            raise ValueError(stale(f"onnx:{asked}"))
        eng = OnnxEngine(files[f"onnx:{asked}"], _ort_device(device, auto_device), threads)
    else:
        if "weights" not in files:
            raise FileNotFoundError(f"{path} has no model.safetensors for the torch engine" + (
                "; it holds exports only: open the model folder or zoo name they were exported from"
                if model_dir is None else ""))
        return TorchEngine(path, _torch_device(device, auto_device), asked, threads, task=task)
    if not explicit and model_dir is not None and "weights" in files and asked != "int8" and not eng.takes_key_padding:
        eng.mask_fallback = _torch_opener(path, device, auto_device, asked, threads, task)
    return eng


def _torch_opener(model_dir: Path, device: str, auto_device: bool, precision: str, threads, task):
    """Opens the torch engine on ``model_dir`` when called (None where torch cannot run ``precision`` here)."""
    def open_torch() -> Engine | None:
        if not _torch_runs(precision, device, auto_device):
            return None
        return TorchEngine(model_dir, _torch_device(device, auto_device), precision, threads, task=task)

    return open_torch


def _nothing_runs(name: str, precision: str, device: str, auto_device: bool, files: dict, model_dir: Path | None,
                  exports: Path, task: str | None, own_task: str | None) -> str:
    """Why ``engine="auto"`` found no engine for ``precision``, and the command that makes one."""
    if precision not in ONNX_FILES:  # bf16: the torch engine's only
        return (f"{precision} runs on the torch engine, and {exports} has no model.safetensors for it: open the "
                f"model folder or zoo name it was exported from")
    wanted = f"no {precision} ONNX export ({ONNX_FILES[precision]})"
    if "weights" not in files:
        return (f"{exports} has {wanted} and no model.safetensors for the torch engine: "
                + _how_to_export(name, precision, "onnx", False, model_dir, exports, task, own_task))
    runs = ("fp16 on a CUDA GPU only" if precision == "fp16"
            else f"fp32, bf16 or (on a CUDA GPU) fp16, not {precision}")
    return (f"{wanted} of {name} was found in {exports}, and the torch engine runs {runs}: "
            + _how_to_export(name, precision, "onnx", False, model_dir, exports, task, own_task))


def _open_file(path: Path, engine: str, device: str, auto_device: bool, precision: str | None, threads) -> Engine:
    """An .onnx or .plan file, refused where ``engine`` or ``precision`` contradicts it."""
    kind, what = ("onnx", "an ONNX file") if path.suffix == ".onnx" else ("trt", "a TensorRT plan")
    if engine not in ("auto", kind):
        raise ValueError(f"{path} is {what}, which engine {kind!r} (or 'auto') runs, not engine={engine!r}: "
                         f"the {engine} engine opens {OPENS[engine]}")
    if kind == "trt":
        _check_trt_device(device, auto_device)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: build it with `radiofm export MODEL --engine trt`")
        recorded = read_sidecar(path).get("precision")
        if precision is not None and recorded is not None and precision != recorded:
            rebuild = (f"build a {precision} plan with `{_export_command('MODEL', precision, 'trt')}`"
                       if precision in PLAN_PRECISIONS else f"{precision} runs on the torch engine")
            raise ValueError(f"{path} is a {recorded} TensorRT plan (as {sidecar_path(path).name} records), not "
                             f"{precision}: leave precision out, or {rebuild}")
        failed = failed_plan_reason(path, "MODEL", recorded or "fp16")
        if failed:
            raise ValueError(failed)
        _refuse_stale_file(path, recorded or "fp16")
        return TensorRTEngine(path)
    _refuse_stale_file(path)
    eng = OnnxEngine(path, _ort_device(device, auto_device), threads)
    if precision is not None and precision != eng.precision:
        other = (f"export a {precision} one with `{_export_command('MODEL', precision)}` ({ONNX_FILES[precision]})"
                 if precision in ONNX_FILES else f"{precision} runs on the torch engine")
        raise ValueError(f"{path} is a {eng.precision} ONNX export (as its metadata records), not {precision}: "
                         f"leave precision out, or {other}")
    return eng


def _refuse_stale_file(path: Path, precision: str | None = None) -> None:
    """An export file named directly that sits in a model folder is checked against that folder's
    weights (a file with no weights beside it is taken as it is): one made from other weights is
    refused. ``precision`` None: an ONNX file's own, from its metadata."""
    weights = _weights_beside(path) if path.is_file() else None
    if weights is None:
        return
    precision = precision or (onnx_metadata_props(path) or {}).get("precision", "fp32")
    reason = stale_reason(path, weights, str(path.parent), precision)
    if reason:
        raise ValueError(reason)
