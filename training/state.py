"""Resumable training state: one safetensors file, written atomically.

``RUN/last/state.safetensors`` holds the model's tensors (``model/<name>``), AdamW's per-parameter
state (``optim/<index>/<key>``) and, in the file's metadata, a JSON record of the step and
anything else the loop needs. One file replaced by one rename means a crash while writing leaves
the previous checkpoint whole: there is never a new model beside an old optimizer.

Random state is not stored: the loop derives every random stream (data order, masking, drop path)
from (seed, step), so the step alone puts a resumed run back on the uninterrupted run's path.
The info record also holds the settings the run started with, which a resume must repeat
(``radiofm.training.loop.check_resume``); ``read_info`` reads it without the tensors.
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


def read_info(folder: str | Path) -> dict:
    """The info record of the checkpoint in ``folder`` (step, plan, settings, ...), without loading its tensors."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: nothing to resume from")
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["info"])
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable training checkpoint ({e})") from e


def load_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore ``model`` and ``optimizer`` in place from ``folder``; returns the saved info record."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / STATE_FILE
    info = read_info(folder)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable training checkpoint ({e})") from e
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    own = model.state_dict()
    wrong = sorted({k for k in own if k not in model_state or model_state[k].shape != own[k].shape}
                   | {k for k in model_state if k not in own})
    if wrong:  # another architecture or task
        raise ValueError(f"{path} holds the weights of another model ({len(wrong)} tensor(s) differ, e.g. "
                         f"{wrong[0]}); resume with the original settings or use a new --out")
    model.load_state_dict(model_state)
    optim_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, index, key = k.split("/", 2)
            optim_state.setdefault(int(index), {})[key] = v
    params = [p for g in optimizer.param_groups for p in g["params"]]
    misfit = [i for i, per_param in optim_state.items()
              if i >= len(params) or any(v.ndim and v.shape != params[i].shape for v in per_param.values())]
    if misfit:  # other parameters train (another --mode)
        raise ValueError(f"{path}: its optimizer state does not fit the parameters this run trains "
                         f"({len(optim_state)} with state, {len(params)} trained); resume with the original "
                         f"settings or use a new --out")
    optimizer.load_state_dict({"state": optim_state, "param_groups": optimizer.state_dict()["param_groups"]})
    return info


def unfinished_run(folder: str | Path) -> str | None:
    """For a run folder with a checkpoint but no ``final/`` model yet, a sentence saying so and what to do;
    None for anything else."""
    folder = Path(folder)
    if (folder / "final" / "config.json").is_file() or not (folder / "last" / STATE_FILE).is_file():
        return None
    try:
        info = read_info(folder / "last")
        reached = f" (last checkpoint at step {info['step']} of {info['plan']['total_steps']})"
    except (ValueError, KeyError, TypeError):
        reached = ""
    return (f"{folder} is a training run that has not finished{reached}, so it has no final/ model yet; resume it "
            f"with the same train command (its options are in {folder / 'args.json'}) to write final/")
