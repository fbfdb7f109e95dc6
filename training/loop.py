"""The one training loop behind pretraining and fine-tuning.

Read top to bottom: set up (torchrun's environment -> DistributedDataParallel), build AdamW,
resume from ``RUN/last`` when it exists, then step: each optimizer step takes one global batch,
split over processes and accumulation micro-steps, under bf16 autocast where that pays. Every
``ckpt_every`` steps and at the end the state is written atomically; the end also writes the
model folder ``RUN/final`` that ``radiofm.checkpoint.resolve_model_dir(RUN)`` finds.

Exact resume: everything random is derived from (seed, step). The data order of an epoch is a
permutation seeded by (seed, epoch); the generator for MAE masking and torch's global generator
(drop path) are reseeded from (seed, step, rank, micro-step) before every forward. So a run that
resumes at step k takes the same batches and the same random draws as one that never stopped.
The checkpoint also carries the running log window (loss sum, steps), so the metrics lines match too.

Resume is refused unless every setting that shapes the weights (the options recorded in the
checkpoint, see ``check_resume``) is what the run started with. SIGINT / SIGTERM end the current
optimizer step, write ``RUN/last`` and raise ``Interrupted`` (exit status 130 / 143). A non-finite
loss stops the run before its optimizer step, without writing anything.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from radiofm.checkpoint import save_model, write_json_atomic, write_text_atomic
from radiofm.config import ModelConfig

from .optim import lr_at, make_optimizer, set_lr
from .prepared import PreparedData
from .state import STATE_FILE, load_state, read_info, save_state

AMP_CHOICES = ("auto", "bf16", "off")
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainConfig:
    out: Path
    epochs: int
    batch_size: int = 64  # per process and micro-step; the global batch is batch_size * accum_steps * world
    accum_steps: int = 1
    blr: float = 1e-3  # base learning rate: the peak rate is blr * global_batch / 256
    lr: float | None = None  # absolute peak rate, overrides blr
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    weight_decay: float = 0.05
    layer_decay: float | None = None
    amp: str = "auto"
    seed: int = 0
    ckpt_every: int = 0  # optimizer steps between checkpoints; 0 = once per epoch
    log_every: int = 10
    threads: int | None = None
    progress: bool = True
    stop_after: int | None = None  # stop at this step without saving, as a kill would (to exercise resume)
    extra: dict = field(default_factory=dict)  # recorded in args.json (what the command was asked)

    def validate(self) -> None:
        """Raise ValueError naming the option of a setting the loop cannot run with (before any data work)."""
        _need(_is_int(self.epochs) and self.epochs >= 1, "--epochs", "at least 1", self.epochs)
        _need(_is_int(self.batch_size) and self.batch_size >= 1, "--batch", "at least 1", self.batch_size)
        _need(_is_int(self.accum_steps) and self.accum_steps >= 1, "--accum", "at least 1", self.accum_steps)
        _need(_is_number(self.blr) and self.blr > 0, "--blr", "a positive number", self.blr)
        _need(self.lr is None or (_is_number(self.lr) and self.lr > 0), "--lr", "a positive number", self.lr)
        _need(_is_number(self.min_lr) and self.min_lr >= 0, "--min-lr", "at least 0", self.min_lr)
        _need(_is_number(self.warmup_epochs) and self.warmup_epochs >= 0, "--warmup-epochs", "at least 0",
              self.warmup_epochs)
        _need(_is_number(self.weight_decay) and self.weight_decay >= 0, "--weight-decay", "at least 0",
              self.weight_decay)
        _need(self.layer_decay is None or (_is_number(self.layer_decay) and 0 < self.layer_decay <= 1),
              "--layer-decay", "in (0, 1]", self.layer_decay)
        _need(self.amp in AMP_CHOICES, "--amp", f"one of {', '.join(AMP_CHOICES)}", self.amp)
        _need(_is_int(self.seed), "--seed", "an integer", self.seed)
        _need(_is_int(self.ckpt_every) and self.ckpt_every >= 0, "--ckpt-every", "at least 0 (0: once per epoch)",
              self.ckpt_every)
        _need(_is_int(self.log_every) and self.log_every >= 1, "log_every", "at least 1", self.log_every)
        _need(self.threads is None or (_is_int(self.threads) and self.threads >= 1), "--threads", "at least 1",
              self.threads)
        _need(self.stop_after is None or (_is_int(self.stop_after) and self.stop_after >= 0), "stop_after",
              "a step number >= 0", self.stop_after)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _need(ok: bool, option: str, what: str, value) -> None:
    """A ValueError naming ``option``, the rule and the value, worded as the CLI's own option checks."""
    if not ok:
        shown = f"{value:g}" if isinstance(value, (float, np.floating)) else repr(value)
        raise ValueError(f"{option} must be {what}, got {shown}")


class Interrupted(SystemExit):
    """Training stopped by SIGINT or SIGTERM after finishing an optimizer step and writing ``RUN/last``.

    A ``SystemExit`` whose status is 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a
    shell reports a process that a signal ended; running the same command again resumes exactly."""

    def __init__(self, signum: int, step: int, epoch: float):
        super().__init__(128 + signum)
        self.signum, self.step, self.epoch = signum, step, epoch


# What the settings recorded in a checkpoint are called in messages besides the command-line options.
NOT_OPTIONS = ("command", "processes", "training items")


def run_settings(tc: TrainConfig) -> dict:
    """The loop's settings that shape the weights, by option name; with the task's own settings (model,
    data, mask ratio, ...) they are recorded in every checkpoint and must be equal to resume it."""
    return {"--epochs": tc.epochs, "--batch": tc.batch_size, "--accum": tc.accum_steps, "--seed": tc.seed,
            "--blr": None if tc.lr is not None else tc.blr,  # --lr overrides --blr
            "--lr": tc.lr, "--min-lr": tc.min_lr, "--warmup-epochs": tc.warmup_epochs,
            "--weight-decay": tc.weight_decay, "--layer-decay": tc.layer_decay}


def check_resume(tc: TrainConfig, settings: dict, config: dict | None = None) -> dict | None:
    """The info record of the checkpoint in ``tc.out/last`` (None when there is none), once the settings
    it was started with equal ``settings`` and ``run_settings(tc)`` wherever both name one, and its model
    config equals ``config``.

    Raises one ValueError that names every setting that differs, with the recorded and the new value.
    ``pretrain`` and ``finetune`` call it before preparing the data; ``train`` again with everything."""
    last = Path(tc.out) / "last"
    if not (last / STATE_FILE).is_file():
        return None
    info = read_info(last)
    recorded = info.get("settings")
    if recorded is None:  # a checkpoint from before settings were recorded: the plan is all there is
        return info
    now = _plain({**settings, **{k: v for k, v in run_settings(tc).items() if k not in settings}})
    diffs = [f"{_named(k)} {_shown(recorded[k])} (now {_shown(v)})" for k, v in now.items()
             if k in recorded and recorded[k] != v]
    if not diffs and config is not None and info.get("config") is not None:
        old, new = _flat(info["config"]), _flat(_plain(config))
        diffs = [f"model config {k} {_shown(old.get(k))} (now {_shown(new.get(k))})"
                 for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if diffs:
            diffs[-1] += " (the data under the same path changed?)"
    if diffs:
        raise ValueError(
            f"{tc.out} holds a run started with other settings: {', '.join(diffs)}; resume it unchanged "
            f"(with the original values, see {Path(tc.out) / 'args.json'}) or use a new --out"
        )
    return info


def _plain(obj):
    """``obj`` as it reads back from JSON (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(obj, default=str))


def _named(key: str) -> str:
    return key if key in NOT_OPTIONS or key.startswith("-") else f"--{key}"


def _shown(value) -> str:
    if value is None:
        return "unset"
    return value if isinstance(value, str) else json.dumps(value)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def model_config_record(cfg: ModelConfig) -> dict:
    """The model config as a checkpoint records it: without the version fields, which do not shape training."""
    d = cfg.to_dict()
    for k in ("radiofm_version", "format_version"):
        d.pop(k, None)
    return _plain(d)


class _StopRequests:
    """SIGINT / SIGTERM handlers that only note the signal, so the loop can stop at the end of a step.

    In one process a second signal stops at once (KeyboardInterrupt, no checkpoint: the last one
    stays); under torchrun repeats are ignored, since the launcher forwards the terminal's signal
    to processes that already received it. Installed only in the main thread (Python's rule), and
    not for a signal that is ignored (``nohup``, background jobs); the previous handlers come back on exit."""

    def __init__(self, force_on_repeat: bool):
        self.signum: int | None = None
        self._force = force_on_repeat
        self._previous: dict = {}

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(s) is not signal.SIG_IGN:  # what the shell made radiofm ignore stays ignored
                    self._previous[s] = signal.signal(s, self._note)
        return self

    def _note(self, signum, _frame) -> None:
        if self.signum is not None:
            if self._force:
                raise KeyboardInterrupt
            return
        self.signum = signum

    def __exit__(self, *_exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """One process per device under ``torchrun`` (NCCL on GPUs, gloo on CPUs); a plain process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return Dist(rank, world, local_rank, device)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs; on CPUs only with native bf16 (AVX512-BF16 / AMX): AVX2-only CPUs run it 3-4x slower."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "off":
        return None
    if amp == "bf16" or device.type == "cuda":
        return torch.bfloat16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else None


def step_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, epoch, 0x0DA7A)))


LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]
EpochHook = Callable[[torch.nn.Module, int], dict | None]


def train(model: torch.nn.Module, cfg: ModelConfig, data: PreparedData, loss_fn: LossFn, tc: TrainConfig,
          on_epoch_end: EpochHook | None = None, settings: dict | None = None) -> Path | None:
    """Train ``model`` on ``data`` with ``loss_fn(model, x, y, generator) -> loss``; returns ``RUN/final``
    (None when ``tc.stop_after`` ended the run early).

    ``settings`` are the task's own settings that shape the weights (option name -> value: model, data,
    mask ratio, ...); with the loop's (``run_settings``) they are recorded in every checkpoint, and a
    resume with any of them changed is refused. Raises ``Interrupted`` after SIGINT / SIGTERM (with a
    checkpoint written) and ValueError at a non-finite loss (with nothing written)."""
    tc.validate()
    env = setup_distributed()
    if env.device.type == "cpu":
        torch.set_num_threads(tc.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    out = Path(tc.out)
    global_batch = tc.batch_size * tc.accum_steps * env.world
    steps_per_epoch = len(data) // global_batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(data)} training items cannot fill one global batch of {global_batch} "
            f"(batch {tc.batch_size} x accumulation {tc.accum_steps} x {env.world} process(es)); lower --batch"
        )
    total_steps = steps_per_epoch * tc.epochs
    warmup_steps = round(tc.warmup_epochs * steps_per_epoch)
    peak_lr = tc.lr if tc.lr is not None else tc.blr * global_batch / 256
    ckpt_every = tc.ckpt_every or steps_per_epoch
    amp_dtype = autocast_dtype(tc.amp, env.device)
    amp_name = str(amp_dtype).replace("torch.", "") if amp_dtype else "off"
    plan = dict(items=len(data), global_batch=global_batch, world=env.world, epochs=tc.epochs,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps, seed=tc.seed)
    settings = _plain({**(settings or {}), **run_settings(tc), "--amp": amp_name, "processes": env.world,
                       "training items": len(data)})
    config = model_config_record(cfg)

    model.to(env.device).train()
    optimizer = make_optimizer(model, peak_lr, tc.weight_decay, tc.layer_decay)
    step, elapsed, window, last_saved = 0, 0.0, None, None
    info = check_resume(tc, settings, config)
    if info is not None:
        if info["plan"] != plan:
            raise ValueError(f"{out} holds a run with {info['plan']}, not {plan}: resume it unchanged or use a new --out")
        load_state(out / "last", model, optimizer)
        step, elapsed, window, last_saved = info["step"], info["elapsed_s"], info.get("window"), info["step"]
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "args.json", {**_jsonable(asdict(tc)), "plan": plan, "settings": settings,
                                              "peak_lr": peak_lr, "amp": amp_name})
        _trim_metrics(out / METRICS_FILE, step)
    net = torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model
    masks = torch.Generator(env.device)
    # The log window: loss sum and steps since the last metrics line, and the training time (elapsed, which
    # leaves out logging, reconstruction PNGs and checkpoints) at its start. A checkpoint carries it.
    window_loss, window_steps, window_from = (window["loss"], window["steps"], window["from_elapsed_s"]) if window \
        else (0.0, 0, elapsed)

    def checkpoint(at_step: int) -> None:
        if env.main:
            window_now = {"loss": window_loss, "steps": window_steps, "from_elapsed_s": window_from}
            save_state(out / "last", model, optimizer, {"step": at_step, "elapsed_s": elapsed, "plan": plan,
                                                        "settings": settings, "config": config,
                                                        "window": window_now})

    interrupted = None
    progress = _progress(tc.progress and env.main)
    with _StopRequests(force_on_repeat=env.world == 1) as stop, progress:
        bar = progress.add_task("train", total=total_steps, completed=step, info="")
        while step < total_steps:
            if tc.stop_after is not None and step >= tc.stop_after:
                return None
            t0 = time.perf_counter()
            epoch, position = divmod(step, steps_per_epoch)
            batch = epoch_order(len(data), tc.seed, epoch)[position * global_batch : (position + 1) * global_batch]
            mine = batch[env.rank :: env.world]  # this process's share of the global batch
            lr = lr_at(step, total_steps, warmup_steps, peak_lr, tc.min_lr)
            set_lr(optimizer, lr)
            step_loss = torch.zeros((), device=env.device)
            for micro in range(tc.accum_steps):
                x, y = data.batch(mine[micro * tc.batch_size : (micro + 1) * tc.batch_size])
                x = x.to(env.device, non_blocking=True)
                y = None if y is None else y.to(env.device, non_blocking=True)
                seed = step_seed(tc.seed, step, env.rank, micro)
                torch.manual_seed(seed)
                masks.manual_seed(seed + 1)
                # Gradients are all-reduced once per optimizer step, on the last micro-step only.
                sync = micro == tc.accum_steps - 1 or env.world == 1
                with (nullcontext() if sync else net.no_sync()):
                    with torch.autocast(env.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                        loss = loss_fn(net, x, y, masks) / tc.accum_steps
                    loss.backward()
                step_loss += loss.detach()
            # One all-reduce per step gives every process the same mean loss and the same stop request,
            # so all of them stop (non-finite loss, signal) at the same step.
            asked = torch.tensor(float(stop.signum or 0), device=env.device)
            shared = torch.stack([step_loss.float(), asked])
            if env.world > 1:
                dist.all_reduce(shared)
            step_loss_value = float(shared[0] / env.world)
            stop_asked = float(shared[1]) > 0
            if not math.isfinite(step_loss_value):
                saved = (f"the last checkpoint ({out / 'last'}, step {last_saved}) is kept" if last_saved is not None
                         else "no checkpoint had been written yet")
                raise ValueError(
                    f"the loss is {step_loss_value} at step {step + 1} (epoch {epoch + 1} of {tc.epochs}): training "
                    f"stopped before that step's update and final/ was not written; {saved}. Lower the learning "
                    f"rate (--blr / --lr) or check the data for NaN or infinite values, then start again with a new "
                    f"--out (a resume must keep the original settings)"
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed += time.perf_counter() - t0
            window_loss += step_loss_value
            window_steps += 1
            if step % tc.log_every == 0 or step % steps_per_epoch == 0 or step == total_steps:
                rate = window_steps * global_batch / max(elapsed - window_from, 1e-9)
                record = dict(step=step, epoch=round(step / steps_per_epoch, 4), loss=window_loss / window_steps,
                              lr=lr, samples_per_s=round(rate, 2), elapsed_s=round(elapsed, 2))
                _log(out, record, env.main)
                progress.update(bar, info=f"epoch {epoch + 1}/{tc.epochs}  loss {record['loss']:.4f}  "
                                          f"lr {lr:.2e}  {rate:.1f} samples/s")
                window_loss, window_steps, window_from = 0.0, 0, elapsed
            progress.update(bar, completed=step)
            if step % steps_per_epoch == 0 and on_epoch_end is not None and env.main:
                model.eval()
                with torch.no_grad():
                    extra = on_epoch_end(model, step // steps_per_epoch)
                model.train()
                if extra:
                    _log(out, dict(step=step, epoch=step // steps_per_epoch, **extra), True)
            # One process decides alone only when it is alone; several follow the all-reduced request.
            # A request during the last step lets the run finish: only final/ is left to write.
            stopping = (stop.signum is not None if env.world == 1 else stop_asked) and step < total_steps
            if step % ckpt_every == 0 or step == total_steps or stopping:
                checkpoint(step)
                last_saved = step
            if stopping:
                interrupted = stop.signum or signal.SIGTERM
                break
    if interrupted is not None:
        if env.world > 1:
            dist.barrier()  # every process waits for rank 0's checkpoint before it exits
        if env.main:
            print(f"interrupted at step {step} (epoch {round(step / steps_per_epoch, 2)}); "
                  f"{out / 'last'} holds it: run the same command to resume", file=sys.stderr, flush=True)
        raise Interrupted(int(interrupted), step, step / steps_per_epoch)
    final = out / "final"
    if env.main:
        save_model(model, final, cfg)
        write_json_atomic(final / "training.json", {"steps": total_steps, "train_time_s": round(elapsed, 1), **plan})
    if env.world > 1:
        dist.barrier()
    return final


def _log(out: Path, record: dict, main: bool) -> None:
    if main:
        # Strict JSON: a non-finite number (which a bare NaN would be) is written as null.
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(out / METRICS_FILE, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop the records an interrupted run logged after its last checkpoint.

    The checkpoint is the source of truth: a partial last line (what a full disk or a power loss leaves)
    is dropped with a note. Any other damage is an error naming the file and the line."""
    if not path.is_file():
        return
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    kept, partial = [], None
    for i, (n, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not _is_int(record.get("step")):
                raise ValueError("a record without a step")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            if i == len(numbered) - 1:
                partial = n
                break
            raise ValueError(
                f"{path}, line {n}: not a metrics record ({e}); repair or delete that line (or the file) and run "
                f"again: the checkpoint in last/ is what resumes"
            ) from None
        if record["step"] <= step:
            kept.append(line)
    if partial is not None:
        print(f"note: {path}: dropped the partial last line {partial} (an interrupted write); the checkpoint "
              f"at step {step} is what resumes", file=sys.stderr, flush=True)
    if partial is not None or len(kept) != len(numbered) or not text.endswith("\n"):
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def _jsonable(d: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)
