"""Models on disk: a folder with ``config.json`` and ``model.safetensors``.

Loading never unpickles code: our own weights are safetensors, and a foreign ``.pth`` is read with
``torch.load(weights_only=True)``. Every write goes to a temporary file first and is renamed into
place, so an interrupted save leaves the previous model intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from radiofm.config import ModelConfig, preset

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ZOO_DIR = Path(__file__).parent / "zoo"


# --------------------------------------------------------------------------- atomic writes
@contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive in the block are held, and raised again as it ends.

    Around making a temporary file and naming it: a stop that arrived in between (Ctrl-C's
    KeyboardInterrupt, a worker's SIGTERM handler raising) would leave a file that nothing removes;
    held, it is raised once the name is where the cleanup sees it, by the handler that was in place.
    Python handlers run in the main thread only, so elsewhere there is nothing to hold. (A signal mask
    would not do: in a process with other threads, BLAS's or a pool's, the signal reaches one of
    those, and the main thread runs its Python handler all the same.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in stops}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(held):  # each once, in the order they came
            signal.raise_signal(s)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    tmp = None
    try:  # an interrupt from here on (Ctrl-C reaching a worker mid-write) removes the temporary file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with deferred_signals():
                fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                tmp = Path(name)
                os.close(fd)
        except OSError as e:
            raise _naming(e, path) from e
        yield tmp
        try:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes files private; models and reports are meant to be shared
            os.replace(tmp, path)
        except OSError as e:
            raise _naming(e, path) from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` as the same type, with a message about ``path`` rather than the temporary file beside it."""
    if isinstance(error, FileExistsError) and error.filename:  # from mkdir: a file where a folder must be
        reason = f"{error.filename} is a file, not a folder"
    else:
        reason = error.strerror or str(error)
    return type(error)(f"cannot write {path}: {reason}")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


# --------------------------------------------------------------------------- resolving names
def zoo_names() -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A model folder, a training run folder (stands for its final model) or a zoo name -> model folder."""
    path = Path(name_or_path)
    for candidate in (path, path / "final"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    if str(name_or_path) in zoo_names():
        return ZOO_DIR / str(name_or_path)
    if path.exists():
        if (path / "last" / "state.safetensors").is_file():  # a training run that has not written final/ yet
            from radiofm.training.state import unfinished_run  # imports torch: only on this path

            unfinished = unfinished_run(path)
            if unfinished:
                raise FileNotFoundError(unfinished)
        raise FileNotFoundError(
            f"{path} is not a model folder: it has no {CONFIG_FILE} (nor final/{CONFIG_FILE} as a run folder has)"
        )
    raise FileNotFoundError(
        f"no model folder or zoo model named {str(name_or_path)!r}; zoo models: {', '.join(zoo_names()) or 'none'}"
    )


_SHA256_CACHE: dict[tuple, str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MiB blocks. Remembered within the process by (path, device, inode,
    size, mtime): every save here replaces the file in one rename (a new inode), and a rewrite in
    place moves its mtime, so opening a model checks its exports without hashing the weights twice."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA256_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA256_CACHE[key] = h.hexdigest()
    return _SHA256_CACHE[key]


def exports_dir(folder: str | os.PathLike) -> Path:
    """Where a model folder's exports (ONNX files, TensorRT plans) are written and found.

    The folder itself; for a zoo model (inside the installed package, perhaps read-only)
    ``$RADIOFM_CACHE`` (default ``~/.cache/radiofm``) / ``<name>-<checksum[:12]>`` of the weights and
    the config together, so an export made from other weights, or under another config (an ONNX
    file carries the config its engine preprocesses with), is never picked up.
    """
    folder = Path(folder)
    if folder.resolve().parent != ZOO_DIR.resolve():
        return folder
    cache = Path(os.environ.get("RADIOFM_CACHE", Path.home() / ".cache" / "radiofm"))
    checksum = hashlib.sha256((sha256_file(folder / WEIGHTS_FILE) + sha256_file(folder / CONFIG_FILE)).encode())
    return cache / f"{folder.name}-{checksum.hexdigest()[:12]}"


def load_config(name_or_path: str | os.PathLike) -> ModelConfig:
    folder = resolve_model_dir(name_or_path)
    path = folder / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


# --------------------------------------------------------------------------- save / load
def save_model(model, folder: str | os.PathLike, cfg: ModelConfig | None = None, half: bool = False) -> Path:
    """Write ``model`` (a radiofm ``VisionTransformer``) as a model folder; ``half`` stores fp16 weights."""
    from safetensors.torch import save_file

    cfg = cfg or model.cfg
    folder = Path(folder)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        state[k] = (v.half() if half and v.is_floating_point() else v).contiguous()
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "radiofm_task": cfg.task})
    write_text_atomic(folder / CONFIG_FILE, cfg.to_json() + "\n")
    return folder


def load_state_dict(folder: str | os.PathLike) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_model_dir(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e


def load_model(name_or_path: str | os.PathLike, device: str = "cpu", task: str | None = None):
    """Build the model of a folder or zoo name and load its weights (fp32, eval mode).

    ``task`` rebuilds the weights under another head: an MAE or classifier folder loaded with
    ``task="encode"`` gives its encoder.
    """
    from radiofm.model import build_model

    cfg = load_config(name_or_path)
    state = load_state_dict(name_or_path)
    if task is not None and task != cfg.task:
        if task == "encode" and "fc_norm.weight" in state:
            raise ValueError(
                f"{resolve_model_dir(name_or_path)} is a classifier fine-tuned with average pooling: its blocks "
                f"end in fc_norm after pooling, not in the encoder's per-token norm, so it has no encoder view. "
                f"Load the pretrained MAE it was fine-tuned from as the encoder (e.g. msm-nano)"
            )
        cfg = cfg.replace(task=task)
        state = encoder_state(state)
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights in {resolve_model_dir(name_or_path)} do not fit a {cfg.name} {cfg.task} model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.to(device).eval()


def encoder_state(state: dict) -> dict:
    """The encoder's tensors of a state dict (no decoder, mask token or head)."""
    drop = ("decoder_", "mask_token", "head.", "fc_norm.")
    return {k: v for k, v in state.items() if not k.startswith(drop)}


# --------------------------------------------------------------------------- original checkpoints
def read_original_checkpoint(path: str | os.PathLike) -> dict:
    """The state dict of an original-implementation ``.pth`` (a dict with a ``model`` key), read
    without unpickling code: anything beyond tensors and plain containers is refused."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} needs arbitrary code to be unpickled, which radiofm refuses to run. "
            f"Re-save it as a plain state dict (torch.save({{'model': model.state_dict()}}, ...)) "
            f"in a trusted environment. Detail: {_unpickling_detail(str(e))}"
        ) from None
    except Exception as e:  # a damaged or foreign file fails deep in torch's readers, with many error types
        kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
        detail = f"{kind}: {str(e).splitlines()[0]}" if str(e).strip() else kind
        raise ValueError(f"{path} is not a readable checkpoint ({detail})") from e
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors (expected a dict with a 'model' key)")
    return state


def _unpickling_detail(message: str) -> str:
    """The part of torch's refusal that says what the file asked for, as plain text (torch styles
    parts of the message with terminal escape codes)."""
    import re

    message = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", message)
    wanted = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if wanted:
        return f"it refers to {wanted.group(1)}, which is not a tensor or a plain container"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "no detail"


def config_from_state(state: dict, base: ModelConfig) -> ModelConfig:
    """Task, channels and class count read from the tensors; the size from ``base`` (checked)."""
    w = state.get("patch_embed.proj.weight")
    if w is None:
        raise ValueError("state dict has no patch_embed.proj.weight: not a ViT/MAE checkpoint")
    dim, in_chans, p, _ = w.shape
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    if (dim, depth, p) != (base.embed_dim, base.depth, base.patch_size):
        raise ValueError(
            f"checkpoint has width {dim}, depth {depth}, patch {p}, but preset {base.name} has "
            f"{base.embed_dim}, {base.depth}, {base.patch_size}: pick the matching --model"
        )
    changes: dict[str, Any] = dict(in_chans=int(in_chans))
    if "mask_token" in state:
        dd = state["decoder_embed.weight"].shape[0]
        ddepth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("decoder_blocks."))
        changes.update(task="mae", decoder_embed_dim=int(dd), decoder_depth=ddepth)
    elif "head.weight" in state:
        changes.update(task="classify", num_classes=int(state["head.weight"].shape[0]),
                       pool="avg" if "fc_norm.weight" in state else "cls", labels=[])
    elif "decoder_pred.weight" in state:
        dd = state["decoder_embed.weight"].shape[0]
        sdepth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("decoder_blocks."))
        changes.update(task="segment", num_classes=int(state["decoder_pred.weight"].shape[0]) // (p * p),
                       decoder_embed_dim=int(dd), seg_depth=sdepth, labels=[])
    else:
        changes.update(task="encode")
    pos = state.get("pos_embed")
    if pos is not None and pos.shape[1] - 1 != base.num_patches:
        side = round((pos.shape[1] - 1) ** 0.5)
        changes["img_size"] = (side * p, side * p)
    return base.replace(**changes)


def convert_original(src: str | os.PathLike, model: str, out: str | os.PathLike, labels: list[str] | None = None):
    """Convert an original-implementation checkpoint into a radiofm model folder; returns (folder, cfg)."""
    from radiofm.model import build_model

    state = read_original_checkpoint(src)
    cfg = config_from_state(state, preset(model))
    if labels:
        cfg = cfg.replace(labels=list(labels))
    net = build_model(cfg)
    missing, unexpected = net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{src} does not fit a {model} {cfg.task} model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return save_model(net, out, cfg), cfg
