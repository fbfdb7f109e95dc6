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
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from radiofm.checkpoint import save_model, write_json_atomic
from radiofm.config import ModelConfig

from .optim import lr_at, make_optimizer, set_lr
from .prepared import PreparedData
from .state import STATE_FILE, load_state, save_state

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
          on_epoch_end: EpochHook | None = None) -> Path | None:
    """Train ``model`` on ``data`` with ``loss_fn(model, x, y, generator) -> loss``; returns ``RUN/final``
    (None when ``tc.stop_after`` ended the run early)."""
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
    plan = dict(items=len(data), global_batch=global_batch, world=env.world, epochs=tc.epochs,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps, seed=tc.seed)

    model.to(env.device).train()
    optimizer = make_optimizer(model, peak_lr, tc.weight_decay, tc.layer_decay)
    step, elapsed = 0, 0.0
    if (out / "last" / STATE_FILE).is_file():
        info = load_state(out / "last", model, optimizer)
        if info["plan"] != plan:
            raise ValueError(f"{out} holds a run with {info['plan']}, not {plan}: resume it unchanged or use a new --out")
        step, elapsed = info["step"], info["elapsed_s"]
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "args.json", {**_jsonable(asdict(tc)), "plan": plan, "peak_lr": peak_lr,
                                              "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off"})
        _trim_metrics(out / METRICS_FILE, step)
    net = torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model
    masks = torch.Generator(env.device)

    def checkpoint(at_step: int) -> None:
        if env.main:
            save_state(out / "last", model, optimizer, {"step": at_step, "elapsed_s": elapsed, "plan": plan})

    progress = _progress(tc.progress and env.main)
    with progress:
        bar = progress.add_task("train", total=total_steps, completed=step, info="")
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
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
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed += time.perf_counter() - t0
            if env.world > 1:
                dist.all_reduce(step_loss)
                step_loss /= env.world
            window_loss += float(step_loss)
            window_steps += 1
            if step % tc.log_every == 0 or step % steps_per_epoch == 0 or step == total_steps:
                rate = window_steps * global_batch / (time.perf_counter() - window_start)
                record = dict(step=step, epoch=round(step / steps_per_epoch, 4), loss=window_loss / window_steps,
                              lr=lr, samples_per_s=round(rate, 2), elapsed_s=round(elapsed, 2))
                _log(out, record, env.main)
                progress.update(bar, info=f"epoch {epoch + 1}/{tc.epochs}  loss {record['loss']:.4f}  "
                                          f"lr {lr:.2e}  {rate:.1f} samples/s")
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            progress.update(bar, completed=step)
            if step % steps_per_epoch == 0 and on_epoch_end is not None and env.main:
                model.eval()
                with torch.no_grad():
                    extra = on_epoch_end(model, step // steps_per_epoch)
                model.train()
                if extra:
                    _log(out, dict(step=step, epoch=step // steps_per_epoch, **extra), True)
            if step % ckpt_every == 0 or step == total_steps:
                checkpoint(step)
    final = out / "final"
    if env.main:
        save_model(model, final, cfg)
        write_json_atomic(final / "training.json", {"steps": total_steps, "train_time_s": round(elapsed, 1), **plan})
    if env.world > 1:
        dist.barrier()
    return final


def _log(out: Path, record: dict, main: bool) -> None:
    if main:
        with open(out / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop the records an interrupted run logged after its last checkpoint."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _jsonable(d: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)
