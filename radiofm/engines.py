"""Inference engines behind one small interface: run a batch of model input, get the outputs.

``TorchEngine`` runs the safetensors model, ``OnnxEngine`` an exported ONNX file through ONNX Runtime
(TensorRT, then CUDA, then CPU execution provider), ``TensorRTEngine`` a serialized TensorRT plan.
Each imports its runtime lazily, so an application that runs ONNX never imports torch.
Every engine is safe to call from many threads: ONNX Runtime sessions are; the others lock where
the runtime is not (CUDA graphs, TensorRT execution contexts).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from radiofm.config import ModelConfig

ENGINES = ("torch", "onnx", "trt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# The contract with radiofm.export, which writes what these engines read: file names, graph I/O
# names and the metadata key that carries the model config.
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
INPUT_NAME = "images"
KEY_PADDING = "key_padding"
OUTPUT_NAMES = {"classify": ["logits"], "segment": ["logits"], "encode": ["tokens", "pooled"]}
ONNX_CONFIG_KEY = "radiofm_config"


def output_names(cfg: ModelConfig) -> list[str]:
    return OUTPUT_NAMES[cfg.task]


class Engine:
    """What every engine offers. ``run`` takes (N, C, H, W) float32 and returns the outputs in order."""

    name: str = ""
    cfg: ModelConfig
    device: str = "cpu"
    precision: str = "fp32"
    max_batch: int | None = None
    input_name = INPUT_NAME

    @property
    def output_names(self) -> list[str]:
        return output_names(self.cfg)

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


def find_artifacts(folder: Path) -> dict[str, Path]:
    """Engine files present in a folder: 'weights', 'onnx:<precision>', 'trt:<precision>'."""
    found = {}
    if (folder / "model.safetensors").is_file():
        found["weights"] = folder / "model.safetensors"
    for precision, name in ONNX_FILES.items():
        if (folder / name).is_file():
            found[f"onnx:{precision}"] = folder / name
    for plan in folder.glob("model.*.plan"):
        found[f"trt:{plan.suffixes[0].lstrip('.')}"] = plan
    return found


def open_engine(name_or_path, engine: str = "auto", device: str = "auto", precision: str = "fp32",
                threads: int | None = None, task: str | None = None) -> Engine:
    """Open the engine for a model folder (or zoo name), an export folder, or an .onnx / .plan file.

    ``engine="auto"`` takes the fastest one available here: a TensorRT plan on a CUDA GPU, then an
    ONNX export on ONNX Runtime, then torch. ``task`` rebuilds torch weights under another head
    (``"encode"`` opens an MAE or classifier folder as its encoder).
    """
    if engine not in ENGINES + ("auto",):
        raise ValueError(f"engine must be one of {ENGINES + ('auto',)}, got {engine!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    # device "auto" means the GPU where the chosen runtime can use it, the CPU otherwise
    auto_device = device == "auto"
    if auto_device:
        device = "cuda" if cuda_visible() else "cpu"
    path = Path(name_or_path)
    if path.suffix == ".onnx":
        return OnnxEngine(path, "cpu" if auto_device and not _ort_has_cuda() else device, threads)
    if path.suffix == ".plan":
        return TensorRTEngine(path)
    if path.is_dir() and any(path.glob("*.onnx")):
        exports = path  # an export folder, or a model folder with its exports beside it
    else:
        from radiofm.checkpoint import exports_dir, resolve_model_dir

        path = resolve_model_dir(name_or_path)
        exports = exports_dir(path)  # a zoo model's are in the cache, keyed by its weights
    files = {**find_artifacts(exports), **find_artifacts(path)}
    trt_key = f"trt:{'fp16' if precision == 'fp32' else precision}"  # TensorRT's float engines are fp16
    if engine == "auto":
        if device == "cuda" and _trt_usable() and trt_key in files:
            engine = "trt"
        elif f"onnx:{precision}" in files:
            engine = "onnx"
        else:
            engine = "torch"
    if engine == "trt":
        if trt_key not in files:
            raise FileNotFoundError(f"no TensorRT plan for {precision} in {exports}: "
                                    f"run `radiofm export {name_or_path} --engine trt --precision {precision}`")
        return TensorRTEngine(files[trt_key])
    if engine == "onnx":
        key = f"onnx:{precision}"
        if key not in files:
            raise FileNotFoundError(f"no {ONNX_FILES.get(precision, precision)} in {exports}: "
                                    f"run `radiofm export {name_or_path} --engine onnx --precision {precision}`")
        return OnnxEngine(files[key], "cpu" if auto_device and not _ort_has_cuda() else device, threads)
    if "weights" not in files:
        raise FileNotFoundError(f"{path} has no model.safetensors for the torch engine")
    if auto_device and device == "cuda" and not _torch_has_cuda():
        device = "cpu"
    return TorchEngine(path, device, precision, threads, task=task)
