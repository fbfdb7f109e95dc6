"""A bench document as a markdown table and a plot."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .machine import cpu_summary

COLUMNS = ("model", "engine", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "samples/s", "GFLOP/s",
           "% of peak", "peak RSS MB")


def machine_line(doc: dict[str, Any]) -> str:
    gpu = doc["machine"]["gpu"]
    if doc["settings"]["device"] == "cuda" and gpu:
        return f"{gpu['name']} ({gpu['memory_gb']} GB, CUDA {gpu['cuda']}); host {cpu_summary(doc['machine']['cpu'])}"
    return cpu_summary(doc["machine"]["cpu"])


def markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    libs = doc["machine"]["libraries"]
    versions = ", ".join(f"{k} {libs[k]}" for k in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt") if k in libs)
    scored = any("accuracy" in r or "agreement_vs_fp32" in r for r in doc["results"])
    columns = COLUMNS + (("accuracy", "agreement vs fp32") if scored else ())
    load = doc["machine"].get("load_average_before")
    lines = [
        f"`{doc['command']}`" if doc["command"] else "",
        "",
        f"- machine: {machine_line(doc)}",
        f"- date: {doc['created'][:10]}; {versions}",
        f"- {s['threads']} thread{'s' if s['threads'] != 1 else ''} per engine, {s['warmup']} warm-up + {s['repeat']} timed runs per row, each engine in its "
        f"own process" + (f"; load average {load:.2f} at start" if load is not None else ""),
    ]
    for m in doc["models"]:
        weights = "random weights (latency only)" if m["weights"] == "random" else m["folder"]
        lines.append(f"- {m['name']}: {m['config']} {m['task']}, {m['encoder_params'] / 1e6:.1f} M encoder params, "
                     f"{m['flops_per_forward'] / 1e9:.2f} GFLOP per sample; {weights}")
    if scored:
        data = doc["settings"]["data"]
        lines.append(f"- accuracy on {data} (at most {doc['settings']['limit']} samples, scored at the first batch size)")
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in doc["results"]:
        cells = [r["model"], _engine(r), _precision(r), str(r["batch"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}",
                 f"{r['p99_ms']:.2f}", f"{r['throughput']:.1f}", f"{r['gflops']:.1f}",
                 f"{100 * r['fraction_of_peak']:.1f}" if r["fraction_of_peak"] is not None else "-",
                 f"{r['peak_rss_mb']:.0f}"]
        if scored:
            cells += [_percent(r.get("accuracy")), _percent(r.get("agreement_vs_fp32"))]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _peak_notes(doc) + [f"skipped {x.get('model', 'all models')} {x['engine']} {x['precision']}: {x['reason']}"
                               for x in doc["skipped"]]
    notes += [f"failed {x['model']} {x['engine']} {x['precision']} batch {x['batch']}: {x['error'].splitlines()[0]}"
              for x in doc["failures"]]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines).lstrip("\n") + "\n"


def _engine(r: dict[str, Any]) -> str:
    name = {"torch": "torch eager", "onnx": "ONNX Runtime", "torch-graph": "torch + CUDA graph",
            "torch-triton": "torch + Triton kernels + CUDA graph"}.get(r["engine"], r["engine"])
    return name + (" (export failed parity)" if r.get("export_passed") is False else "")


def _precision(r: dict[str, Any]) -> str:
    method = " ".join(x for x in (r.get("export_method"), r.get("calib_method")) if x)  # "static percentile"
    details = ([method] if method else []) + ([r["int8_scope"]] if r.get("int8_scope") else [])
    return r["precision"] + (f" ({', '.join(details)})" if details else "")


def _percent(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "-"


def _peak_notes(doc: dict[str, Any]) -> list[str]:
    seen = {}
    for r in doc["results"]:
        seen.setdefault(r["precision"], r["peak_formula"])
    return [f"peak {p}: {formula}" for p, formula in seen.items()]


def plot(doc: dict[str, Any], path: str | Path) -> None:
    """Latency against batch size per engine and precision, beside throughput; with a test set the
    second panel is accuracy against latency, the speed/accuracy curve to pick a point from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    results = doc["results"]
    scored = [r for r in results if r.get("accuracy") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        series.setdefault((r["model"], r["engine"], r["precision"]), []).append(r)
    for (model, engine, precision), rs in series.items():
        rs = sorted(rs, key=lambda r: r["batch"])
        label = f"{Path(model).name} {engine} {_precision(rs[0])}"
        left.plot([r["batch"] for r in rs], [r["p50_ms"] for r in rs], marker="o", label=label)
        if not scored:
            right.plot([r["batch"] for r in rs], [r["throughput"] for r in rs], marker="o", label=label)
    left.set(xlabel="batch size", ylabel="p50 latency (ms)", title="latency")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    if scored:
        first = {}
        for r in scored:
            first.setdefault((r["model"], r["engine"], r["precision"]), r)
        for (model, engine, _), r in first.items():
            right.scatter(r["p50_ms"], 100 * r["accuracy"], s=40, label=f"{Path(model).name} {engine} {_precision(r)}")
        right.set_xscale("log")
        right.xaxis.set_major_formatter(plain)
        right.xaxis.set_minor_formatter(plain)
        right.set(xlabel=f"p50 latency at batch {scored[0]['batch']} (ms)", ylabel="accuracy (%)",
                  title="speed / accuracy")
    else:
        right.set(xlabel="batch size", ylabel="samples / s", title="throughput")
    right.legend(fontsize=8)
    batches = sorted({r["batch"] for r in results})
    for ax in (left,) if scored else (left, right):
        if len(batches) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
    # Engines and precisions differ by multiples: a log axis keeps the fast ones readable.
    left.set_yscale("log")
    left.yaxis.set_major_formatter(plain)
    left.yaxis.set_minor_formatter(plain)
    left.legend(fontsize=8)
    fig.suptitle(textwrap.fill(f"radiofm bench: {machine_line(doc)}", 150), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
