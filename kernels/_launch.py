"""What every launcher needs before it starts a kernel: one usable device, the dot precision, and the
compile options both kernels share."""

from __future__ import annotations

import contextlib

import torch
from triton.runtime.interpreter import InterpretedFunction


def check_device(fn_name: str, kernel: object, **tensors: torch.Tensor | None) -> torch.device:
    """The one device all ``tensors`` live on; a ValueError when the kernel cannot run there.

    Whether a kernel is interpreted is fixed when its module is imported (triton reads
    TRITON_INTERPRET in ``@triton.jit``), so the kernel object is asked, not the environment.
    """
    given = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in given.values()}
    if len(devices) > 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in given.items())
        raise ValueError(f"{fn_name}: all tensors must be on one device, got {where}")
    device = devices.pop()
    interpreted = isinstance(kernel, InterpretedFunction)
    if device.type == "cuda" and not interpreted:
        return device
    if device.type == "cpu" and interpreted:
        return device
    if interpreted:
        raise ValueError(
            f"{fn_name}: triton runs in interpreter mode (TRITON_INTERPRET=1), which takes CPU tensors; "
            f"got tensors on {device}"
        )
    raise ValueError(
        f"{fn_name} needs CUDA tensors (got {device}); to run on the CPU, set TRITON_INTERPRET=1 "
        "before triton is first imported"
    )


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Launch on the tensors' GPU, not the current one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# Multiply-adds fused (FFMA): the softmax's scale-and-subtract and the bias adds are one instruction
# each. Triton 3.9 fuses by default but warns that 3.10 will not; asked for explicitly, the kernels
# compile the same on every release.
COMPILE_OPTIONS = {"enable_fp_fusion": True}


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` precision: fp32 inputs stay exact ("ieee") rather than rounded to TF32, so a kernel
    means the same on a GPU as in the interpreter; half types take the default tensor-core path."""
    return "ieee" if dtype == torch.float32 else "tf32"
