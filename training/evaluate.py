"""Evaluation of a model folder on a dataset: the figures ``radiofm eval`` prints and writes.

Classification and segmentation share one confusion matrix (items or pixels): accuracy, per-class
accuracy (recall) and its mean, IoU and mIoU for segmentation, and accuracy per SNR bin where the
dataset records a per-item SNR. An MAE is scored by its masked-patch reconstruction MSE.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from .prepared import PreparedData, input_kind, open_data, prepare_data

SNR_BIN_DB = 5.0
SNR_TARGET_DB = 10.0


@torch.no_grad()
def predict(model, data: PreparedData, batch_size: int = 64) -> torch.Tensor:
    """Class indices (N,) or class maps (N, H, W)."""
    out = [model(data.x[i : i + batch_size]).argmax(1) for i in range(0, len(data), batch_size)]
    return torch.cat(out)


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted."""
    idx = target.flatten() * num_classes + pred.flatten()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes).numpy()


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def classification_metrics(cm: np.ndarray, labels: list[str], segment: bool) -> dict:
    tp, true, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    per_class = {lab: _ratio(tp[c], true[c]) for c, lab in enumerate(labels)}
    present = [v for v in per_class.values() if v is not None]
    metrics = dict(accuracy=float(tp.sum() / cm.sum()), mean_class_accuracy=float(np.mean(present)),
                   per_class_accuracy=per_class)
    if segment:
        iou = {lab: _ratio(tp[c], true[c] + predicted[c] - tp[c]) for c, lab in enumerate(labels)}
        metrics["per_class_iou"] = iou
        metrics["miou"] = float(np.mean([v for v in iou.values() if v is not None]))
    return metrics


def accuracy_by_snr(correct: np.ndarray, snr_db: np.ndarray) -> dict:
    """{"lo..hi dB": {"n": items, "accuracy": ...}} over SNR_BIN_DB-wide bins; items without an SNR are left out."""
    known = ~np.isnan(snr_db)
    bins = {}
    lows = np.floor(snr_db[known] / SNR_BIN_DB) * SNR_BIN_DB
    for lo in np.unique(lows):
        sel = lows == lo
        bins[f"{lo:g}..{lo + SNR_BIN_DB:g} dB"] = dict(n=int(sel.sum()), accuracy=float(correct[known][sel].mean()))
    return bins


@torch.no_grad()
def evaluate_model(model, data: PreparedData, batch_size: int = 64) -> tuple[dict, np.ndarray | None]:
    """Metrics of ``model`` on ``data``; the confusion matrix too (None for an MAE)."""
    cfg = model.cfg
    if cfg.task == "mae":
        gen = torch.Generator().manual_seed(0)
        losses = [float(model(data.x[i : i + batch_size], cfg.mask_ratio, gen)[0]) * len(data.x[i : i + batch_size])
                  for i in range(0, len(data), batch_size)]
        return dict(reconstruction_mse=sum(losses) / len(data), mask_ratio=cfg.mask_ratio), None
    if cfg.task not in ("classify", "segment"):
        raise ValueError(f"cannot evaluate a {cfg.task!r} model; evaluate a classifier, segmenter or MAE")
    pred = predict(model, data, batch_size)
    cm = confusion(pred, data.y, cfg.num_classes)
    metrics = classification_metrics(cm, cfg.class_names, cfg.task == "segment")
    if data.snr_db is not None:
        correct = (pred == data.y).float().flatten(1).mean(1).numpy() if cfg.task == "segment" else (pred == data.y).numpy()
        metrics["accuracy_by_snr"] = accuracy_by_snr(correct.astype(np.float64), data.snr_db)
        strong = data.snr_db >= SNR_TARGET_DB
        if strong.any():
            metrics[f"accuracy_snr_ge_{SNR_TARGET_DB:g}db"] = float(correct[strong].mean())
    metrics["confusion_matrix"] = cm.tolist()
    return metrics, cm


KIND_NAMES = {"spectrogram": "power spectrograms", "csi": "CSI amplitudes (antennas as channels)"}


def check_kind(dataset, cfg, data_dir, model_name) -> None:
    """Refuse data of another kind than the model's input (``cfg.preprocess.kind``): a spectrogram model
    would take a CSI item's antennas for separate spectrograms and still print a figure."""
    if len(dataset) == 0:
        return
    kind, wanted = input_kind(dataset), cfg.preprocess.kind
    if kind != wanted:
        raise ValueError(f"{data_dir} holds {KIND_NAMES.get(kind, kind)}; {model_name} ({cfg.task}) takes "
                         f"{KIND_NAMES.get(wanted, wanted)}: evaluate it on data of that kind")


class EngineModel:
    """An engine (``radiofm.engines``) called as ``predict`` calls a torch model: a batch of model
    input in, the logits out."""

    def __init__(self, engine):
        self.engine, self.cfg = engine, engine.cfg

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.engine.run(x.numpy())[0])


def model_task(name_or_path) -> str:
    """The task of a model folder, run folder, zoo name or exported file, read without loading weights."""
    from radiofm.checkpoint import load_config
    from radiofm.engines import EXPORT_SUFFIXES, recorded_config

    path = Path(name_or_path)
    if path.suffix in EXPORT_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        config = recorded_config(path)
        if config is None:
            raise ValueError(f"{path} records no radiofm model config: export it with `radiofm export`")
        return config["task"]
    return load_config(name_or_path).task


def evaluate(name_or_path: str, data_dir: str | Path, batch_size: int = 64, threads: int | None = None,
             engine: str | None = None, precision: str | None = None) -> dict:
    """Load a model (folder, run folder, zoo name, or an exported .onnx / .plan file), prepare
    ``data_dir`` and measure it.

    ``engine`` and ``precision`` choose what runs it, as ``radiofm.engines.open_engine`` opens it:
    by default the torch model in fp32 (an exported file: the runtime it is for, at its own precision),
    or an export (``"onnx"``, ``"trt"``) or torch in another precision, so the figures are those of
    what is deployed. An MAE is scored by torch in fp32 only.
    """
    from radiofm.checkpoint import load_model, resolve_model_dir
    from radiofm.engines import EXPORT_SUFFIXES, open_engine

    if batch_size < 1:
        raise ValueError(f"--batch must be at least 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    exported = Path(name_or_path).suffix in EXPORT_SUFFIXES
    engine = engine or ("auto" if exported else "torch")  # auto opens an exported file on its own runtime
    if engine == "torch" and (precision or "fp32") == "fp32" and not exported:
        model = load_model(name_or_path)
        described = "torch (cpu, fp32)"
    else:
        if model_task(name_or_path) == "mae":
            raise ValueError(f"{name_or_path} is an MAE: it is scored by its reconstruction error, with torch in "
                             f"fp32 on its weights; leave out --engine and --precision")
        model = EngineModel(open_engine(name_or_path, engine, "auto", precision, threads))
        batch_size = min(batch_size, model.engine.max_batch or batch_size)  # a TensorRT plan's profile
        described = model.engine.describe()
    dataset = open_data(data_dir, model.cfg.task)
    check_kind(dataset, model.cfg, data_dir, name_or_path)
    if model.cfg.task != "mae" and list(dataset.classes) != model.cfg.class_names:
        raise ValueError(f"{data_dir} has classes {dataset.classes}; the model predicts {model.cfg.class_names}")
    data = prepare_data(dataset, model.cfg)
    t0 = time.perf_counter()
    metrics, _ = evaluate_model(model, data, batch_size)
    head = dict(model=str(name_or_path if exported else resolve_model_dir(name_or_path)), engine=described,
                data=str(data_dir), items=len(data), task=model.cfg.task, eval_time_s=round(time.perf_counter() - t0, 2))
    return {**head, **metrics}


def save_confusion_png(cm: np.ndarray, labels: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class per row) with the counts' percentages written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radiofm.checkpoint import atomic_path

    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * rates[i, j]:.0f}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion (% of true class)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"
