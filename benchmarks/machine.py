"""What a benchmark ran on, and the most that machine could compute.

The peak is nominal: cores x clock x operations per cycle of the widest unit the CPU has for a
precision (FMA vectors, VNNI dot products, AMX tiles), or the GPU's dense fp16/bf16 tensor-core rate.
Achieved GFLOP/s divided by it says how much of the silicon a configuration uses; it does not say
what is reachable (memory traffic, softmax, LayerNorm and GELU run on none of those units).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# CPU flags that decide which units a precision can use; recorded so a figure can be read later.
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("radiofm", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "tensorrt")

# Dense fp16/bf16 tensor-core TFLOP/s (no sparsity) from the vendors' data sheets, by name fragment.
# The first fragment found in the device name wins, so more specific names come first.
GPU_PEAK_TFLOPS = (
    ("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("B200", 2250.0),
    ("A100", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
    ("RTX 4090", 165.2), ("V100", 125.0), ("T4", 65.0),
)


def cpu_info() -> dict[str, Any]:
    """Model name, usable cores, the flags above, and the clock with where it was read."""
    text = _read("/proc/cpuinfo")
    first = text.split("\n\n", 1)[0]
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in first.splitlines()) if v
    )
    flags = set(fields.get("flags", "").split())
    mhz, source = _cpu_mhz(fields)
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "vendor": fields.get("vendor_id", ""),
        "family": fields.get("cpu family", ""),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": {f: f in flags for f in CPU_FLAGS},
        "mhz": mhz,
        "mhz_source": source,
    }


def _cpu_mhz(fields: dict[str, str]) -> tuple[float | None, str]:
    """The highest clock the machine admits to: lscpu's max (sysfs), else /proc/cpuinfo's current.

    On virtual machines sysfs often has no cpufreq and cpuinfo shows the nominal clock; boost can
    run above it, so the peak derived from it may be exceeded slightly.
    """
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    if max_khz.isdigit():
        return int(max_khz) / 1000, "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
    if "cpu MHz" in fields:
        return float(fields["cpu MHz"]), "/proc/cpuinfo 'cpu MHz'"
    return None, "unknown"


def cpu_ops_per_cycle(cpu: dict[str, Any], precision: str) -> tuple[int, str]:
    """Operations per cycle per core for ``precision`` and the unit they come from (2 issue ports).

    fp32: 2 FMA ports x lanes x 2 (multiply + add): 32 with 256-bit AVX2, 64 with AVX-512 (AMD Zen 4,
    family 25, runs 512-bit FMAs on 256-bit pipes: 32). bf16: AMX 1024, AVX512-BF16 128 (dot product of
    pairs), otherwise bf16 is widened to fp32 and gets the fp32 rate. int8: AMX 2048, AVX512-VNNI 256,
    AVX-VNNI 128, otherwise AVX2 vpmaddubsw at 2 ports x 32 products x 2 = 128, halved because a second
    multiply (vpmaddwd) widens each result: 64.
    """
    f = cpu["flags"]
    wide = f["avx512f"] and not (cpu["vendor"] == "AuthenticAMD" and cpu["family"] == "25")
    fp32 = (64, "AVX-512 FMA") if wide else (32, "AVX2 FMA") if f["fma"] else (8, "SSE")
    if precision == "bf16":
        if f["amx_bf16"]:
            return 1024, "AMX-BF16"
        if f["avx512_bf16"]:
            return 128, "AVX512-BF16"
        return fp32[0], fp32[1] + " (bf16 widened to fp32)"
    if precision == "int8":
        if f["amx_int8"]:
            return 2048, "AMX-INT8"
        if f["avx512_vnni"]:
            return 256, "AVX512-VNNI"
        if f["avx_vnni"]:
            return 128, "AVX-VNNI"
        if f["avx2"]:
            return 64, "AVX2 vpmaddubsw+vpmaddwd"
    return fp32  # fp16 on the CPU is computed in fp32


def cpu_peak(cpu: dict[str, Any], precision: str) -> dict[str, Any]:
    ops, unit = cpu_ops_per_cycle(cpu, precision)
    peak = cpu["cores"] * cpu["mhz"] * 1e6 * ops if cpu["mhz"] else None
    return {
        "peak_gflops": peak / 1e9 if peak else None,
        "peak_unit": unit,
        "peak_formula": f"{cpu['cores']} cores x {cpu['mhz']} MHz ({cpu['mhz_source']}) x {ops} ops/cycle/core ({unit})",
    }


def gpu_info() -> dict[str, Any] | None:
    """Name, memory and fp16/bf16 peak of CUDA device 0, or None without a usable CUDA torch."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    peak = next((tflops for fragment, tflops in GPU_PEAK_TFLOPS if fragment in props.name), None)
    return {
        "name": props.name,
        "memory_gb": round(props.total_memory / 2**30, 1),
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "peak_gflops_fp16": peak * 1e3 if peak else None,
    }


def gpu_peak(gpu: dict[str, Any]) -> dict[str, Any]:
    peak = gpu["peak_gflops_fp16"]
    return {
        "peak_gflops": peak,
        "peak_unit": "tensor cores, dense fp16/bf16",
        "peak_formula": f"data-sheet dense fp16/bf16 rate of {gpu['name']}" if peak else
                        f"{gpu['name']} is not in the peak table (benchmarks/machine.py GPU_PEAK_TFLOPS)",
    }


def library_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for dist in PACKAGES:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


def describe_machine() -> dict[str, Any]:
    return {
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "os": platform.platform(),
        "libraries": library_versions(),
    }


def cpu_summary(cpu: dict[str, Any]) -> str:
    """One line for tables: model, cores, clock and the flags that matter for speed."""
    present = [f for f, on in cpu["flags"].items() if on and f not in ("fma", "f16c")]
    absent = [f for f in ("avx512f", "avx512_vnni", "amx_bf16") if not cpu["flags"][f]]
    flags = ", ".join(present) + ("; no " + ", ".join(absent) if absent else "")
    mhz = f", {cpu['mhz']:.0f} MHz" if cpu["mhz"] else ""
    return f"{cpu['model']}, {cpu['cores']} cores{mhz} ({flags})"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def load_average() -> float | None:
    """1-minute load average: figures taken above ~0.5 on a small machine are disturbed."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None

