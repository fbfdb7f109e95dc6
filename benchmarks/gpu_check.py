"""GPU check of the Triton kernels: correctness at real shapes, microbenchmarks, one JSON file.

On a CUDA machine (repo root as working directory)::

    bash benchmarks/gpu_check.sh                    # writes $OUT/gpu_check.json

On the CPU, to exercise every code path with tiny shapes (figures meaningless)::

    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --small --out /tmp/gpu_check

(a) Correctness: each kernel in fp16 and bf16 (and fp32 once) against its reference computed in fp32
    on the same input values; max abs error and pass/fail per case, tolerances in the JSON.
(b) Speed: masked_attention against torch SDPA, without a mask and with the same boolean mask (half
    the keys padding); patch_embed (+ keep) against conv2d + add + gather. Each is timed twice:
    ``do_bench`` (eager launches, cold L2, what a caller sees) and ``do_bench_cudagraph`` (launch
    overhead removed: the kernels' own time). Targets are judged on the CUDA-graph figures.
(c) A short tile-size sweep for the two target shapes, so the defaults can be tuned from one run.

The process exits non-zero when a correctness case fails; missed speed targets are reported, not fatal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
TOLERANCES = {  # atol = rtol, against an fp32 reference on the same input values
    "float32": 1e-4,  # fp32 kernels on a GPU: "ieee" dots, different summation order than cuBLAS/cuDNN
    "float16": 5e-3,
    "bfloat16": 3e-2,
}
TARGETS = {
    "attention_unmasked_vs_sdpa": 1.0,  # speedup over SDPA at N=197, d=64, fp16
    "attention_half_padding_vs_sdpa_masked": 1.8,  # speedup over SDPA with the same bool mask
    "patch_embed_keep_vs_conv_add_gather": 2.0,  # speedup at mask ratio 0.75
}


def load_kernels():
    """``radiofm.kernels``, installed or not: without an install, load ``kernels/`` under that name."""
    try:
        return importlib.import_module("radiofm.kernels")
    except ModuleNotFoundError:
        pass
    sys.path.insert(0, str(ROOT))
    importlib.import_module("radiofm")
    spec = importlib.util.spec_from_file_location(
        "radiofm.kernels", ROOT / "kernels" / "__init__.py", submodule_search_locations=[str(ROOT / "kernels")]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["radiofm.kernels"] = module
    spec.loader.exec_module(module)
    return module


class Shapes:
    """Real shapes on a GPU; --small ones that the CPU interpreter gets through in seconds."""

    def __init__(self, small: bool):
        self.small = small
        if small:
            self.attn_batch, self.attn_n = 2, (37, 20)
            self.attn_heads_dims = [(2, 64), (2, 32)]  # (heads, head dim); the first is the target shape
            self.attn_extra_dims = [(1, 128)]
            self.patch_batch, self.image, self.patch, self.patch_dims = 2, 32, 8, (64, 32)
            self.mask_ratio = 0.75
            self.attn_sweep = [(64, 32, 4, 3, False), (32, 16, 4, 2, True), (64, 32, 4, 3, False, 80),
                               (32, 32, 4, 2, False, None, True), (32, 32, 4, 2, False, None, "keys")]
            self.attn_sweep_padded = 1
            self.attn_tma = (32, 16, 4, 2, True)  # the descriptor-load config the correctness cases run
            self.patch_sweep = [(64, 64, 64, 4, 3)]
        else:
            self.attn_batch, self.attn_n = 64, (197, 50)
            self.attn_heads_dims = [(12, 64), (8, 64)]  # vit-m, vit-s
            self.attn_extra_dims = [(24, 32), (6, 128)]  # the same 768 width at other head dims
            self.patch_batch, self.image, self.patch, self.patch_dims = 64, 224, 16, (768, 512)
            self.mask_ratio = 0.75
            # (block_m, block_n, num_warps, num_stages, tma), most promising first: the sweep stops at
            # --sweep-s. 2026-11-27 (H100, pointer loads): 64x32/4/3 47.5 us, 64x64/4/3 49.3, 128x64/8/3
            # 52.5, 128x128/8/2 83, 64x128/8/2 138, 32x64/4/2 101; SDPA 45.5.
            # A sixth entry caps registers per thread (AttentionConfig.maxnreg): at 80 the 64x32/4-warp
            # kernel fits 6 programs per SM instead of 5, without spilling (radiofm.kernels.compile_check).
            # A seventh entry takes smaller tiles for the ragged ends (AttentionConfig.tail): at N=197,
            # 208 x 208 scores per (batch, head) instead of 256 x 224; "keys" shrinks only the last key
            # block (256 x 208), which keeps the plain kernel's barriers (the 16-row query tile adds
            # shared-memory row reductions: radiofm.kernels.compile_check counts them).
            # 256-query tiles hold a whole sequence of N <= 256 in one program (k and v read once per
            # (batch, head), not once per query block), at one program per SM: 16 warps at 98 registers
            # or 8 at 170, spill-free on sm_90 (triton 3.6).
            self.attn_sweep = [
                (64, 32, 4, 3, False), (64, 32, 4, 3, False, None, True), (64, 32, 4, 3, False, None, "keys"),
                (64, 32, 4, 3, False, 80, "keys"), (64, 32, 4, 3, True),
                (64, 32, 4, 3, False, 80, True), (64, 32, 4, 3, False, 80), (64, 32, 4, 3, True, 80),
                (64, 32, 4, 2, False, None, True), (128, 32, 8, 3, False, None, True), (64, 32, 4, 2, False, 80),
                (128, 32, 8, 3, False, 80), (256, 32, 16, 2, False), (256, 32, 8, 3, False),
                (64, 64, 4, 3, True), (64, 32, 4, 2, False),
                (64, 32, 4, 4, False), (64, 32, 4, 2, True), (64, 32, 4, 4, True), (128, 64, 4, 3, False),
                (128, 64, 4, 3, True), (128, 32, 8, 3, False), (128, 32, 8, 3, True), (128, 64, 8, 3, True),
                (64, 32, 8, 3, False), (64, 64, 4, 2, False), (64, 64, 4, 4, True), (128, 32, 4, 3, True),
                (64, 32, 4, 1, False), (64, 64, 4, 1, True), (64, 16, 4, 3, False), (64, 64, 8, 3, True),
                (128, 128, 8, 3, True), (64, 64, 4, 3, False),
            ]
            self.attn_sweep_padded = 3  # the fastest unmasked configs also timed with half the keys padded
            self.attn_tma = (64, 32, 4, 3, True)  # the descriptor-load config the correctness cases run
            self.patch_sweep = [(64, 128, 64, 4, 3), (32, 128, 64, 4, 3), (64, 64, 64, 4, 3),
                                (128, 128, 64, 8, 3), (64, 256, 64, 8, 3)]


# --------------------------------------------------------------------------- inputs
def attention_inputs(batch, heads, n, d, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(batch, heads, n, d, generator=g).to(device=device, dtype=dtype) for _ in range(3)]


def key_padding(kind, batch, n, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "none":
        return None
    if kind == "half":  # variable length: the second half of every sequence is padding
        mask = torch.arange(n)[None, :].expand(batch, n) < (n + 1) // 2
    elif kind == "random":
        mask = torch.rand(batch, n, generator=g) < 0.5
    elif kind == "single":
        mask = torch.zeros(batch, n, dtype=torch.bool)
        mask[torch.arange(batch), torch.randint(n, (batch,), generator=g)] = True
    elif kind == "empty":
        mask = torch.zeros(batch, n, dtype=torch.bool)
    else:
        raise ValueError(kind)
    return mask.to(device)


def patch_inputs(batch, image, p, dim, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randn(batch, 1, image, image, generator=g)
    weight = torch.randn(dim, 1, p, p, generator=g) / p  # O(1) outputs
    bias = torch.randn(dim, generator=g) * 0.1
    pos = torch.randn(1, (image // p) ** 2, dim, generator=g) * 0.1
    # The model keeps pos_embed in its own dtype; the kernel upcasts it either way.
    return [t.to(device=device, dtype=dtype) for t in (images, weight, bias, pos)]


def keep_indices(batch, n_tokens, ratio, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    n_keep = round(n_tokens * (1 - ratio))
    return torch.argsort(torch.rand(batch, n_tokens, generator=g), dim=1)[:, :n_keep].to(device)


# --------------------------------------------------------------------------- (a) correctness
def check_attention(kk, shapes, device):
    dtypes = [torch.float16] if shapes.small else [torch.float16, torch.bfloat16]
    cases = [(h, d, n, dtype) for h, d in shapes.attn_heads_dims for n in shapes.attn_n for dtype in dtypes]
    cases += [(h, d, shapes.attn_n[0], dtype) for h, d in shapes.attn_extra_dims for dtype in dtypes]
    cases += [(*shapes.attn_heads_dims[0], shapes.attn_n[0], torch.float32)]
    rows = []
    for heads, d, n, dtype in cases:
        q, k, v = attention_inputs(shapes.attn_batch, heads, n, d, dtype, device)
        kinds = ["half"] if dtype == torch.float32 else ["none", "half", "random", "single", "empty"]
        for kind in kinds:
            mask = key_padding(kind, shapes.attn_batch, n, device)
            out = kk.masked_attention(q, k, v, mask).float()
            expected = kk.masked_attention_reference(q.float(), k.float(), v.float(), mask)
            rows.append(_compare("masked_attention", dict(batch=shapes.attn_batch, heads=heads, n=n, d=d, mask=kind),
                                 dtype, out, expected))
    # The tensor-descriptor (TMA) load path, at the target shape and at the short one.
    from radiofm.kernels.attention import AttentionConfig

    tma = AttentionConfig(*shapes.attn_tma)
    heads, d = shapes.attn_heads_dims[0]
    for n in shapes.attn_n:
        for dtype in dtypes:
            q, k, v = attention_inputs(shapes.attn_batch, heads, n, d, dtype, device)
            for kind in ["none", "half", "random", "empty"]:
                mask = key_padding(kind, shapes.attn_batch, n, device)
                case = dict(batch=shapes.attn_batch, heads=heads, n=n, d=d, mask=kind, config=tma._asdict())
                try:  # a path new to this GPU's triton must not cost the cases already recorded
                    out = kk.masked_attention(q, k, v, mask, config=tma).float()
                except Exception as exc:
                    rows.append(dict(kernel="masked_attention", **case, dtype=str(dtype).removeprefix("torch."),
                                     error=f"{type(exc).__name__}: {exc}", passed=False))
                    continue
                expected = kk.masked_attention_reference(q.float(), k.float(), v.float(), mask)
                rows.append(_compare("masked_attention", case, dtype, out, expected))
    return rows


def check_patch_embed(kk, shapes, device):
    dtypes = [torch.float16] if shapes.small else [torch.float16, torch.bfloat16]
    cases = [(dim, dtype) for dim in shapes.patch_dims for dtype in dtypes] + [(shapes.patch_dims[0], torch.float32)]
    rows = []
    n_tokens = (shapes.image // shapes.patch) ** 2
    for dim, dtype in cases:
        images, weight, bias, pos = patch_inputs(shapes.patch_batch, shapes.image, shapes.patch, dim, dtype, device)
        for ratio in (None, shapes.mask_ratio):
            keep = None if ratio is None else keep_indices(shapes.patch_batch, n_tokens, ratio, device)
            out = kk.patch_embed(images, weight, bias, pos, keep).float()
            expected = kk.patch_embed_reference(*(t.float() for t in (images, weight, bias, pos)), keep)
            case = dict(batch=shapes.patch_batch, image=shapes.image, patch=shapes.patch, dim=dim, mask_ratio=ratio)
            rows.append(_compare("patch_embed", case, dtype, out, expected))
    return rows


def _compare(kernel, case, dtype, out, expected):
    name = str(dtype).removeprefix("torch.")
    tol = TOLERANCES[name]
    err = (out - expected).abs()
    finite = bool(torch.isfinite(out).all())
    ok = finite and bool((err <= tol + tol * expected.abs()).all())
    return dict(kernel=kernel, **case, dtype=name, max_abs_err=float(err.max()) if out.numel() else 0.0,
                tolerance=tol, finite=finite, passed=ok)


# --------------------------------------------------------------------------- (b) speed
def timers(device):
    """(eager, graph) timers in ms; on the CPU one wall-clock timer stands in for both."""
    if device.type == "cuda":
        import triton.testing

        def eager(fn):
            return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")

        def graph(fn):
            return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")

        return eager, graph

    def wall(fn):
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return wall, wall


def bench_attention(kk, shapes, device, dtypes):
    eager, graph = timers(device)
    rows = []
    n = shapes.attn_n[0]
    batch = shapes.attn_batch
    for heads, d in shapes.attn_heads_dims + shapes.attn_extra_dims:
        for dtype in dtypes:
            q, k, v = attention_inputs(batch, heads, n, d, dtype, device)
            mask = key_padding("half", batch, n, device)
            sdpa_mask = mask[:, None, None, :]
            variants = {
                "triton": lambda: kk.masked_attention(q, k, v),
                "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
                "triton_half_padding": lambda: kk.masked_attention(q, k, v, mask),
                "sdpa_half_padding": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask),
            }
            flops = 4 * batch * heads * n * n * d  # nominal: the full N x N, also for the masked runs
            row = dict(batch=batch, heads=heads, n=n, d=d, dtype=str(dtype).removeprefix("torch."),
                       flops=flops, note="TFLOP/s counts the full N x N for masked runs too")
            for name, fn in variants.items():
                row.update(_timed(name, fn, eager, graph, flops=flops))
            row["speedup_unmasked"] = _ratio(row, "sdpa", "triton")
            row["speedup_half_padding"] = _ratio(row, "sdpa_half_padding", "triton_half_padding")
            rows.append(row)
    return rows


def bench_patch_embed(kk, shapes, device, dtypes):
    eager, graph = timers(device)
    rows = []
    n_tokens = (shapes.image // shapes.patch) ** 2
    for dim in shapes.patch_dims:
        for dtype in dtypes:
            images, weight, bias, pos = patch_inputs(shapes.patch_batch, shapes.image, shapes.patch, dim, dtype,
                                                     device)
            for ratio in (shapes.mask_ratio, None):
                keep = None if ratio is None else keep_indices(shapes.patch_batch, n_tokens, ratio, device)
                n_out = n_tokens if keep is None else keep.shape[1]
                size = images.element_size()
                # The least any implementation must move: kept tiles in, weight, bias, pos rows, output out.
                nbytes = (shapes.patch_batch * n_out * shapes.patch ** 2 * size + weight.numel() * size
                          + dim * size + shapes.patch_batch * n_out * dim * (pos.element_size() + size))
                variants = {
                    "triton": lambda: kk.patch_embed(images, weight, bias, pos, keep, check_keep=False),
                    "torch": lambda: kk.patch_embed_reference(images, weight, bias, pos, keep),
                }
                row = dict(batch=shapes.patch_batch, image=shapes.image, patch=shapes.patch, dim=dim,
                           dtype=str(dtype).removeprefix("torch."), mask_ratio=ratio, bytes=nbytes,
                           note="GB/s = minimal bytes moved / time, for both; triton runs with check_keep=False")
                for name, fn in variants.items():
                    row.update(_timed(name, fn, eager, graph, nbytes=nbytes))
                if keep is not None:
                    # The default range check of keep syncs the device: its price, eager only.
                    row["triton_checked_eager_ms"] = eager(lambda: kk.patch_embed(images, weight, bias, pos, keep))
                row["speedup"] = _ratio(row, "torch", "triton")
                rows.append(row)
    return rows


def sweep(kk, shapes, device, budget_s=float("inf")):
    """Tile sizes and load paths around the defaults at the two target shapes (CUDA-graph timings).

    Attention: every config without a mask until ``budget_s`` is spent, then the fastest few also
    with half the keys padded, then the fastest against SDPA again side by side (``best_attention``),
    so a new default is backed by a figure from the same run.
    """
    from radiofm.kernels.attention import AttentionConfig
    from radiofm.kernels.patch_embedding import PatchEmbedConfig

    start = time.perf_counter()
    _, graph = timers(device)
    dtype = torch.float16
    heads, d = shapes.attn_heads_dims[0]
    n = shapes.attn_n[0]
    q, k, v = attention_inputs(shapes.attn_batch, heads, n, d, dtype, device)
    mask = key_padding("half", shapes.attn_batch, n, device)
    expected = kk.masked_attention_reference(q.float(), k.float(), v.float())
    rows = []
    for cfg in (AttentionConfig(*c) for c in shapes.attn_sweep):
        if time.perf_counter() - start > budget_s:
            rows.append(dict(kernel="masked_attention", config=cfg._asdict(), skipped="sweep budget spent"))
            continue
        row = dict(kernel="masked_attention", heads=heads, n=n, d=d, config=cfg._asdict())
        try:  # only a config that computes the right thing may become the default
            check = _compare("masked_attention", {}, dtype, kk.masked_attention(q, k, v, config=cfg).float(), expected)
            row.update(max_abs_err=check["max_abs_err"], correct=check["passed"])
        except Exception as exc:
            row.update(correct=False, error=f"{type(exc).__name__}: {exc}")
        if row["correct"]:
            row.update(_timed("unmasked", lambda: kk.masked_attention(q, k, v, config=cfg), None, graph))
        rows.append(row)
    timed = sorted((r for r in rows if "unmasked_graph_ms" in r), key=lambda r: r["unmasked_graph_ms"])
    for row in timed[:shapes.attn_sweep_padded]:
        cfg = AttentionConfig(**row["config"])
        row.update(_timed("half_padding", lambda: kk.masked_attention(q, k, v, mask, config=cfg), None, graph))
    best = None
    if timed:
        cfg = AttentionConfig(**timed[0]["config"])
        best = dict(heads=heads, n=n, d=d, dtype="float16", config=cfg._asdict(),
                    note="the sweep's fastest unmasked config, re-timed beside SDPA")
        best.update(_timed("triton", lambda: kk.masked_attention(q, k, v, config=cfg), None, graph))
        best.update(_timed("sdpa", lambda: F.scaled_dot_product_attention(q, k, v), None, graph))
        best["speedup_unmasked"] = _ratio(best, "sdpa", "triton")
    dim = shapes.patch_dims[0]
    images, weight, bias, pos = patch_inputs(shapes.patch_batch, shapes.image, shapes.patch, dim, dtype, device)
    keep = keep_indices(shapes.patch_batch, (shapes.image // shapes.patch) ** 2, shapes.mask_ratio, device)
    for cfg in map(PatchEmbedConfig._make, shapes.patch_sweep):
        row = dict(kernel="patch_embed", dim=dim, mask_ratio=shapes.mask_ratio, config=cfg._asdict())
        row.update(_timed("keep", lambda: kk.patch_embed(images, weight, bias, pos, keep, check_keep=False,
                                                          config=cfg), None, graph))
        rows.append(row)
    return rows, best


def _timed(name, fn, eager, graph, flops=None, nbytes=None):
    out = {}
    for mode, timer in (("eager", eager), ("graph", graph)):
        if timer is None:
            continue
        try:
            ms = timer(fn)
        except Exception as exc:  # one failing variant must not cost the rest of the run
            out[f"{name}_{mode}_error"] = f"{type(exc).__name__}: {exc}"
            continue
        out[f"{name}_{mode}_ms"] = ms
        if flops:
            out[f"{name}_{mode}_tflops"] = flops / ms / 1e9
        if nbytes:
            out[f"{name}_{mode}_gbps"] = nbytes / ms / 1e6
    return out


def _ratio(row, baseline, candidate, mode="graph"):
    a, b = row.get(f"{baseline}_{mode}_ms"), row.get(f"{candidate}_{mode}_ms")
    return a / b if a and b else None


# --------------------------------------------------------------------------- report
def judge_targets(attention_rows, patch_rows, shapes):
    heads, d = shapes.attn_heads_dims[0]
    attn = next((r for r in attention_rows if (r["heads"], r["d"], r["dtype"]) == (heads, d, "float16")), {})
    patch = next((r for r in patch_rows if r["dim"] == shapes.patch_dims[0] and r["dtype"] == "float16"
                  and r["mask_ratio"] == shapes.mask_ratio), {})
    values = {
        "attention_unmasked_vs_sdpa": attn.get("speedup_unmasked"),
        "attention_half_padding_vs_sdpa_masked": attn.get("speedup_half_padding"),
        "patch_embed_keep_vs_conv_add_gather": patch.get("speedup"),
    }
    return {
        name: dict(speedup=value, target=TARGETS[name],
                   passed=None if value is None or shapes.small else value >= TARGETS[name])
        for name, value in values.items()
    }


def environment(device):
    import triton

    info = dict(date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), torch=torch.__version__,
                triton=triton.__version__, python=platform.python_version(), device=str(device))
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    sm=f"{props.major}.{props.minor}")
    else:
        info.update(gpu=None, note="CPU interpreter run (--small): timings are not GPU figures")
    return info


def print_summary(report):
    env = report["environment"]
    print(f"\n== gpu_check on {env.get('gpu') or 'CPU (interpreter)'}, torch {env['torch']}, triton {env['triton']}")
    failed = [r for r in report["correctness"] if not r["passed"]]
    print(f"correctness: {len(report['correctness']) - len(failed)}/{len(report['correctness'])} cases passed")
    for r in failed:
        print(f"  FAIL {r}")
    print(f"{'attention (graph ms)':<34}{'triton':>9}{'sdpa':>9}{'x':>7}{'tri pad':>9}{'sdpa pad':>9}{'x':>7}")
    for r in report["attention_bench"]:
        label = f"H={r['heads']} N={r['n']} d={r['d']} {r['dtype']}"
        print(f"{label:<34}{_fmt(r.get('triton_graph_ms'))}{_fmt(r.get('sdpa_graph_ms'))}"
              f"{_fmt(r.get('speedup_unmasked'), 7)}{_fmt(r.get('triton_half_padding_graph_ms'))}"
              f"{_fmt(r.get('sdpa_half_padding_graph_ms'))}{_fmt(r.get('speedup_half_padding'), 7)}")
    print(f"{'patch embed (graph ms)':<34}{'triton':>9}{'torch':>9}{'x':>7}{'GB/s':>9}")
    for r in report["patch_embed_bench"]:
        label = f"D={r['dim']} {r['dtype']} mask={r['mask_ratio']}"
        print(f"{label:<34}{_fmt(r.get('triton_graph_ms'))}{_fmt(r.get('torch_graph_ms'))}"
              f"{_fmt(r.get('speedup'), 7)}{_fmt(r.get('triton_graph_gbps'))}")
    best = report.get("best_attention")
    if best:
        print(f"sweep's fastest attention config {best['config']}: {_fmt(best.get('triton_graph_ms')).strip()} ms, "
              f"SDPA {_fmt(best.get('sdpa_graph_ms')).strip()} ms, {_fmt(best.get('speedup_unmasked'), 0).strip()}x")
    for name, t in report["targets"].items():
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["passed"]]
        print(f"target {name}: {_fmt(t['speedup'], 0).strip() or '-'}x (>= {t['target']}x) {verdict}")
    for section, err in report["errors"].items():
        print(f"ERROR in {section}: {err.splitlines()[-1]}")
    print(f"total {report['elapsed_s']:.0f} s")


def _fmt(value, width=9):
    return f"{value:>{width}.3f}" if isinstance(value, float) and math.isfinite(value) else " " * (width - 1) + "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes, to exercise the code paths on the CPU")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for gpu_check.json")
    parser.add_argument("--budget-s", type=float, default=200.0,
                        help="skip the remaining benchmark sections once this much time has passed")
    parser.add_argument("--sweep-s", type=float, default=90.0,
                        help="time the attention sweep may take before it stops trying configs")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    kk = load_kernels()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        # The fp32 references must be fp32, not TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    shapes = Shapes(args.small)
    dtypes = [torch.float16] if args.small else [torch.float16, torch.bfloat16]
    report = dict(environment=environment(device), tolerances=TOLERANCES, correctness=[], attention_bench=[],
                  patch_embed_bench=[], sweep=[], best_attention=None, skipped=[], errors={})

    sections = [
        ("correctness", lambda: check_attention(kk, shapes, device) + check_patch_embed(kk, shapes, device)),
        ("attention_bench", lambda: bench_attention(kk, shapes, device, dtypes)),
        ("patch_embed_bench", lambda: bench_patch_embed(kk, shapes, device, dtypes)),
        ("sweep", lambda: sweep(kk, shapes, device, args.sweep_s)),
    ]
    for name, run in sections:
        if name != "correctness" and time.perf_counter() - start > args.budget_s:
            report["skipped"].append(name)
            continue
        section_start = time.perf_counter()
        try:
            result = run()
            if name == "sweep":
                result, report["best_attention"] = result
            report[name] = result
        except Exception:  # record it and go on: device time is too scarce to lose the other sections
            report["errors"][name] = traceback.format_exc()
        report[f"{name}_s"] = time.perf_counter() - section_start
    report["targets"] = judge_targets(report["attention_bench"], report["patch_embed_bench"], shapes)
    report["all_correct"] = bool(report["correctness"]) and all(r["passed"] for r in report["correctness"])
    report["elapsed_s"] = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=2))
    print_summary(report)
    print(f"wrote {path}")
    return 0 if report["all_correct"] and "correctness" not in report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
