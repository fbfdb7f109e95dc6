"""The ``radiofm`` command line.

This is the one module that knows every part of radiofm; each command imports what it needs inside
its body, so ``radiofm --help`` and light commands stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="radiofm: radio foundation models (ViT + Masked Spectrogram Modeling) for RAN and edge boxes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Synthesise and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    from rich.text import Text

    err_console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- info
def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _engine_rows() -> list[tuple[str, str, str]]:
    """(engine, status, detail) for every engine radiofm can drive."""
    rows = []
    try:
        import torch

        cuda = torch.cuda.is_available()
        detail = torch.cuda.get_device_name(0) if cuda else "CPU"
        rows.append(("torch", "ok", f"{detail}; bf16 {'yes' if _cpu_bf16() or cuda else 'no'}"))
    except ImportError as e:
        rows.append(("torch", "missing", str(e)))
    try:
        import onnxruntime as ort

        rows.append(("onnx", "ok", ", ".join(ort.get_available_providers())))
    except ImportError as e:
        rows.append(("onnx", "missing", f"{e}; pip install onnxruntime"))
    try:
        from radiofm.kernels import triton_available

        rows.append(("triton kernels", "ok" if triton_available() else "unavailable",
                     "CUDA GPU or TRITON_INTERPRET=1 needed" if not triton_available() else "ready"))
    except ImportError as e:
        rows.append(("triton kernels", "missing", str(e)))
    try:
        import tensorrt  # noqa: F401

        rows.append(("trt", "ok", f"TensorRT {tensorrt.__version__}"))
    except ImportError:
        rows.append(("trt", "missing", 'pip install "radiofm\\[gpu]" on a machine with a CUDA GPU'))
    return rows


def _cpu_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@app.command()
def info(models: bool = typer.Option(False, "--models", help="List the model presets instead.")):
    """Versions, and which engines and devices work here."""
    if models:
        from radiofm.config import PRESET_NAMES, preset
        from radiofm.model import encoder_param_count, flops_per_forward

        table = Table(title="radiofm model presets (1-channel input)")
        for col in ("preset", "input", "patch", "width", "depth", "heads", "decoder", "encoder params", "GFLOP/forward"):
            table.add_column(col, justify="right" if col not in ("preset",) else "left")
        for name in PRESET_NAMES:
            c = preset(name)
            table.add_row(
                name, f"{c.img_size[0]}x{c.img_size[1]}", str(c.patch_size), str(c.embed_dim), str(c.depth),
                str(c.num_heads), f"{c.decoder_embed_dim}x{c.decoder_depth}",
                f"{encoder_param_count(c) / 1e6:.1f} M", f"{flops_per_forward(c) / 1e9:.2f}",
            )
        console.print(table)
        return
    from radiofm import __version__
    from radiofm.checkpoint import zoo_names

    table = Table(title=f"radiofm {__version__}")
    table.add_column("package")
    table.add_column("version")
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "triton", "tensorrt", "numpy", "scipy"):
        table.add_row(dist, _version(dist) or "-")
    console.print(table)
    engines = Table(title="engines on this machine")
    for col in ("engine", "status", "detail"):
        engines.add_column(col)
    for row in _engine_rows():
        engines.add_row(*row)
    console.print(engines)
    console.print(f"zoo models: {', '.join(zoo_names()) or 'none'}")


# --------------------------------------------------------------------------- convert
@app.command()
def convert(
    src: Path = typer.Argument(..., help="Original-implementation checkpoint (.pth with a 'model' key)."),
    model: str = typer.Option("vit-s", "--model", "-m", help="Size preset the checkpoint was trained with."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
    labels: Optional[List[str]] = typer.Option(None, "--label", help="Class names in order (repeat the option)."),
):
    """Convert an original MAE / ViT checkpoint into a radiofm model folder (no code is unpickled)."""
    from radiofm.checkpoint import convert_original

    try:
        folder, cfg = convert_original(src, model, out, labels)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    console.print(
        f"wrote {folder}: {cfg.name} {cfg.task}, {cfg.in_chans} channel(s), "
        f"{cfg.img_size[0]}x{cfg.img_size[1]}" + (f", {cfg.num_classes} classes" if cfg.num_classes else "")
    )


# --------------------------------------------------------------------------- predict
@app.command()
def predict(
    model: str = typer.Argument(..., help="Zoo name, model folder, run folder or exported .onnx/.plan file."),
    inputs: List[Path] = typer.Argument(..., help=".npy (spectrograms or complex IQ), .mat, or SigMF .sigmf-meta files."),
    engine: str = typer.Option("auto", help="torch | onnx | trt | auto"),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16 | int8"),
    sample_rate: Optional[float] = typer.Option(None, help="IQ sample rate in Hz, where the file does not record it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Classify or segment spectrograms and IQ recordings. Long IQ recordings are cut into the
    model's capture length and predicted window by window."""
    import json

    from radiofm.io import read_input
    from radiofm.sdk import Classifier, Segmenter
    from radiofm.engines import open_engine

    try:
        eng = open_engine(model, engine, "auto", precision)
        runner = (Segmenter if eng.cfg.task == "segment" else Classifier)(eng)
        records = []
        for path in inputs:
            item = read_input(path)
            rate = item.sample_rate or sample_rate
            window = runner.cfg.preprocess.capture_samples
            if item.is_iq and item.data.ndim == 1 and window and len(item.data) >= 2 * window:
                preds = list(runner.stream_iq([item.data], rate))
            elif item.is_iq:
                preds = [runner.predict_iq(item.data, rate)]
            else:
                preds = [runner.predict(item.data)]
            for pred in preds:
                records.extend(_prediction_records(path, pred, runner.classes, eng.cfg.task))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps({"model": str(model), "engine": eng.describe(), "predictions": records}, indent=2))
        return
    table = Table(title=f"{eng.cfg.name} {eng.cfg.task} on {eng.describe()}")
    for col in ("input", "item", "start", "prediction"):
        table.add_column(col)
    for r in records:
        what = (f"{r['label']} ({r['probability']:.2f})" if "label" in r
                else ", ".join(f"{k} {v:.0%}" for k, v in r["class_fractions"].items()))
        table.add_row(r["input"], str(r["item"]), "-" if r["start"] is None else str(r["start"]), what)
    console.print(table)


def _prediction_records(path, pred, classes, task) -> list[dict]:
    rows = []
    for i in range(len(pred)):
        row = {"input": str(path), "item": i, "start": pred.start}
        if task == "segment":
            counts = [(pred.indices[i] == k).mean() for k in range(len(classes))]
            row["class_fractions"] = {c: round(float(f), 4) for c, f in zip(classes, counts)}
        else:
            row.update(label=str(pred.labels[i]), index=int(pred.indices[i]),
                       probability=round(float(pred.probs[i].max()), 4),
                       probabilities={c: round(float(p), 4) for c, p in zip(classes, pred.probs[i])})
        rows.append(row)
    return rows


def main() -> None:
    app()


if __name__ == "__main__":
    main()
