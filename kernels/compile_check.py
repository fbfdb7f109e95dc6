"""Compile the kernels for NVIDIA GPU targets on a machine without a GPU, and report what came out.

The interpreter (TRITON_INTERPRET=1) runs a kernel's logic on the CPU, but it accepts programs that a
GPU compile rejects (a tl.dot under 16 rows, a descriptor box past its limits) and says nothing about
registers, spills or which tensor-core instructions a config gets. This builds the launch that a
launcher makes at real shapes (the launcher's own ``_launch_args``: same arguments and
meta-parameters), specialises it as triton's launcher does (an int equal to 1 becomes a constant;
16-byte aligned pointers and ints divisible by 16 are marked so), compiles it for each target, and
reads the cubin's resources and instruction mix with the cuobjdump that ships in triton's wheel.

    python -m radiofm.kernels.compile_check [--arch 80] [--arch 90] [--json FILE]

Needs triton with its NVIDIA backend (the PyPI wheel), no GPU and no driver; not under
TRITON_INTERPRET, which replaces the kernels with their interpreted form at import.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import triton

_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.uint8: "u8",
           torch.int8: "i8", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1"}
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "maxnreg", "enable_fp_fusion")
# SASS mnemonics: warpgroup MMA (Hopper), warp MMA (Ampere and later), TMA copies, async copies,
# thread-block barriers (as written in the code, not as executed: a loop's count once).
# Shared memory one thread block may opt in to, per compute capability (CUDA programming guide).
_SHARED_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
_INSTRUCTIONS = {"wgmma": r"\bHGMMA\b", "mma": r"\bHMMA\b", "tma": r"\bUTMA(?:LDG|STG)\b", "cp_async": r"\bLDGSTS\b",
                 "barriers": r"\bBAR\.SYNC\b"}


@dataclass
class CompileResult:
    case: str
    arch: int
    config: dict[str, Any]
    ok: bool
    error: str | None = None
    registers: int | None = None  # per thread
    spill_bytes: int | None = None  # stack and local memory per thread: registers spilled to memory
    shared_bytes: int | None = None  # per program, as the launcher will request it
    shared_limit: int | None = None  # the most one program may have on this target (None: unknown)
    instructions: dict[str, int] | None = None
    seconds: float = 0.0


@dataclass
class Case:
    name: str
    kernel: Any  # the @triton.jit function
    launch: Callable[[], tuple[tuple, tuple, dict[str, Any]]]  # -> (grid, args, meta), built lazily
    archs: tuple[int, ...] | None = None  # None: every target asked for


def specialise(kernel, args: tuple, meta: dict[str, Any]):
    """(signature, constexprs, attrs) for ``triton.compiler.ASTSource``, from a launch's values."""
    names = list(kernel.arg_names)
    values = dict(zip(names, args))
    values.update({k: v for k, v in meta.items() if k not in _LAUNCH_OPTIONS})
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(names):
        value = values[name]
        if name in meta or kernel.params[i].is_constexpr:
            signature[name], constexprs[(i,)] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = f"*{_DTYPES[value.dtype]}"
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif hasattr(value, "block_shape") and hasattr(value, "base"):  # a host-side tensor descriptor
            signature[name] = f"tensordesc<{_DTYPES[value.base.dtype]}[{','.join(map(str, value.block_shape))}]>"
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            if value == 1:
                signature[name], constexprs[(i,)] = "constexpr", 1
            else:
                signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{kernel.fn.__name__}: cannot specialise argument {name} of type {type(value).__name__}")
    return signature, constexprs, attrs


def _cuobjdump() -> str | None:
    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return bundled if os.access(bundled, os.X_OK) else shutil.which("cuobjdump")


def compile_case(case: Case, arch: int) -> CompileResult:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    _, args, meta = case.launch()
    config = {k: v for k, v in meta.items()
              if k.startswith("BLOCK") or k in ("num_warps", "num_stages", "maxnreg") or k == "USE_TMA" or (k.startswith("TAIL") and v)}
    result = CompileResult(case.name, arch, config, ok=False)
    start = time.perf_counter()
    try:
        signature, constexprs, attrs = specialise(case.kernel, args, meta)
        compiled = triton.compile(ASTSource(case.kernel, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                                  options={k: meta[k] for k in _LAUNCH_OPTIONS if k in meta})
    except Exception as e:  # a compile error is the finding: report it, go on with the other cases
        result.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:500]
        result.seconds = time.perf_counter() - start
        return result
    result.ok, result.seconds = True, time.perf_counter() - start
    result.shared_bytes, result.shared_limit = int(compiled.metadata.shared), _SHARED_LIMIT.get(arch)
    tool = _cuobjdump()
    if tool is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cubin = os.path.join(tmp, "kernel.cubin")
            with open(cubin, "wb") as f:
                f.write(compiled.asm["cubin"])
            usage = subprocess.run([tool, "-res-usage", cubin], capture_output=True, text=True).stdout
            sass = subprocess.run([tool, "-sass", cubin], capture_output=True, text=True).stdout
        found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", usage)
        if found:
            result.registers, result.spill_bytes = int(found.group(1)), int(found.group(2)) + int(found.group(3))
        result.instructions = {name: len(re.findall(pattern, sass)) for name, pattern in _INSTRUCTIONS.items()}
    return result


def _attention_launch(batch, heads, n, head_dim, dtype, padded=False, config=None):
    def launch():
        from . import attention

        q, k, v = (torch.randn(batch, heads, n, head_dim).to(dtype) for _ in range(3))
        key_padding = torch.arange(n).expand(batch, n) < n // 2 if padded else None
        cfg = config or attention.default_config(head_dim)
        return attention._launch_args(q, k, v, key_padding, torch.empty_like(q), head_dim ** -0.5, cfg)
    return launch


def _patch_embed_launch(batch, size, patch, dim, dtype, mask_ratio):
    def launch():
        from . import patch_embedding

        images = torch.randn(batch, 1, size, size).to(dtype)
        weight = torch.randn(dim, 1, patch, patch).to(dtype)
        bias, pos = torch.randn(dim).to(dtype), torch.randn(1, (size // patch) ** 2, dim).to(dtype)
        n_tokens = (size // patch) ** 2
        keep = None
        if mask_ratio:
            keep = torch.rand(batch, n_tokens).argsort(1)[:, : int(n_tokens * (1 - mask_ratio))]
        out = torch.empty(batch, n_tokens if keep is None else keep.shape[1], dim, dtype=dtype)
        return patch_embedding._launch_args(images, weight, bias, pos, keep, out, None)
    return launch


def cases() -> list[Case]:
    """The shipped default configs at the shapes gpu_check times (B=64, N=197, ViT-B patch embedding),
    plus variants the GPU sweep tries: descriptor (TMA) loads and a register cap on Hopper, and
    smaller tiles for the ragged ends (``tail``)."""
    from . import attention, patch_embedding

    attn = attention._masked_attention_fwd
    found = [Case(f"attention d={d} fp16", attn, _attention_launch(64, 12, 197, d, torch.float16)) for d in (32, 64, 128)]
    found += [
        Case("attention d=64 bf16", attn, _attention_launch(64, 12, 197, 64, torch.bfloat16)),
        Case("attention d=64 fp16 key padding", attn, _attention_launch(64, 12, 197, 64, torch.float16, padded=True)),
        Case("attention d=64 fp16 tma", attn, _attention_launch(
            64, 12, 197, 64, torch.float16, config=attention.default_config(64)._replace(tma=True)), archs=(90,)),
        Case("attention d=64 fp16 maxnreg 80", attn, _attention_launch(
            64, 12, 197, 64, torch.float16, config=attention.default_config(64)._replace(maxnreg=80)), archs=(90,)),
        Case("attention d=64 fp16 tail tiles", attn, _attention_launch(
            64, 12, 197, 64, torch.float16, config=attention.default_config(64)._replace(tail=True))),
        Case("attention d=64 fp16 tail keys", attn, _attention_launch(
            64, 12, 197, 64, torch.float16, config=attention.default_config(64)._replace(tail="keys")), archs=(90,)),
        Case("attention d=64 fp16 tail tiles padding", attn, _attention_launch(
            64, 12, 197, 64, torch.float16, padded=True, config=attention.default_config(64)._replace(tail=True)),
             archs=(90,)),
        Case("patch embed D=768 fp16 keep 25%", patch_embedding._patch_embed_fwd,
             _patch_embed_launch(64, 224, 16, 768, torch.float16, 0.75)),
        Case("patch embed D=512 fp16 all tokens", patch_embedding._patch_embed_fwd,
             _patch_embed_launch(64, 224, 16, 512, torch.float16, 0.0)),
    ]
    return found


def run(archs: tuple[int, ...] = (80, 90), selected: list[Case] | None = None,
        log: Callable[[str], None] = print) -> list[CompileResult]:
    from triton.runtime.interpreter import InterpretedFunction

    selected = cases() if selected is None else selected
    if any(isinstance(c.kernel, InterpretedFunction) for c in selected):
        raise RuntimeError("the kernels were imported under TRITON_INTERPRET=1: run the compile check without it")
    results = []
    for case in selected:
        for arch in archs:
            if case.archs is not None and arch not in case.archs:
                continue
            r = compile_case(case, arch)
            results.append(r)
            log(_line(r))
    return results


def fits(r: CompileResult) -> bool:
    """Whether the program's shared memory is within the target's limit (True where it is unknown)."""
    return r.shared_limit is None or r.shared_bytes is None or r.shared_bytes <= r.shared_limit


def _line(r: CompileResult) -> str:
    cfg = " ".join(f"{k.lower().replace('block_', '').replace('num_', '')}={int(v) if isinstance(v, bool) else v}"
                   for k, v in r.config.items())
    if not r.ok:
        return f"sm_{r.arch}  {r.case:36s} {cfg:44s} FAILED {r.error}"
    ins = " ".join(f"{k} {v}" for k, v in (r.instructions or {}).items())
    return (f"sm_{r.arch}  {r.case:36s} {cfg:44s} regs {r.registers} spill {r.spill_bytes} B "
            f"smem {r.shared_bytes / 1024:.0f} KiB{'' if fits(r) else ' (over the limit)'}  {ins}  ({r.seconds:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiofm.kernels.compile_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability x10 (80, 86, 89, 90, ...); "
                        "repeat; default 80 and 90")
    parser.add_argument("--json", help="write the results here as JSON")
    opts = parser.parse_args(argv)
    print(f"triton {triton.__version__}, torch {torch.__version__}", flush=True)
    results = run(tuple(opts.arch or (80, 90)), log=lambda line: print(line, flush=True))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"triton": triton.__version__, "results": [asdict(r) for r in results]}, f, indent=2)
    # A failed compile or a program over the shared-memory limit fails at launch; a spill only costs time.
    failed = [r for r in results if not r.ok or not fits(r)]
    spilled = [r for r in results if r.ok and r.spill_bytes]
    print(f"{len(results) - len(failed)} of {len(results)} compiled within the targets' shared memory; "
          f"{len(spilled)} with register spills" + "".join(f"\n  spills: sm_{r.arch} {r.case} ({r.spill_bytes} B per thread)"
                                                   for r in spilled))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
