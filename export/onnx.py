"""ONNX export of radiofm models, validated against torch before it is handed over.

Every file goes through the same steps, after Hugging Face Optimum's exporter: export (or convert),
set the metadata, run the validation set through ONNX Runtime at batch sizes 1, 2, 7 and 16, compare
with the torch model under a stated tolerance, and only then move the file to its final name. A file
that misses its tolerance is kept as ``model.<precision>.rejected.onnx`` (fp32: ``model.rejected.onnx``)
for inspection, recorded in ``onnx.json`` with ``"passed": false``, and never placed under the name
the SDK loads; an earlier file under that name is removed, and a file that passes removes an earlier
rejected one. Every file records the sha256 of the weights it came from (``source_sha256``), by
which the SDK knows an export that the weights have changed since (``radiofm.engines.stale_reason``).

Precisions:
- fp32: the traced graph, simplified with onnxslim; must match torch to 1e-4.
- fp16: weights and activations in half precision, with LayerNormalization, Softmax and Pow kept in
  fp32 (their reductions and squares are what overflow 65504); inputs and outputs stay fp32.
- int8: ONNX Runtime quantisation of the MLP and attention MatMuls, dynamic (no data needed) or
  static QDQ calibrated on a dataset (symmetric int8, the form TensorRT consumes; percentile
  ranges by default, see ``quantize_int8``). Scope ``full``
  (the default) quantises the qkv and output projections too, after smoothing the activations that
  feed them (see ``radiofm.export.smooth``); ``partial`` keeps those two float.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx
import torch

from radiofm.checkpoint import WEIGHTS_FILE, exports_dir, load_config, load_model, resolve_model_dir, sha256_file
from radiofm.config import ModelConfig

from .metadata import (
    CALIB_METHODS,
    CALIB_PERCENTILE,
    DEFAULT_CALIB_METHOD,
    DEFAULT_INT8_SCOPE,
    INT8_SCOPES,
    INPUT_NAME,
    KEY_CONFIG,
    KEY_PADDING,
    KEY_PRECISION,
    KEY_SOURCE,
    KEY_VERSION,
    ONNX_FILES,
    OUTPUT_NAMES,
    PRECISIONS,
    default_int8_scope,
    update_report,
    utc_now,
)
from .samples import Samples, calibration_set, validation_set

DEFAULT_OPSET = 17  # the first opset with a single LayerNormalization op
CALIB_STRIDE_BATCHES = 4  # percentile calibration: batches (of 8) whose activations are held at once

BATCH_SIZES = (1, 2, 7, 16)
FP32_OPS = ("LayerNormalization", "Softmax", "Pow")


@dataclass(frozen=True)
class Tolerance:
    """What an export must reach at every batch size; None = not checked for this precision.

    ``max_abs_diff`` bounds |onnx - torch| over all outputs; ``agreement`` is the fraction of samples
    (classifier) or pixels (segmenter) whose arg-max class matches torch's; ``cosine`` the smallest
    cosine similarity between a sample's torch and ONNX outputs, checked where there are no classes
    to agree on (the encoder).
    """

    max_abs_diff: float | None = None
    agreement: float | None = None
    cosine: float | None = None

    def failures(self, parity: dict[str, Any]) -> list[str]:
        out = []
        if self.max_abs_diff is not None and not parity["max_abs_diff"] <= self.max_abs_diff:
            out.append(f"max_abs_diff {parity['max_abs_diff']:.3g} > {self.max_abs_diff:g}")
        if self.agreement is not None and parity["agreement"] is not None and not parity["agreement"] >= self.agreement:
            out.append(f"agreement {parity['agreement']:.4f} < {self.agreement:g}")
        if self.cosine is not None and parity["agreement"] is None and not parity["cosine"] >= self.cosine:
            out.append(f"cosine {parity['cosine']:.5f} < {self.cosine:g}")
        return out


TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-4, agreement=1.0),
    "fp16": Tolerance(agreement=0.995, cosine=0.999),
    "int8": Tolerance(agreement=0.99, cosine=0.99),
}


class ExportError(RuntimeError):
    """An export that could not be produced or did not pass its validation."""


@dataclass
class ExportResult:
    precision: str
    path: Path  # the placed file, or the rejected copy when validation failed
    entry: dict[str, Any] = field(repr=False)  # what was written to onnx.json

    @property
    def passed(self) -> bool:
        return bool(self.entry["passed"])


# --------------------------------------------------------------------------- export and convert
def export_graph(model: torch.nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                 variable_length: bool = False) -> onnx.ModelProto:
    """Trace ``model`` (eval mode) into one self-contained ONNX file with a dynamic batch axis, simplified.

    The TorchScript exporter is used: it needs no extra package, writes one file, keeps
    LayerNormalization whole from opset 17, and gave the faster int8 graphs on CPU.
    ``variable_length`` adds a second input, ``key_padding`` (batch, patches) bool, True where a
    patch holds signal: padded patches are masked out of attention and pooling, as in the torch model.
    """
    cfg: ModelConfig = model.cfg
    if cfg.task not in OUTPUT_NAMES:
        raise ExportError(f"a {cfg.task!r} model has no deployable head; export a classify, segment or encode model")
    if opset < DEFAULT_OPSET:
        raise ExportError(f"opset {opset} splits LayerNormalization into elementwise ops; use opset {DEFAULT_OPSET} or newer")
    outputs = OUTPUT_NAMES[cfg.task]
    example = (torch.zeros(2, cfg.in_chans, *cfg.img_size),)
    names = [INPUT_NAME]
    if variable_length:
        example += (torch.ones(2, cfg.grid_size[0] * cfg.grid_size[1], dtype=torch.bool),)
        names.append(KEY_PADDING)
    with warnings.catch_warnings():
        # Tracing warns about the input checks (they hold for every traced batch) and about the
        # exporter's deprecation; neither concerns the graph written here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), example, str(path), input_names=names, output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [*names, *outputs]},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    return simplify(onnx.load(str(path)))


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and shape arithmetic with onnxslim; the validation that follows checks the result."""
    import onnxslim

    return onnxslim.slim(model)


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Half-precision weights and activations; FP32_OPS and the graph's inputs/outputs stay fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    return convert_float_to_float16(
        model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
    )


def int8_nodes(graph: onnx.GraphProto, scope: str = DEFAULT_INT8_SCOPE) -> list[str]:
    """The MatMuls to quantise. ``partial``: those int8 pays off and holds up on without help, the
    MLPs' (two thirds of a block's weights) and attention's score product (q k^T). ``full``: the qkv
    and output projections too, for a smoothed graph.

    ONNX Runtime's dynamic quantiser converts only MatMuls with a constant weight: the score product
    (activation by activation) stays float there and is quantised in static QDQ only.
    Unsmoothed, the qkv and output projections stay float: their inputs (LayerNorm outputs, attention
    outputs) carry per-channel outliers that a single per-tensor int8 scale cannot cover; on
    signals-nano they alone took arg-max agreement from 100 % to 81-94 %. The value product (softmax
    probabilities times v) stays float in both scopes: over 256 tokens an even share (1/256) is half
    an int8 step of a [0, 1] range, so a spread-out row rounds to a few large weights; on
    signals-nano quantising that product alone took static QDQ's agreement to 89 %. The patch
    embedding and the heads stay float too (under 1 % of the work, and a head's rounding moves
    logits directly).
    """
    if scope not in INT8_SCOPES:
        raise ExportError(f"int8 scope must be one of {', '.join(INT8_SCOPES)}, got {scope!r}")
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and not n.name.endswith("attn/MatMul_1")]
    if scope == "full":
        return [name for name in matmuls if "/mlp/" in name or "/attn/" in name]
    return [name for name in matmuls if "/mlp/" in name or name.endswith("attn/MatMul")]


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calib: np.ndarray | None = None,
                  batch_size: int = 8, scope: str = DEFAULT_INT8_SCOPE, calib_method: str = DEFAULT_CALIB_METHOD) -> str:
    """int8 MatMuls (see ``int8_nodes``, ``scope``) with ONNX Runtime; returns the method ("dynamic" or "static").

    Without ``calib`` activations are quantised at run time (dynamic). With ``calib`` (N, C, H, W)
    the activation ranges are calibrated on it (``calib_method``: ``percentile``, the range holding
    ``CALIB_PERCENTILE`` % of each tensor's |values|, or ``minmax``, the whole range) and written as
    QuantizeLinear/DequantizeLinear pairs (static QDQ), symmetric int8 with per-channel weights, which
    TensorRT builds from directly. LayerNorm, Softmax and GELU stay in float.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calib_method not in CALIB_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {calib_method!r}")

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        nodes = int8_nodes(graph, scope)
        if not nodes:
            raise ExportError(f"{src} has no MLP or attention MatMuls named as radiofm exports them; nothing to quantise")
        if calib is None:
            # Full scope: per-channel weights, since smoothing moved range into them, on 7 bits
            # (reduce_range): CPUs without VNNI (AVX2) sum u8 x s8 pairs in saturating int16, and
            # full-range per-channel weights overflow it (a vit-micro lost 4 % agreement that way).
            # The file runs anywhere, so it is made safe for every CPU.
            full = scope == "full"
            quantize_dynamic(prepared, dst, op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                             weight_type=QuantType.QInt8, per_channel=full, reduce_range=full)
            return "dynamic"
        if len(calib) == 0:
            raise ExportError("static int8 calibration needs at least one sample")
        options = {"ActivationSymmetric": True, "WeightSymmetric": True}
        reader = _BatchReader(calib, batch_size, _key_padding_width(graph))
        if calib_method == "percentile":
            options["CalibPercentile"] = CALIB_PERCENTILE
            # The histogram calibrator holds every calibrated activation of the batches it is given
            # (minmax only their extremes): fed 128 vit-s samples at once it peaked at 16.9 GB, and 256
            # would not fit 24 GiB. A few batches at a time, each stretch is binned and let go: 5.1 GB.
            options["CalibStridedMinMax"] = _stride(len(reader), CALIB_STRIDE_BATCHES)
        # The histogram calibrators print their progress to stdout, where the CLI writes its tables.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                prepared, dst, reader, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile if calib_method == "percentile" else CalibrationMethod.MinMax,
                extra_options=options,
            )
        return "static"


def _stride(batches: int, most: int) -> int:
    """The largest number of batches, at most ``most``, that divides ``batches`` (quantize_static
    calibrates in equal stretches)."""
    return max(d for d in range(1, min(most, batches) + 1) if batches % d == 0)


def _calibration_words(calibration: dict[str, Any]) -> str:
    if calibration["method"] == "percentile":
        return f"percentile-{calibration['percentile']:g}"
    return calibration["method"]


def _key_padding_width(graph: onnx.GraphProto) -> int | None:
    for i in graph.input:
        if i.name == KEY_PADDING:
            return i.type.tensor_type.shape.dim[1].dim_value
    return None


class _BatchReader:
    """onnxruntime's CalibrationDataReader protocol over an in-memory array, in batches; ``set_range``
    (in batches) lets quantize_static calibrate a stretch of them at a time (``CalibStridedMinMax``)."""

    def __init__(self, images: np.ndarray, batch_size: int, patches: int | None = None):
        self._all = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        self._batches = iter(self._all)
        self._patches = patches  # graphs with a key_padding input are calibrated on full-length input

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._batches = iter(self._all[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        feeds = {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
        if self._patches:
            feeds[KEY_PADDING] = np.ones((len(batch), self._patches), bool)
        return feeds


def set_metadata(model: onnx.ModelProto, cfg: ModelConfig, source_sha256: str, precision: str) -> onnx.ModelProto:
    onnx.helper.set_model_props(model, {
        KEY_CONFIG: cfg.to_json(),
        KEY_VERSION: _radiofm_version(),
        KEY_SOURCE: source_sha256,
        KEY_PRECISION: precision,
    })
    model.producer_name = "radiofm"
    model.producer_version = _radiofm_version()
    return model


# --------------------------------------------------------------------------- validation
def onnx_session(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_torch(model: torch.nn.Module, images: np.ndarray, batch_size: int = 16,
              key_padding: np.ndarray | None = None) -> list[np.ndarray]:
    outs: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(images[i:i + batch_size])
            y = model(x) if key_padding is None else model(x, torch.from_numpy(key_padding[i:i + batch_size]))
            outs.append([t.numpy() for t in (y if isinstance(y, tuple) else (y,))])
    return [np.concatenate(parts) for parts in zip(*outs)]


def has_key_padding(session) -> bool:
    return KEY_PADDING in {i.name for i in session.get_inputs()}


def run_onnx(session, images: np.ndarray, batch_size: int, key_padding: np.ndarray | None = None) -> list[np.ndarray]:
    """Outputs in batches; a graph with a ``key_padding`` input gets ``key_padding`` (all True if None)."""
    if has_key_padding(session) and key_padding is None:
        key_padding = np.ones((len(images), session.get_inputs()[1].shape[1]), bool)
    outs = []
    for i in range(0, len(images), batch_size):
        feeds = {INPUT_NAME: images[i:i + batch_size]}
        if key_padding is not None:
            feeds[KEY_PADDING] = key_padding[i:i + batch_size]
        outs.append(session.run(None, feeds))
    return [np.concatenate(parts).astype(np.float32) for parts in zip(*outs)]


def padded_captures(images: np.ndarray, grid: tuple[int, int], patch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``images`` cut to shorter captures as the SDK pads them: each keeps its first 1..W patch columns
    and the rest is zeros; returns the images and their (N, patches) key_padding mask."""
    rng = np.random.default_rng(seed)
    gh, gw = grid
    cols = rng.integers(1, gw + 1, len(images))
    padded = images.copy()
    valid = np.zeros((len(images), gh, gw), bool)
    for n, c in enumerate(cols):
        padded[n, ..., c * patch:] = 0.0
        valid[n, :, :c] = True
    return padded, valid.reshape(len(images), -1)


def padded_parity(model: torch.nn.Module, images: np.ndarray,
                  run: Callable[[np.ndarray, np.ndarray], list[np.ndarray]]) -> dict[str, Any]:
    """``compare`` of torch and a candidate engine on ``images`` cut to shorter captures and padded as
    the SDK pads them (``padded_captures``); ``run(images, key_padding)`` gives the candidate's outputs.
    For a segmenter only the valid pixels count: a padded pixel's own logits mean nothing."""
    cfg = model.cfg
    padded, valid = padded_captures(images, cfg.grid_size, cfg.patch_size)
    reference = run_torch(model, padded, 16, valid)
    candidate = run(padded, valid)
    if cfg.task == "segment":
        pixels = np.repeat(np.repeat(valid.reshape(len(valid), *cfg.grid_size), cfg.patch_size, 1),
                           cfg.patch_size, 2)[:, None]
        reference = [np.where(pixels, r, 0) for r in reference]
        candidate = [np.where(pixels, c, 0) for c in candidate]
    return compare(cfg.task, reference, candidate)


def compare(task: str, reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, Any]:
    """max |diff| over all outputs, arg-max agreement (classes), smallest per-sample cosine (first output)."""
    max_abs = max(float(np.abs(r - c).max()) for r, c in zip(reference, candidate))
    ref, cand = reference[0], candidate[0]
    agreement = None
    if task in ("classify", "segment"):
        agreement = float((ref.argmax(1) == cand.argmax(1)).mean())
    a, b = ref.reshape(len(ref), -1).astype(np.float64), cand.reshape(len(cand), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"max_abs_diff": max_abs, "agreement": agreement, "cosine": float(cos.min())}


def accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy (classifier) or pixel accuracy (segmenter)."""
    return float((logits.argmax(1) == targets).mean())


def validate(session, task: str, reference: Sequence[np.ndarray], images: np.ndarray,
             batch_sizes: Iterable[int] = BATCH_SIZES) -> tuple[dict[str, dict[str, Any]], list[np.ndarray]]:
    """Parity with torch's ``reference`` outputs at each batch size; the whole set runs at every size.

    A size past the number of samples runs them all in one batch, which is the same run as a batch of
    exactly that many: it is checked once, under the size that ran (16 asked of 3 samples is "3").
    """
    parity, outputs = {}, None
    for b in dict.fromkeys(min(b, len(images)) for b in batch_sizes):
        outputs = run_onnx(session, images, b)
        parity[str(b)] = compare(task, reference, outputs)
    return parity, outputs


# --------------------------------------------------------------------------- the export command
def default_samples(cfg: ModelConfig) -> int:
    """How many validation samples an export of ``cfg`` is checked on when not told.

    A classifier's bounds are fractions of per-sample decisions: on 64 samples 99 % (int8) and
    99.5 % (fp16) agreement both mean 100 %, so one capture whose own fp32 decision is a near tie
    (top two logits closer than the precision's rounding) failed the export. 256 lets the bounds say
    what they state (two and one disagreements). A segmenter agrees per pixel and an encoder by
    cosine, so 64 is plenty there (and LTE/NR frames are slow to make).
    """
    return 256 if cfg.task == "classify" else 64


def export(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    precision: str = "fp32",
    calib: str | os.PathLike | Samples | None = None,
    task: str | None = None,
    samples: int | None = None,
    validation: Samples | None = None,
    atol: float | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
    variable_length: bool = False,
    int8_scope: str | None = None,
    calib_method: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[ExportResult]:
    """Export a model folder (or zoo name) to ONNX at ``precision``, validated; returns one result
    per file written: fp32 always (the other precisions derive from it), then the one asked for.

    ``out`` defaults to the model folder (a zoo model's: see ``radiofm.checkpoint.exports_dir``).
    ``calib`` (a dataset folder, or prepared ``Samples``) makes int8 static QDQ and is where its
    accuracy change is measured; without it int8 is dynamic and the change is measured on the
    validation set. The validation set is ``samples`` synthetic inputs (see ``validation_set``; None:
    ``default_samples``) unless ``validation`` gives one. ``atol`` replaces the max |diff| tolerance of ``precision``
    (see ``TOLERANCES``). ``task`` exports another head of the same weights (``encode``
    of an MAE); it then needs its own ``out``. ``variable_length`` gives the graph a ``key_padding``
    input for captures shorter than the model's (see ``export_graph``), validated on padded input too.
    ``int8_scope`` (``partial`` or ``full``, see ``int8_nodes``; None: ``default_int8_scope``, full but
    for a variable-length export):
    ``full`` also quantises the qkv and output projections, after smoothing their inputs with channel
    ranges measured on the calibration data (or, without it, on the validation inputs: a range
    measurement, the function is unchanged). ``calib_method`` (with ``calib``; None:
    ``DEFAULT_CALIB_METHOD``) is how the activation ranges are read from it (see ``quantize_int8``).
    """
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if int8_scope is not None and int8_scope not in INT8_SCOPES:
        raise ExportError(f"int8 scope must be one of {', '.join(INT8_SCOPES)}, got {int8_scope!r}")
    if int8_scope is not None and precision != "int8":
        raise ExportError("--int8-scope chooses what int8 quantises; use it with --precision int8")
    scope_why = ""
    if int8_scope is None:
        int8_scope = default_int8_scope(variable_length)
        scope_why = ", the default for a variable-length export" if variable_length else ""
    if calib is not None and precision != "int8":
        raise ExportError("--calib calibrates int8 static quantisation; use it with --precision int8")
    if calib_method is not None and calib is None:
        raise ExportError("--calib-method chooses how --calib data sets the int8 ranges; use it with --calib DIR")
    if calib_method is not None and calib_method not in CALIB_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {calib_method!r}")
    calib_method = calib_method or DEFAULT_CALIB_METHOD
    if calib is not None and not isinstance(calib, Samples) and not Path(calib).is_dir():
        raise ExportError(f"calibration folder {calib} does not exist")
    if (samples is not None and samples < 1) or any(b < 1 for b in batch_sizes):
        raise ExportError("samples and batch sizes must be positive")
    folder = resolve_model_dir(source)
    cfg = load_config(folder)
    if (task or cfg.task) not in OUTPUT_NAMES:
        raise ExportError(f"a {task or cfg.task!r} model has no deployable head; export a classify, segment or encode "
                          f"model (an MAE's encoder: --task encode)")
    if task is not None and task != cfg.task and (out is None or Path(out).resolve() in
                                                  (folder.resolve(), exports_dir(folder).resolve())):
        # the folder's own exports are of its own head: an encoder written there would stand for it
        raise ExportError(f"{folder} holds a {cfg.task} model, and {exports_dir(folder)} holds the exports of "
                          f"that head; exporting it as {task!r} needs --out DIR, another folder")
    model = load_model(folder, task=task)
    cfg = model.cfg
    # Read (and checked against the model: its kind of input, its channels) before any work is done.
    calib_set = calib if isinstance(calib, Samples) or calib is None else calibration_set(calib, cfg)
    out = Path(out) if out is not None else exports_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    log(f"writing to {out}")

    val = validation if validation is not None else validation_set(cfg, samples or default_samples(cfg))
    log(f"validation set: {len(val.images)} samples, {val.source}")
    tolerances = dict(TOLERANCES)
    if atol is not None:
        tolerances[precision] = replace(tolerances[precision], max_abs_diff=atol)
    checker = _Checker(model, out, sha256_file(folder / WEIGHTS_FILE), val, run_torch(model, val.images),
                       tolerances, tuple(batch_sizes), opset, threads, log)

    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        log(f"exporting {cfg.name} {cfg.task} (opset {opset})")
        onnx.save(checker.stamp(export_graph(model, fp32, opset, variable_length), "fp32"), str(fp32))
        results = [checker.finish(fp32, "fp32")]
        if not results[0].passed:
            return results  # nothing sound can be derived from a graph that does not match torch
        fp32 = results[0].path
        if precision == "fp16":
            log("converting to fp16 (LayerNorm, Softmax, Pow kept fp32)")
            half = Path(tmp) / "fp16.onnx"
            onnx.save(checker.stamp(convert_fp16(onnx.load(str(fp32))), "fp16"), str(half))
            results.append(checker.finish(half, "fp16"))
        elif precision == "int8":
            source, smoothing = fp32, None
            if int8_scope == "full":
                from .smooth import DEFAULT_ALPHA, smooth

                basis = calib_set or val  # channel ranges only: the function itself does not change
                log(f"smoothing the qkv, proj and fc1 inputs (alpha {DEFAULT_ALPHA}) on {len(basis.images)} samples, "
                    f"{basis.source}")
                source = Path(tmp) / "smoothed.onnx"
                onnx.save(export_graph(smooth(model, basis.images), source, opset, variable_length), str(source))
                smoothing = {"alpha": DEFAULT_ALPHA, "samples": len(basis.images), "source": basis.source}
            calibration = None if calib_set is None else (
                {"method": "percentile", "percentile": CALIB_PERCENTILE} if calib_method == "percentile"
                else {"method": calib_method})
            log(f"quantising to int8, {int8_scope} scope{scope_why} "
                + (f"(static QDQ, {_calibration_words(calibration)} ranges from {calib_set.source})" if calib_set
                   else "(dynamic)"))
            q = Path(tmp) / "int8.onnx"
            method = quantize_int8(source, q, calib_set.images if calib_set else None, scope=int8_scope,
                                   calib_method=calib_method)
            onnx.save(checker.stamp(onnx.load(str(q)), "int8"), str(q))
            results.append(checker.finish(q, "int8", method=method, calib_set=calib_set, scope=int8_scope,
                                          smoothing=smoothing, calibration=calibration))
    return results


@dataclass
class _Checker:
    """What every candidate file of one export is checked against: the torch model, its outputs on
    the validation set, and the tolerances. ``finish`` validates a file and places it."""

    model: torch.nn.Module
    out: Path
    source_sha: str
    val: Samples
    reference: list[np.ndarray]
    tolerances: dict[str, Tolerance]
    batch_sizes: tuple[int, ...]
    opset: int
    threads: int | None
    log: Callable[[str], None] = lambda _: None

    def stamp(self, graph: onnx.ModelProto, precision: str) -> onnx.ModelProto:
        return set_metadata(graph, self.model.cfg, self.source_sha, precision)

    def finish(self, path: Path, precision: str, method: str | None = None,
               calib_set: Samples | None = None, scope: str | None = None,
               smoothing: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None) -> ExportResult:
        """Validate a candidate file, record it in onnx.json and move it to its final (or rejected) name."""
        task = self.model.cfg.task
        tolerance = self.tolerances[precision]
        session = onnx_session(path, self.threads)
        parity, outputs = validate(session, task, self.reference, self.val.images, self.batch_sizes)
        if has_key_padding(session):  # shorter captures, padded as the SDK pads them, behind the mask
            parity["padded"] = padded_parity(self.model, self.val.images, lambda x, valid: run_onnx(session, x, 16, valid))
        failures = [f"batch {b}: {msg}" for b, p in parity.items() for msg in tolerance.failures(p)]
        entry: dict[str, Any] = {
            "file": ONNX_FILES[precision] if not failures else ONNX_FILES[precision].replace(".onnx", ".rejected.onnx"),
            "precision": precision,
            "opset": self.opset,
            "inputs": [i.name for i in session.get_inputs()],
            "outputs": [o.name for o in session.get_outputs()],
            "batch": "dynamic",
            "validation": {"samples": len(self.val.images), "source": self.val.source},
            "parity": parity,
            "tolerance": _checked(tolerance, task),
            "passed": not failures,
            "failures": failures,
            "source_sha256": self.source_sha,
            "radiofm_version": _radiofm_version(),
            "created": utc_now(),
        }
        if precision == "int8":
            entry["method"] = method
            entry["scope"] = scope
            entry["smoothing"] = smoothing
            entry["calibration"] = calibration  # static: how the ranges were read from the data
            entry.update(self.accuracy_change(session, outputs, calib_set))
        final = self.out / entry["file"]
        del session  # release the file before it is moved
        os.replace(path, final)
        # The name of this precision that the file did not take holds an earlier export's file: a
        # rejected one is superseded by a file that passed; a loadable one, by a rejection, is
        # removed, so that the SDK never loads an older export as if it were the one just refused
        # (made from other weights, or under other options, than the export that stands in onnx.json).
        other = self.out / (ONNX_FILES[precision].replace(".onnx", ".rejected.onnx") if not failures
                            else ONNX_FILES[precision])
        if other.is_file():
            other.unlink()
            if failures:
                self.log(f"removed the earlier {other.name}: the {precision} export that replaces it missed its "
                         f"tolerance (kept as {final.name})")
        update_report(self.out, precision, entry)
        return ExportResult(precision, final, entry)

    def accuracy_change(self, session, outputs: list[np.ndarray], calib_set: Samples | None) -> dict[str, Any]:
        """int8 accuracy minus torch fp32 accuracy, on the calibration data when it has labels, else on
        the validation set; None where neither has labels for this model."""
        data = calib_set if calib_set is not None and calib_set.targets is not None else self.val
        if self.model.cfg.task == "encode" or data.targets is None:
            return {"accuracy_change": None, "accuracy": None}
        if data is self.val:
            torch_logits, onnx_logits = self.reference[0], outputs[0]
        else:
            torch_logits, onnx_logits = run_torch(self.model, data.images)[0], run_onnx(session, data.images, 16)[0]
        acc_torch, acc_onnx = accuracy(torch_logits, data.targets), accuracy(onnx_logits, data.targets)
        return {
            "accuracy_change": acc_onnx - acc_torch,
            "accuracy": {"torch_fp32": acc_torch, "onnx_int8": acc_onnx, "samples": len(data.images),
                         "data": data.source},
        }


def _checked(tolerance: Tolerance, task: str) -> dict[str, float]:
    """The bounds that apply to ``task``: agreement where there are classes, cosine where there are none."""
    unused = "agreement" if task == "encode" else "cosine"
    return {k: v for k, v in asdict(tolerance).items() if v is not None and k != unused}


def _radiofm_version() -> str:
    from radiofm import __version__

    return __version__
