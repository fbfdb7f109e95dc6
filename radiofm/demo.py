"""``radiofm demo``: the bundled models on fresh synthetic captures, on every engine this machine has.

Like the CLI, this sits on top of everything (it generates data with ``radiofm.training`` and exports
with ``radiofm.export``); nothing in the core imports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

CLASSIFIER = "signals-nano"
SEGMENTER = "lte-nr-nano"
CSI_CLASSIFIER = "csi-har-nano"


@dataclass
class EngineRun:
    label: str
    accuracy: float
    p50_ms: float
    per_sample_ms: float


def exported(model: str, precision: str, console: Console) -> Path:
    """The ONNX export folder of a zoo model, made once per weights checksum and reused after.

    The fp32 export must match torch; a derived precision that misses its tolerance is reported and
    left out of the demo (its file is kept as ``*.rejected.onnx``), as ``radiofm export`` would.
    """
    from radiofm.checkpoint import exports_dir, resolve_model_dir
    from radiofm.export.metadata import read_report
    from radiofm.export.onnx import export

    src = resolve_model_dir(model)
    folder = exports_dir(src)  # a zoo model's cache folder, keyed by its weights
    wanted = list(dict.fromkeys(("fp32", precision)))
    report = read_report(folder) if folder.is_dir() else {}
    if not all(p in report for p in wanted):
        start = time.perf_counter()
        export(src, folder, precision=precision, batch_sizes=(1, 7))
        console.print(f"  {model}: exported ONNX {'/'.join(wanted)} to {folder} in "
                      f"{time.perf_counter() - start:.1f} s, validated against torch")
        report = read_report(folder)
    else:
        console.print(f"  {model}: ONNX {'/'.join(wanted)} from the cache {folder}")
    if not report["fp32"]["passed"]:
        raise RuntimeError(f"the fp32 ONNX export of {model} does not match torch: {report['fp32']['failures']}")
    for p in wanted[1:]:
        if not report[p]["passed"]:
            console.print(f"  {model}: {p} left out, it missed its tolerance ({report[p]['failures'][0]})")
    return folder


def signal_captures(n_per_class: int, seed: int):
    """Fresh IQ captures of every emitter type at 10 to 30 dB SNR: (iq (N, samples), true labels, SNRs)."""
    from radiofm.training.synth import signals

    rng = np.random.default_rng(seed)
    kinds = [k for k in signals.CLASSES for _ in range(n_per_class)]
    snrs = rng.uniform(10, 30, len(kinds))
    iq = np.stack([signals.generate_signal(k, rng, s) for k, s in zip(kinds, snrs)])
    return iq, np.array(kinds), snrs


def lte_nr_frames(n: int, seed: int):
    from radiofm.training.synth.lte_nr import make_lte_nr_frame

    rng = np.random.default_rng(seed)
    frames = [make_lte_nr_frame(rng) for _ in range(n)]
    return np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])


def csi_recordings(n_per_class: int, seed: int):
    """Fresh CSI amplitude recordings of every activity: (amplitude (N, 3, 114, 500), true labels)."""
    from radiofm.training.synth import csi_har

    rng = np.random.default_rng(seed)
    activities = [a for a in csi_har.CLASSES for _ in range(n_per_class)]
    x = np.stack([csi_har.generate_csi(a, rng, float(rng.uniform(*csi_har.SNR_RANGE))) for a in activities])
    return x, np.array(activities)


def time_engine(fn, x, repeats: int) -> tuple[float, float]:
    """(median ms of one sample, ms per sample at the batch of ``x``), after one warm-up."""
    fn(x[:1])
    fn(x)
    single = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x[:1])
        single.append(time.perf_counter() - t)
    t = time.perf_counter()
    fn(x)
    return 1e3 * float(np.median(single)), 1e3 * (time.perf_counter() - t) / len(x)


def engine_options(folder: Path) -> list[tuple[str, str, str]]:
    """(label, engine, precision) of every engine to run here, the torch reference first."""
    from radiofm.engines import ONNX_FILES, cuda_visible

    options = [("torch fp32", "torch", "fp32")]
    for precision in ("fp32", "int8"):
        if (folder / ONNX_FILES[precision]).is_file():
            options.append((f"onnx {precision}", "onnx", precision))
    plans = sorted(folder.glob("model.*.plan"))
    if plans and cuda_visible():
        options.append((f"trt {plans[0].suffixes[0][1:]}", "trt", plans[0].suffixes[0][1:]))
    return options


def run_demo(out: Path, seed: int = 2026, n_per_class: int = 2, n_frames: int = 4, repeats: int = 20,
             console: Console | None = None) -> dict:
    from radiofm.sdk import Classifier, Segmenter
    from radiofm.signal import spectrogram

    console = console or Console()
    t0 = time.perf_counter()
    console.rule("radiofm demo")
    console.print("[bold]1. Export the bundled models to ONNX[/]")
    clf_onnx = exported(CLASSIFIER, "int8", console)
    seg_onnx = exported(SEGMENTER, "fp32", console)
    csi_onnx = exported(CSI_CLASSIFIER, "fp32", console)

    console.print(f"[bold]2. Fresh captures[/] (seed {seed}, not seen in training)")
    iq, truth, snrs = signal_captures(n_per_class, seed)
    spectra, masks = lte_nr_frames(n_frames, seed)
    csi, csi_truth = csi_recordings(n_per_class, seed)
    console.print(f"  {len(iq)} signal captures ({iq.shape[1]} IQ samples each, SNR 10-30 dB), "
                  f"{len(spectra)} LTE/NR frames {spectra.shape[1]}x{spectra.shape[2]}, "
                  f"{len(csi)} WiFi CSI recordings {'x'.join(map(str, csi.shape[1:]))}")

    console.print("[bold]3. Predict on every engine[/]")
    runs, clf_preds, seg_preds = [], [], []
    for label, engine, precision in engine_options(clf_onnx):
        clf = Classifier.from_pretrained(CLASSIFIER if engine == "torch" else clf_onnx, engine=engine,
                                         precision=precision)
        spec = np.stack([spectrogram(c, clf.cfg.preprocess) for c in iq])
        clf_preds.append(clf.predict_iq(iq))
        p50, per = time_engine(clf.predict, spec, repeats)
        runs.append((CLASSIFIER, EngineRun(label, float((clf_preds[-1].labels == truth).mean()), p50, per)))
    for label, engine, precision in engine_options(seg_onnx):
        seg = Segmenter.from_pretrained(SEGMENTER if engine == "torch" else seg_onnx, engine=engine,
                                        precision=precision)
        seg_preds.append(seg.predict(spectra))
        acc = mean_class_accuracy(seg_preds[-1].indices, masks, len(seg.classes))
        p50, per = time_engine(seg.predict, spectra, max(3, repeats // 4))
        runs.append((SEGMENTER, EngineRun(label, acc, p50, per)))
    csi_preds = []
    for label, engine, precision in engine_options(csi_onnx):
        har = Classifier.from_pretrained(CSI_CLASSIFIER if engine == "torch" else csi_onnx, engine=engine,
                                         precision=precision)
        csi_preds.append(har.predict(csi))
        p50, per = time_engine(har.predict, csi, repeats)
        runs.append((CSI_CLASSIFIER, EngineRun(label, float((csi_preds[-1].labels == csi_truth).mean()), p50, per)))
    first_pred = clf_preds[0]

    table = Table(title=f"{CLASSIFIER} on {len(iq)} fresh captures ({runs[0][1].label})")
    for col in ("true", "SNR dB", "predicted", "p"):
        table.add_column(col)
    for t, s, p, pr in zip(truth, snrs, first_pred.labels, first_pred.probs.max(1)):
        mark = "[green]" if t == p else "[red]"
        table.add_row(t, f"{s:.0f}", f"{mark}{p}[/]", f"{pr:.2f}")
    console.print(table)

    perf = Table(title="accuracy and latency per engine (indicative, one process; `radiofm bench` for figures)")
    for col in ("model", "engine", "score", "metric", "batch 1 p50 ms", "ms/sample, batched"):
        perf.add_column(col, justify="right" if col in ("score", "batch 1 p50 ms", "ms/sample, batched") else "left")
    for model, r in runs:
        metric = "mean class pixel acc." if model == SEGMENTER else "accuracy"
        perf.add_row(model, r.label, f"{r.accuracy:.1%}", metric, f"{r.p50_ms:.2f}", f"{r.per_sample_ms:.2f}")
    console.print(perf)

    plot(out, clf.prepare(spec)[0], truth, first_pred.labels, spectra, masks, seg_preds[0].indices, seg.classes,
         har.prepare(csi)[0], csi_truth, csi_preds[0].labels)
    elapsed = time.perf_counter() - t0
    console.print(f"[bold]4. Picture[/] of the captures with predicted labels and masks: {out}")
    console.print(f"demo finished in {elapsed:.1f} s")
    return {"runs": [(m, r.__dict__) for m, r in runs], "seconds": elapsed}


def mean_class_accuracy(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    per_class = [(pred[truth == c] == c).mean() for c in range(k) if (truth == c).any()]
    return float(np.mean(per_class))


def plot(out: Path, images, truth, predicted, spectra, masks, seg_masks, seg_classes, csi_images, csi_truth,
         csi_predicted) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from radiofm.checkpoint import atomic_path
    from radiofm.training.show import MASK_COLOURS

    n_seg = len(spectra)
    cols = max(8, n_seg)
    rows_sig, rows_csi = -(-len(images) // cols), -(-len(csi_images) // cols)
    rows = rows_sig + rows_csi + 3
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")

    def labelled(first_row, pictures, true, guess, what):
        for i, (picture, t, p) in enumerate(zip(pictures, true, guess)):
            ax = axes[first_row + i // cols, i % cols]
            ax.imshow(picture, origin="lower", aspect="auto", cmap="viridis")
            ax.set_title(f"{what}{t} -> {p}", fontsize=7, color="green" if t == p else "red")

    labelled(0, images[:, 0], truth, predicted, "")
    labelled(rows_sig, csi_images[:, 0], csi_truth, csi_predicted, "CSI ")  # antenna 0, subcarriers x time
    top = rows_sig + rows_csi
    cmap = ListedColormap(MASK_COLOURS[: len(seg_classes)])
    for j in range(n_seg):
        db = 10 * np.log10(spectra[j] + 1e-12)
        axes[top, j].imshow(db, origin="lower", aspect="auto", cmap="viridis")
        axes[top + 1, j].imshow(masks[j], origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=len(seg_classes) - 1)
        axes[top + 2, j].imshow(seg_masks[j], origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=len(seg_classes) - 1)
    axes[top, 0].set_title("LTE/NR frame (dB)", fontsize=7, loc="left")
    axes[top + 1, 0].set_title("true mask", fontsize=7, loc="left")
    axes[top + 2, 0].set_title("predicted mask (" + ", ".join(seg_classes) + ": black, orange, blue)",
                               fontsize=7, loc="left")
    fig.suptitle("radiofm demo: signal classes and WiFi CSI activities (true -> predicted), LTE/NR segmentation",
                 fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix.lstrip(".").lower() or "png", dpi=90)
    finally:
        plt.close(fig)
