"""The ``radiofm`` command line.

This is the one module that knows every part of radiofm; each command imports what it needs inside
its body, so ``radiofm --help`` and light commands stay fast.
"""

from __future__ import annotations

from contextlib import contextmanager
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
    rich_markup_mode="markdown",  # reflows the commands' docstrings to the terminal's width
)
data_app = typer.Typer(help="Synthesise and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    from rich.text import Text

    err_console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code)


def output_problem(path: Path, folder: bool = False) -> str | None:
    """What stops radiofm from writing the file ``path`` (with ``folder``: filling the folder ``path``),
    or None. Checked by making and removing a temporary file (or folder) where it would go, so a
    command can refuse before its long work rather than fail at the end; nothing is left behind."""
    import os
    import tempfile

    if path.exists():
        if folder and not path.is_dir():
            return "it is a file, not a folder"
        if not folder and path.is_dir():
            return "it is a folder; give a file name"
    where = path if folder and path.is_dir() else path.parent
    while not where.exists():  # the first folder that exists on the way up; the rest is made when writing
        if where.is_symlink():
            return f"{where} is a broken link"
        where = where.parent
    if not where.is_dir():
        return f"{where} is a file, not a folder"
    try:
        if where == (path if folder else path.parent):
            with tempfile.NamedTemporaryFile(dir=where, prefix=".radiofm-check-"):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=where, prefix=".radiofm-check-"))
    except OSError as e:
        return f"cannot write in {where} ({e.strerror or e})"
    return None


def check_output(path: Optional[Path], option: str, folder: bool = False, suffixes: tuple[str, ...] = ()) -> None:
    """Fail (one line naming ``option`` and the path) unless ``path`` can be written; None passes."""
    if path is None:
        return
    if suffixes and path.suffix.lower() not in suffixes:
        fail(f"{option} {path}: the picture is written as {', '.join(suffixes)}; give a name ending in one of them")
    problem = output_problem(path, folder)
    if problem:
        fail(f"{option} {path}: {problem}")


def _shown(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _refuse(option: str, value, rule: str) -> None:
    fail(f"{option} must be {rule}, got {_shown(value)}")


def need_at_least(option: str, value, minimum, note: str = "") -> None:
    """Fail (one line naming ``option`` and the value) unless ``value`` is a finite number >= ``minimum``;
    None passes (an option left unset). ``note`` says what the smallest value means, e.g. "0: none"."""
    import math

    if value is not None and not (math.isfinite(value) and value >= minimum):
        _refuse(option, value, f"at least {_shown(minimum)}" + (f" ({note})" if note else ""))


def need_positive(option: str, value) -> None:
    """Fail unless ``value`` is a finite number > 0; None passes."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        _refuse(option, value, "a positive number")


def need_within(option: str, value, interval: str) -> None:
    """Fail unless ``value`` lies in ``interval``, written as in the message: "[0, 1)", "(0, 1]"; None passes."""
    import math

    if value is None:
        return
    low, high = (float(v) for v in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    if not (math.isfinite(value) and above and below):
        _refuse(option, value, f"in {interval}")


def is_main_process() -> bool:
    """False in the processes torchrun starts besides rank 0 (its RANK variable), which print no results."""
    import os

    return os.environ.get("RANK", "0") in ("", "0")


class _Signalled(BaseException):
    """SIGINT or SIGTERM arrived (see ``_stopped_by_signals``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stopped_by_signals():
    """Within: SIGINT (Ctrl-C) and SIGTERM (``kill``) raise ``_Signalled`` in the main thread, so that a
    command can stop its work, say where it stopped and exit 128 + the signal number (130 / 143). A
    signal the shell started radiofm ignoring (``nohup``, background jobs) stays ignored."""
    import signal

    def stop(signum, frame):
        raise _Signalled(signum)

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in saved.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


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
    from radiofm.benchmarks.machine import cpu_info

    flags = cpu_info()["flags"]
    return flags["avx512_bf16"] or flags["amx_bf16"]


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
    cpu_line, cpu_table = _cpu_table()
    console.print(cpu_line)
    console.print(cpu_table)
    console.print(f"zoo models: {', '.join(zoo_names()) or 'none'}")


def _cpu_table() -> tuple[str, Table]:
    """The CPU, and the unit and nominal peak each precision gets on it (radiofm.benchmarks.machine)."""
    from radiofm.benchmarks.machine import cpu_info, cpu_peak

    cpu = cpu_info()
    clock = f", {cpu['mhz']:.0f} MHz" if cpu["mhz"] else ""
    table = Table()
    for col in ("precision", "unit", "nominal peak"):
        table.add_column(col, justify="right" if col == "nominal peak" else "left")
    for precision in ("fp32", "bf16", "int8"):
        peak = cpu_peak(cpu, precision)
        unit = "TOP/s" if precision == "int8" else "TFLOP/s"
        table.add_row(precision, peak["peak_unit"],
                      f"{peak['peak_gflops'] / 1e3:.2f} {unit}" if peak["peak_gflops"] else "clock unknown")
    return f"cpu: {cpu['model']}, {cpu['cores']} cores{clock}", table


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

    check_output(out, "--out", folder=True)
    try:
        folder, cfg = convert_original(src, model, out, labels)
    except (ValueError, OSError) as e:
        fail(str(e))
    console.print(
        f"wrote {folder}: {cfg.name} {cfg.task}, {cfg.in_chans} channel(s), "
        f"{cfg.img_size[0]}x{cfg.img_size[1]}" + (f", {cfg.num_classes} classes" if cfg.num_classes else "")
    )


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Path = typer.Option(Path("radiofm-demo.png"), help="Picture of the captures with predicted labels and masks."),
    seed: int = typer.Option(2026, help="Seed of the fresh captures."),
):
    """Run the bundled models on fresh synthetic captures, on every engine here.

    Exports the zoo models to ONNX (once, cached), prints predictions beside the true labels, the
    accuracy and a latency table per engine, and writes a picture of the captures.
    """
    from radiofm.demo import run_demo
    from radiofm.plotting import PLOT_SUFFIXES

    check_output(out, "--out", suffixes=PLOT_SUFFIXES)
    try:
        run_demo(out, seed=seed, console=console)
    except (ValueError, OSError, RuntimeError) as e:
        fail(str(e))


# --------------------------------------------------------------------------- data
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show the progress bar.")


@data_app.command("synth")
def data_synth(
    task: str = typer.Option(..., "--task", help="lte-nr | signals | csi-har | pretrain"),
    n: int = typer.Option(..., "--n", help="Number of samples (0..n-1); existing ones are kept."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (with dataset.json)."),
    seed: int = typer.Option(0, "--seed", help="Sample i depends only on (seed, i)."),
    workers: int = typer.Option(0, "--workers", help="Worker processes; 0 = one per CPU core."),
    progress: bool = _PROGRESS,
):
    """Synthesise a dataset; re-running fills in missing samples and keeps what is there.

    Every sample is written whole (to a temporary file, then renamed), so Ctrl-C or SIGTERM stops at
    once, keeping the samples written so far; the same command run again writes the rest.
    """
    import os
    import time

    from radiofm.training.synth import missing, synthesize, task_module

    need_at_least("--n", n, 1)
    need_at_least("--seed", seed, 0)
    need_at_least("--workers", workers, 0, "0: one per CPU core")
    try:
        task_module(task)
    except ValueError as e:
        fail(f"--task: {e}")
    check_output(out, "--out", folder=True)
    start = time.perf_counter()
    try:
        with _stopped_by_signals():
            written = synthesize(task, n, out, seed=seed, workers=workers or os.cpu_count() or 1, progress=progress)
    except (ValueError, OSError) as e:
        fail(str(e))
    except _Signalled as e:
        done = n - len(missing(task, out, n))
        err_console.print(f"stopped: {out} holds {done} of {n} {task} samples, each written whole; "
                          f"run the same command again to write the other {n - done}", highlight=False, soft_wrap=True)
        raise typer.Exit(128 + e.signum)
    console.print(f"{out}: wrote {written} of {n} {task} samples in {time.perf_counter() - start:.1f} s")


@data_app.command("show")
def data_show(
    path: Path = typer.Argument(..., help="Dataset folder or SigMF recording."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="Picture to write (.png, .pdf or .svg)."),
    n: int = typer.Option(16, "--n", help="Samples to show, spread over the dataset."),
):
    """Draw a grid of samples with their labels or masks."""
    from radiofm.plotting import PLOT_SUFFIXES
    from radiofm.training.show import show_grid

    if n < 1:
        fail(f"--n must be at least 1, got {n}")
    check_output(out, "--out", suffixes=PLOT_SUFFIXES)
    try:
        written = show_grid(path, out, n=n)
    except (ValueError, OSError, KeyError) as e:
        fail(str(e))
    console.print(f"wrote {written}")


# --------------------------------------------------------------------------- predict
@app.command()
def predict(
    model: str = typer.Argument(..., help="Zoo name, model folder, run folder or exported .onnx/.plan file."),
    inputs: List[Path] = typer.Argument(..., help=".npy (spectrograms or complex IQ), .mat, or SigMF .sigmf-meta files."),
    engine: str = typer.Option("auto", help="torch | onnx | trt | auto"),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | bf16 | int8 (default: an exported file's own, else fp32)"),
    sample_rate: Optional[float] = typer.Option(None, help="IQ sample rate in Hz, where the file does not record it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw each input's spectrogram with its predictions here (.png, .pdf or .svg)."),
    noise_power: Optional[str] = typer.Option(
        None, "--noise-power", help="IQ only: the noise power per sample in the file's units, or 'estimate' "
        "(measured on each capture). The models expect unit-power noise; default: the IQ as it is."),
    annotate: bool = typer.Option(False, "--annotate", help="Write the predictions into each SigMF recording's "
                                  ".sigmf-meta as annotations (radiofm's earlier ones are replaced, others kept)."),
    join_gap: float = typer.Option(5.0, "--join-gap", help="--annotate with a segmenter: a class's regions on the "
                                   "same band at most this many ms apart are one box (a TDD carrier's bursts); "
                                   "0: a box per region."),
):
    """Classify or segment spectrograms and IQ recordings.

    An IQ recording of at least the model's capture length is cut into whole captures, predicted one
    by one, as streaming does (a tail shorter than a capture is left out); a shorter recording is
    predicted as one short capture. A segmenter trained on captures of varying length (lte-nr-nano:
    10-40 ms) segments a longer recording in windows of at most preprocess.max_capture_samples (25 ms),
    their class maps side by side. A 2-D complex array holds one recording per row. With --annotate
    a classifier's windows, or a segmenter's regions as time-frequency boxes, become SigMF annotations.
    """
    import dataclasses
    import json
    import math

    from radiofm.annotate import Window, annotate_recording, sigmf_meta_path
    from radiofm.engines import open_engine
    from radiofm.io import read_input, real_iq_hint
    from radiofm.plotting import PLOT_SUFFIXES, plot_predictions, prediction_row
    from radiofm.sdk import Classifier, Segmenter

    if sample_rate is not None and not (math.isfinite(sample_rate) and sample_rate > 0):
        fail(f"--sample-rate must be a positive number of Hz, got {sample_rate:g}")
    if not (math.isfinite(join_gap) and join_gap >= 0):
        fail(f"--join-gap must be at least 0 ms, got {join_gap:g}")
    level = _noise_power_option(noise_power)
    check_output(plot, "--plot", suffixes=PLOT_SUFFIXES)
    if annotate:
        for path in inputs:
            try:
                check_output(sigmf_meta_path(path), "--annotate")
            except ValueError as e:
                fail(str(e))
    annotations: dict[Path, list] = {}  # per SigMF recording, its windows' predictions
    try:
        eng = open_engine(model, engine, "auto", precision)
        runner = (Segmenter if eng.cfg.task == "segment" else Classifier)(eng)
        title = f"{_model_name(model)} {eng.cfg.task} on {eng.describe()}"
        window = runner.cfg.preprocess.capture_samples
        records, rows = [], []
        for path in inputs:
            try:
                item = read_input(path)
                hint = real_iq_hint(item)
                if hint:
                    raise ValueError(hint)
                rate = item.sample_rate or sample_rate
                if item.is_iq and level is None:
                    _level_hint(path, item.data, runner.cfg.preprocess)
                if annotate and item.data.ndim != 1:
                    raise ValueError(f"{path} holds {item.data.shape[0]} channels; --annotate writes the "
                                     f"annotations of one-channel recordings")
                if item.is_iq and window and item.data.ndim in (1, 2) and item.data.shape[-1] >= window:
                    recordings = [item.data] if item.data.ndim == 1 else list(item.data)
                    for r, recording in enumerate(recordings):
                        preds = list(runner.stream_iq(_chunks(recording, window), rate, noise_power=level))
                        for pred in preds:
                            records.extend(_prediction_records(path, pred, runner.classes, eng.cfg.task, item=r))
                        if annotate:
                            annotations[item.path] = [Window.of(p, p.start, window, eng.cfg.task) for p in preds]
                        if plot is not None:
                            name = path if item.data.ndim == 1 else f"{path}[{r}]"
                            rows.append(prediction_row(name, dataclasses.replace(item, data=recording), preds, runner, rate))
                    continue
                if runner.cfg.preprocess.kind == "csi" and window and item.data.ndim == 3 and item.data.shape[-1] > window:
                    # A CSI recording longer than the model's: one prediction per window of packets, as for IQ.
                    preds = list(runner.stream_csi(_chunks(item.data, window), window))
                    for pred in preds:
                        records.extend(_prediction_records(path, pred, runner.classes, eng.cfg.task))
                    if plot is not None:
                        rows.append(prediction_row(path, item, preds, runner))
                    continue
                if level is not None and not item.is_iq:
                    raise ValueError(f"{path}: --noise-power applies to IQ recordings; this file holds spectrograms")
                pred = runner.predict_iq(item.data, rate, level) if item.is_iq else runner.predict(item.data)
                if annotate:  # one short capture: the whole recording
                    annotations[item.path] = [Window.of(pred, 0, item.data.shape[-1], eng.cfg.task)]
                records.extend(_prediction_records(path, pred, runner.classes, eng.cfg.task))
                if plot is not None:
                    rows.append(prediction_row(path, item, [pred], runner, rate))
            except ValueError as e:  # with several inputs, say which one was wrong
                raise ValueError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        if plot is not None:
            plot_predictions(plot, rows, list(runner.classes), eng.cfg.task, title)
        written = {meta: annotate_recording(meta, windows, list(runner.classes), eng.cfg.task, _model_name(model),
                                            join_gap / 1e3)
                   for meta, windows in annotations.items()}
    except (ValueError, OSError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps({"model": str(model), "engine": eng.describe(), "predictions": records}, indent=2))
    else:
        _print_predictions(records, title)
    if plot is not None:
        err_console.print(f"picture: {plot}", highlight=False)
    for meta, n in written.items():
        err_console.print(f"annotated {meta}: {n} annotation{'s' if n != 1 else ''}", highlight=False, soft_wrap=True)


def _level_hint(path: Path, iq, pre) -> None:
    """A line on stderr where a recording's noise floor is far from the unit power the models are
    trained at (a receiver's gain, int16 samples), since their answers depend on the level."""
    import numpy as np

    from radiofm import signal

    # The first capture (or window) tells: a recording of seconds is not read whole for a note.
    first = np.asarray(iq).reshape(-1, np.shape(iq)[-1])[0][: pre.capture_samples or pre.max_capture_samples or None]
    if first.size < pre.n_fft:
        return
    offset_db = 10 * np.log10(float(signal.noise_power(signal.spectrogram(first, pre), pre)))
    if abs(offset_db) > 3:
        err_console.print(f"note: {path}: its noise floor is {offset_db:+.1f} dB from the unit power the model was "
                          f"trained at; --noise-power estimate (or the receiver's noise power) levels it",
                          highlight=False, soft_wrap=True)


def _noise_power_option(value: str | None) -> float | str | None:
    """--noise-power as the SDK takes it: None, "estimate" or a positive number."""
    import math

    if value is None or value == "estimate":
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        fail(f"--noise-power must be a positive number (the noise power per IQ sample) or 'estimate', got {value!r}")
    return number


def _model_name(model: str) -> str:
    """The model as the user named it, for titles: a zoo name as given, a folder by its name, an
    exported file by its folder's name and its own."""
    path = Path(model)
    if not path.exists():
        return str(model)
    path = path.resolve()
    return f"{path.parent.name}/{path.name}" if path.is_file() else path.name


def _chunks(recording, window: int, windows_per_chunk: int = 64):
    """A long recording (IQ samples or CSI packets on its last axis) in pieces of whole windows, so that
    streaming it never stacks all its windows at once."""
    step = window * windows_per_chunk
    return (recording[..., i:i + step] for i in range(0, recording.shape[-1], step))


def _print_predictions(records: list[dict], title: str) -> None:
    table = Table(title=title)
    for col in ("input", "item", "start", "prediction"):
        table.add_column(col)
    for r in records:
        what = (f"{r['label']} ({r['probability']:.2f})" if "label" in r
                else ", ".join(f"{k} {v:.0%}" for k, v in r["class_fractions"].items()))
        table.add_row(r["input"], str(r["item"]), "-" if r["start"] is None else str(r["start"]), what)
    console.print(table)


def _prediction_records(path, pred, classes, task, item: int | None = None) -> list[dict]:
    """One record per item of ``pred``: ``item`` is its index in the file (for a window of a
    recording, the recording's row) and ``start`` the window's first IQ sample (None if not a window)."""
    rows = []
    for i in range(len(pred)):
        row = {"input": str(path), "item": i if item is None else item, "start": pred.start}
        if task == "segment":
            counts = [(pred.indices[i] == k).mean() for k in range(len(classes))]
            row["class_fractions"] = {c: round(float(f), 4) for c, f in zip(classes, counts)}
        else:
            row.update(label=str(pred.labels[i]), index=int(pred.indices[i]),
                       probability=round(float(pred.probs[i].max()), 4),
                       probabilities={c: round(float(p), 4) for c, p in zip(classes, pred.probs[i])})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- train / eval
train_app = typer.Typer(help="Pretrain (Masked Spectrogram Modeling) and fine-tune models.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _train_config(out: Path, epochs: int, batch: int, accum: int, blr: float, lr: Optional[float], min_lr: float,
                  warmup_epochs: Optional[float], weight_decay: float, layer_decay: Optional[float], amp: str,
                  seed: int, ckpt_every: int, threads: Optional[int], resume: bool, progress: bool, extra: dict):
    from radiofm.training.loop import TrainConfig
    from radiofm.training.state import STATE_FILE

    tc = TrainConfig(out=out, epochs=epochs, batch_size=batch, accum_steps=accum, blr=blr, lr=lr, min_lr=min_lr,
                     warmup_epochs=epochs / 10 if warmup_epochs is None else warmup_epochs,
                     weight_decay=weight_decay, layer_decay=layer_decay, amp=amp, seed=seed, ckpt_every=ckpt_every,
                     threads=threads, progress=progress, extra=extra)
    try:
        tc.validate()  # every loop setting, by its option name, before any data work
    except ValueError as e:
        fail(str(e))
    if resume and not (out / "last" / STATE_FILE).is_file():
        fail(f"--resume: {out} holds no checkpoint (last/{STATE_FILE}) to resume from")
    check_output(out, "--out", folder=True)
    return tc


_EPOCHS = typer.Option(..., "--epochs", "-e", help="Passes over the data.")
_BATCH = typer.Option(64, "--batch", "-b", help="Items per process per micro-step.")
_ACCUM = typer.Option(1, "--accum", help="Micro-steps per optimizer step (global batch = batch x accum x processes).")
_LR = typer.Option(None, "--lr", help="Absolute peak learning rate (overrides --blr).")
_MIN_LR = typer.Option(0.0, "--min-lr", help="Learning rate at the end of the cosine.")
_WARMUP = typer.Option(None, "--warmup-epochs", help="Linear warmup length [default: 10% of --epochs].")
_AMP = typer.Option("auto", "--amp", help="auto (bf16 on GPUs and bf16-capable CPUs) | bf16 | off.")
_SEED = typer.Option(0, "--seed", help="Seeds the initialisation, data order, masking and drop path.")
_CKPT = typer.Option(0, "--ckpt-every", help="Optimizer steps between checkpoints [default: once per epoch].", show_default=False)
_THREADS = typer.Option(None, "--threads", help="torch CPU threads [default: cores / processes].")
_RESUME = typer.Option(False, "--resume", help="Require a checkpoint in --out (resuming is automatic when one exists).")


@train_app.command("pretrain")
def train_pretrain(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (any task: labels are not used)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumed when it holds a checkpoint)."),
    model: str = typer.Option("vit-nano", "--model", "-m", help="Size preset (radiofm info --models)."),
    mask_ratio: float = typer.Option(0.75, "--mask-ratio", help="Share of patches hidden from the encoder."),
    epochs: int = _EPOCHS, batch: int = _BATCH, accum: int = _ACCUM,
    blr: float = typer.Option(1e-3, "--blr", help="Base learning rate, scaled by global batch / 256."),
    lr: Optional[float] = _LR, min_lr: float = _MIN_LR, warmup_epochs: Optional[float] = _WARMUP,
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    norm_pix_loss: bool = typer.Option(False, "--norm-pix-loss", help="Reconstruct per-patch normalised pixels."),
    sample_every: int = typer.Option(5, "--sample-every", help="Epochs between reconstruction PNGs (0: none)."),
    amp: str = _AMP, seed: int = _SEED, ckpt_every: int = _CKPT, threads: Optional[int] = _THREADS,
    resume: bool = _RESUME, progress: bool = _PROGRESS,
):
    """Masked Spectrogram Modeling: pretrain an MAE; writes OUT/final (the model), checkpoints, metrics and PNGs."""
    from radiofm.training.pretrain import pretrain

    need_within("--mask-ratio", mask_ratio, "(0, 1)")
    need_at_least("--sample-every", sample_every, 0, "0: none")
    tc = _train_config(out, epochs, batch, accum, blr, lr, min_lr, warmup_epochs, weight_decay, None, amp, seed,
                       ckpt_every, threads, resume, progress,
                       dict(command="pretrain", data=str(data), model=model, mask_ratio=mask_ratio))
    try:
        final = pretrain(data, model, mask_ratio, tc, sample_every=sample_every, norm_pix_loss=norm_pix_loss)
    except (ValueError, OSError) as e:
        fail(str(e))
    if is_main_process():
        console.print(f"wrote {final}")


@train_app.command("finetune")
def train_finetune(
    task: str = typer.Option(..., "--task", "-t", help="classify | segment."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumed when it holds a checkpoint)."),
    init: Optional[str] = typer.Option(None, "--init", help="Pretrained model: run folder, model folder or zoo name."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Size preset, to train from scratch instead."),
    mode: str = typer.Option("full", "--mode", help="full (layer-wise lr decay) | linear-probe (blocks frozen)."),
    label_fraction: float = typer.Option(1.0, "--label-fraction", help="Train on this seeded share of the labels."),
    class_weights: str = typer.Option("none", "--class-weights", help="Segmentation loss: none | auto | w0,w1,..."),
    short_captures: float = typer.Option(0.0, "--short-captures", help="Classifier: the share of samples cut to a random shorter capture, padded and masked as the SDK pads one."),
    epochs: int = _EPOCHS, batch: int = _BATCH, accum: int = _ACCUM,
    blr: float = typer.Option(1e-3, "--blr", help="Base learning rate, scaled by global batch / 256."),
    lr: Optional[float] = _LR, min_lr: float = _MIN_LR, warmup_epochs: Optional[float] = _WARMUP,
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="[default: 0.05 full, 0 linear probe]"),
    layer_decay: float = typer.Option(0.75, "--layer-decay", help="Layer-wise lr decay (full mode)."),
    drop_path: float = typer.Option(0.1, "--drop-path", help="Stochastic depth rate (full mode)."),
    img_size: Optional[str] = typer.Option(None, "--img-size", help="Input grid HxW, e.g. 256x64 [default: the init model's]."),
    amp: str = _AMP, seed: int = _SEED, ckpt_every: int = _CKPT, threads: Optional[int] = _THREADS,
    resume: bool = _RESUME, progress: bool = _PROGRESS,
):
    """Fine-tune a classifier or segmenter (linear probe or full) from a pretrained encoder or from scratch."""
    from radiofm.training.finetune import finetune

    full = mode == "full"
    size = None
    if img_size is not None:
        try:
            size = tuple(int(v) for v in img_size.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 1:
            fail(f"--img-size must be two positive sizes like 256x64 (height x width), got {img_size!r}")
    need_within("--label-fraction", label_fraction, "(0, 1]")
    need_within("--drop-path", drop_path, "[0, 1)")
    need_within("--short-captures", short_captures, "[0, 1]")
    wd = weight_decay if weight_decay is not None else (0.05 if full else 0.0)
    tc = _train_config(out, epochs, batch, accum, blr, lr, min_lr, warmup_epochs, wd, layer_decay if full else None,
                       amp, seed, ckpt_every, threads, resume, progress,
                       dict(command="finetune", task=task, data=str(data), init=init, model=model, mode=mode,
                            label_fraction=label_fraction, class_weights=class_weights, drop_path=drop_path,
                            img_size=img_size, short_captures=short_captures))
    try:
        final = finetune(task, data, tc, init=init, model=model, mode=mode, label_fraction=label_fraction,
                         class_weights=class_weights, drop_path=drop_path, img_size=size,
                         short_captures=short_captures)
    except (ValueError, OSError) as e:
        fail(str(e))
    if is_main_process():
        console.print(f"wrote {final}")


@app.command("eval")
def eval_(
    model: str = typer.Argument(..., help="Model folder, run folder, zoo name or exported .onnx/.plan file."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled dataset folder (an MAE takes any)."),
    engine: Optional[str] = typer.Option(None, "--engine", show_default="torch; an exported file: its runtime",
                                         help="torch | onnx | trt: score what is deployed (an MAE: torch only)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16 | fp16 | int8 (default: an exported file's own, else fp32)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics here as JSON."),
    png: Optional[Path] = typer.Option(None, "--png", help="Confusion matrix PNG (not for an MAE) [default: beside --json]."),
    batch: int = typer.Option(64, "--batch", "-b"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (torch or ONNX Runtime)."),
):
    """Accuracy, per-class and mean per-class accuracy, mIoU (segmentation), accuracy by SNR, confusion matrix.

    An MAE is scored by its masked reconstruction MSE instead, on data of the kind it was trained on.
    With --engine onnx or trt (or another --precision) the figures are the export's, on the same data.
    """
    from radiofm.checkpoint import write_json_atomic
    from radiofm.training.evaluate import evaluate, fmt, model_task, save_confusion_png

    from radiofm.engines import ENGINES, PRECISIONS

    for option, value, choices in (("--engine", engine, ENGINES), ("--precision", precision, PRECISIONS)):
        if value is not None and value not in choices:
            fail(f"{option} must be {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")
    need_at_least("--batch", batch, 1)
    need_at_least("--threads", threads, 1)
    check_output(json_out, "--json")
    check_output(png, "--png", suffixes=(".png",))
    if png is not None or json_out is not None:
        try:
            mae = model_task(model) == "mae"
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
        if mae and png is not None:
            fail(f"--png {png}: {model} is an MAE, scored by its reconstruction error; it has no confusion matrix "
                 "to draw, so leave --png out")
        if not mae and png is None:  # the confusion matrix beside the metrics
            png = json_out.with_suffix(".png")
            check_output(png, "--png", suffixes=(".png",))
    try:
        m = evaluate(model, data, batch, threads, engine, precision)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # RuntimeError: TensorRT or a GPU missing
        fail(str(e))
    console.print(f"{m['model']} ({m['task']}) on {m['engine']}, {m['data']}: {m['items']} items, {m['eval_time_s']} s")
    if m["task"] == "mae":
        console.print(f"masked reconstruction MSE {m['reconstruction_mse']:.4f} at mask ratio {m['mask_ratio']}")
    else:
        labels = list(m["per_class_accuracy"])
        table = Table(title="per class")
        for col in ("class", "accuracy") + (("IoU",) if "miou" in m else ()):
            table.add_column(col, justify="left" if col == "class" else "right")
        for lab in labels:
            table.add_row(lab, fmt(m["per_class_accuracy"][lab]),
                          *((fmt(m["per_class_iou"][lab]),) if "miou" in m else ()))
        console.print(table)
        cm = Table(title="confusion (rows true, columns predicted)")
        cm.add_column("")
        for lab in labels:
            cm.add_column(lab, justify="right")
        for lab, row in zip(labels, m["confusion_matrix"]):
            cm.add_row(lab, *(str(v) for v in row))
        console.print(cm)
        if "accuracy_by_snr" in m:
            snr = Table(title="accuracy by SNR")
            for col in ("SNR", "items", "accuracy"):
                snr.add_column(col, justify="right")
            for band, v in m["accuracy_by_snr"].items():
                snr.add_row(band, str(v["n"]), fmt(v["accuracy"]))
            console.print(snr)
        summary = f"accuracy {fmt(m['accuracy'])}, mean per-class accuracy {fmt(m['mean_class_accuracy'])}"
        if "miou" in m:
            summary += f", mIoU {fmt(m['miou'])}"
        if "accuracy_snr_ge_10db" in m:
            summary += f", accuracy at SNR >= 10 dB {fmt(m['accuracy_snr_ge_10db'])}"
        console.print(summary)
        if png:
            import numpy as np

            try:
                save_confusion_png(np.array(m["confusion_matrix"]), labels, png, f"{Path(m['model']).name} on {data.name}")
            except OSError as e:
                fail(str(e))
            console.print(f"wrote {png}")
    if json_out:
        try:
            write_json_atomic(json_out, m)
        except OSError as e:
            fail(str(e))
        console.print(f"wrote {json_out}")


# --------------------------------------------------------------------------- export
@app.command("export")
def export_(
    model: str = typer.Argument(..., help="Model folder, training run folder or zoo name."),
    engine: str = typer.Option("onnx", "--engine", "-e", help="onnx | trt"),
    precision: str = typer.Option("fp32", "--precision", "-p", help="fp32 | fp16 | int8"),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Dataset folder: int8 becomes static QDQ calibrated on it."),
    batch: str = typer.Option("1:8:64", "--batch", help="TensorRT batch profile MIN:OPT:MAX."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: the model folder; zoo models: ~/.cache/radiofm)."),
    task: Optional[str] = typer.Option(None, "--task", help="Export another head of the weights (encode)."),
    samples: int | None = typer.Option(None, "--samples", show_default="256 for a classifier, else 64",
                                       help="Validation samples, run at batch sizes 1, 2, 7 and 16."),
    atol: Optional[float] = typer.Option(None, "--atol", help="Max |onnx - torch| allowed for --precision (default: fp32 1e-4, others unchecked)."),
    workspace: float = typer.Option(4.0, "--workspace", help="TensorRT workspace limit in GiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file."),
    variable_length: bool = typer.Option(False, "--variable-length", help="Add a key_padding input so that captures shorter than the model's can be masked (ONNX and TensorRT)."),
    # The help's scope and calibration names and defaults are literals so that --help imports no
    # numpy; tests/test_export.py holds them to radiofm.engines' INT8_SCOPES, CALIB_METHODS and defaults.
    int8_scope: Optional[str] = typer.Option(None, "--int8-scope", show_default="full",
                                             help="int8: full (MLP, attention products, qkv and output projections, after smoothing) | partial (MLP and attention products), the default with --variable-length."),
    calib_method: Optional[str] = typer.Option(None, "--calib-method", show_default="percentile",
                                               help="With --calib: percentile (ranges holding 99.999 % of each activation's values) | minmax (their whole range)."),
):
    """Export to ONNX (and build a TensorRT engine), validated against the torch model."""
    if engine not in ("onnx", "trt"):
        fail(f"--engine must be onnx or trt, got {engine!r}")
    if precision not in ("fp32", "fp16", "int8"):
        fail(f"--precision must be fp32, fp16 or int8, got {precision!r}")
    from radiofm.engines import CALIB_METHODS, INT8_SCOPES

    if int8_scope is not None and int8_scope not in INT8_SCOPES:
        fail(f"--int8-scope must be {' or '.join(INT8_SCOPES)}, got {int8_scope!r}")
    if calib_method is not None and calib_method not in CALIB_METHODS:
        fail(f"--calib-method must be {' or '.join(CALIB_METHODS)}, got {calib_method!r}")
    if calib_method is not None and calib is None:
        fail("--calib-method chooses how --calib data sets the int8 ranges; use it with --calib DIR")
    if int8_scope is not None and precision != "int8":
        fail("--int8-scope chooses what int8 quantises; use it with --precision int8")
    need_at_least("--atol", atol, 0)
    need_at_least("--samples", samples, 1)
    need_positive("--workspace", workspace)
    check_output(out, "--out", folder=True)
    check_output(timing_cache, "--timing-cache")
    from radiofm.export.onnx import ExportError, export
    from radiofm.export.tensorrt import EngineMismatch, TensorRTUnavailable, export_engine, parse_batch_profile

    log = lambda msg: err_console.print(msg, highlight=False)  # noqa: E731
    try:
        if engine == "onnx":
            results, plan = export(model, out, precision, calib=calib, task=task, samples=samples,
                                   atol=atol, variable_length=variable_length, int8_scope=int8_scope,
                                   calib_method=calib_method, log=log), None
        else:
            profile = parse_batch_profile(batch)
            command = f"radiofm export {model} --engine trt --precision {precision} --batch {profile}" + (
                f" --calib {calib}" if calib else "") + (f" --int8-scope {int8_scope}" if int8_scope else "") + (
                f" --calib-method {calib_method}" if calib_method else "") + (
                " --variable-length" if variable_length else "")
            results, plan = export_engine(model, out, precision, profile, calib, workspace, timing_cache,
                                          samples, command, log, int8_scope=int8_scope, variable_length=variable_length,
                                          calib_method=calib_method)
    except TensorRTUnavailable as e:
        from radiofm.checkpoint import exports_dir, resolve_model_dir

        fail(f"{e}; the ONNX model is written to {out or exports_dir(resolve_model_dir(model))}")
    except (ExportError, EngineMismatch, ValueError, OSError, RuntimeError) as e:
        fail(str(e))
    entries = [r.entry for r in results]
    paths = [r.path for r in results]
    if plan is not None:
        import json

        entries.append(json.loads(Path(f"{plan}.json").read_text()))
        paths.append(plan)
    _print_parity(entries, paths)
    failed = [f"{path.name}: {', '.join(entry['failures'])}" for entry, path in zip(entries, paths) if not entry["passed"]]
    if failed:
        hint = ""
        int8 = next((e for e in entries if e.get("precision") == "int8" and not e["passed"] and e.get("scope")), None)
        if int8 is not None:  # the two scopes round different MatMuls: where one misses, the other may hold
            other = next(s for s in INT8_SCOPES if s != int8["scope"])
            hint = f" (int8 in {int8['scope']} scope; --int8-scope {other} quantises differently and may hold"
            if int8.get("calibration"):
                used = int8["calibration"]["method"]
                hint += f"; so may --calib-method {next(m for m in CALIB_METHODS if m != used)}, in place of {used}"
            hint += ")"
        fail("export missed its tolerance, kept for inspection only, not for deployment: " + "; ".join(failed) + hint)


def _print_parity(entries: list[dict], paths: list[Path]) -> None:
    table = Table(title="parity with torch at each batch size")
    for col in ("file", "batch", "max |diff|", "agreement", "min cosine", "passed"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for entry, path in zip(entries, paths):
        for b, p in entry["parity"].items():
            agreement = "-" if p["agreement"] is None else f"{100 * p['agreement']:.2f} %"
            table.add_row(path.name, b, f"{p['max_abs_diff']:.2e}", agreement, f"{p['cosine']:.6f}",
                          "yes" if entry["passed"] else "NO")
    console.print(table)
    for entry, path in zip(entries, paths):
        if "tolerance" in entry:
            console.print(f"{path.name} tolerance: " + ", ".join(f"{k} {v:g}" for k, v in entry["tolerance"].items()))
    for entry in entries:
        if entry.get("accuracy_change") is not None:
            acc = entry["accuracy"]
            console.print(f"int8 ({entry['method']}, {entry.get('scope')} scope) accuracy on {acc['data']}: torch fp32 "
                          f"{100 * acc['torch_fp32']:.2f} %, int8 {100 * acc['onnx_int8']:.2f} % "
                          f"(change {100 * entry['accuracy_change']:+.2f} points)")


# --------------------------------------------------------------------------- bench
@app.command()
def bench(
    models: List[str] = typer.Argument(..., help="Model folders, zoo names or presets (a preset gets random weights)."),
    engines: List[str] = typer.Option(["torch", "onnx"], "--engine", "-e", help="torch | onnx, and on CUDA torch-graph (CUDA graphs) | torch-triton (Triton kernels + CUDA graphs) | trt (a TensorRT plan built for the run); repeat the option."),
    precisions: List[str] = typer.Option(["fp32"], "--precision", "-p", help="fp32 | bf16 | fp16 | int8 (repeat)."),
    batches: List[int] = typer.Option([1], "--batch", "-b", help="Batch size (repeat the option)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads per engine (default: all usable cores)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing."),
    repeat: int = typer.Option(50, "--repeat", "-n", help="Timed runs per row."),
    data: Optional[Path] = typer.Option(None, "--data", help="Test set folder: score each engine and precision on it."),
    limit: int = typer.Option(512, "--limit", help="Test samples scored at most."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Dataset folder: int8 exports become static QDQ."),
    int8_scope: str = typer.Option("full", "--int8-scope", help="int8 exports: full (MLP, attention products, qkv and output projections, after smoothing) | partial (MLP and attention products)."),
    calib_method: str = typer.Option("percentile", "--calib-method", help="With --calib: percentile (ranges holding 99.999 % of each activation's values) | minmax (their whole range)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Keep built models and exports here for later runs."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Markdown table (default: beside --json, .md)."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Plot of latency, throughput or accuracy (.png, .pdf or .svg)."),
):
    """Latency (p50/p90/p99), throughput, peak memory, GFLOP/s and accuracy per engine, precision and batch."""
    import sys

    from radiofm.benchmarks.bench import BenchError, BenchSettings, command_line, run_bench, write_results
    from radiofm.benchmarks.report import markdown
    from radiofm.plotting import PLOT_SUFFIXES

    for b in batches:
        need_at_least("--batch", b, 1)
    need_at_least("--threads", threads, 1)
    need_at_least("--warmup", warmup, 0)
    need_at_least("--repeat", repeat, 1)
    need_at_least("--limit", limit, 1)
    settings = BenchSettings(
        models=models, engines=engines, precisions=precisions, batches=batches, device=device, threads=threads,
        warmup=warmup, repeat=repeat, data=str(data) if data else None, limit=limit,
        calib=str(calib) if calib else None, int8_scope=int8_scope, calib_method=calib_method,
        work=str(work) if work else None,
    )
    if md_out is None and json_out is not None:
        md_out = json_out.with_suffix(".md")
    for option, path in (("--json", json_out), ("--md", md_out)):
        check_output(path, option)
    check_output(plot_out, "--plot", suffixes=PLOT_SUFFIXES)
    check_output(work, "--work", folder=True)
    log = lambda msg: err_console.print(msg, highlight=False)  # noqa: E731
    try:
        doc = run_bench(settings, command_line(sys.argv[1:]), log)
    except (BenchError, RuntimeError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    try:
        write_results(doc, json_out, md_out, plot_out)
    except OSError as e:
        console.print(markdown(doc), highlight=False, soft_wrap=True)  # the measurements, at least on screen
        fail(str(e))
    console.print(markdown(doc), highlight=False, soft_wrap=True)
    for path in (json_out, md_out, plot_out):
        if path:
            console.print(f"wrote {path}")
    if doc["failures"]:
        fail(f"{len(doc['failures'])} measurement(s) failed; see 'failures' in the output")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
