"""Triton kernels for the ViT hot path, each beside the PyTorch reference it must equal.

- ``patch_embed``: patch embedding + position embedding + gather of the kept tokens, one pass,
  reading the image tiles in place (reference: ``patch_embed_reference``).
- ``masked_attention``: FlashAttention-style forward that skips key blocks with nothing to attend
  (reference: ``masked_attention_reference``).

Forward only: they serve inference; training keeps the torch path. Importing this package does not
import triton; the first use of a kernel does. ``triton_available()`` says whether they can run here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

_MEMBERS = {
    "patch_embed": "patch_embedding",
    "patch_embed_reference": "patch_embedding",
    "masked_attention": "attention",
    "masked_attention_reference": "attention",
}

__all__ = ["triton_available", *_MEMBERS]


def triton_available() -> bool:
    """True when triton imports and has somewhere to run: a CUDA GPU, or the CPU interpreter."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "yes", "on"):
        return True
    import torch

    return torch.cuda.is_available()


def __getattr__(name: str):
    if name not in _MEMBERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if importlib.util.find_spec("triton") is None:
        raise ImportError(f"radiofm.kernels.{name} needs Triton: pip install 'radiofm[triton]'")
    member = getattr(importlib.import_module(f"{__name__}.{_MEMBERS[name]}"), name)
    globals()[name] = member  # later look-ups skip this function
    return member
