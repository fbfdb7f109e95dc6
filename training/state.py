"""Resumable training state: one safetensors file, written atomically.

``RUN/last/state.safetensors`` holds the model's tensors (``model/<name>``), AdamW's per-parameter
state (``optim/<index>/<key>``) and, in the file's metadata, a JSON record of the step and
anything else the loop needs. One file replaced by one rename means a crash while writing leaves
the previous checkpoint whole: there is never a new model beside an old optimizer.

Random state is not stored: the loop derives every random stream (data order, masking, drop path)
from (seed, step), so the step alone puts a resumed run back on the uninterrupted run's path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from radiofm.checkpoint import atomic_path

STATE_FILE = "state.safetensors"


def save_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: dict) -> Path:
    from safetensors.torch import save_file

    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for index, per_param in optimizer.state_dict()["state"].items():
        for key, value in per_param.items():
            tensors[f"optim/{index}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    path = Path(folder) / STATE_FILE
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    return path


def load_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore ``model`` and ``optimizer`` in place from ``folder``; returns the saved info record."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: nothing to resume from")
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads(f.metadata()["info"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable training checkpoint ({e})") from e
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    model.load_state_dict(model_state)
    optim_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, index, key = k.split("/", 2)
            optim_state.setdefault(int(index), {})[key] = v
    optimizer.load_state_dict({"state": optim_state, "param_groups": optimizer.state_dict()["param_groups"]})
    return info
