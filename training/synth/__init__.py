"""Synthetic datasets: seeded, deterministic, written to disk one sample per file.

``synthesize(task, n, out, seed)`` writes samples 0..n-1 of a task into ``out`` with a
``dataset.json`` manifest. Sample i depends only on (seed, i), so the worker count never changes
the data and a re-run writes only the samples that are missing. Every file is written to a temporary
file and renamed, so a sample on disk is whole; an interrupted run (Ctrl-C, SIGTERM) keeps what it
wrote, and running it again continues.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from radiofm.config import PreprocessConfig

from .common import MANIFEST_FORMAT, read_manifest, write_manifest

TASKS = {"lte-nr": "lte_nr", "signals": "signals", "csi-har": "csi_har", "pretrain": "pretrain"}


def task_module(task: str) -> ModuleType:
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(f"{__name__}.{TASKS[task]}")


def manifest_for(task: str, n: int, seed: int) -> dict[str, Any]:
    from radiofm import __version__

    mod = task_module(task)
    params = mod.generator_params()
    return dict(
        format=MANIFEST_FORMAT, task=task, kind=mod.KIND, classes=list(mod.CLASSES), num_samples=n, seed=seed,
        layout="matlab-lte-nr" if task == "lte-nr" else "npz", sample_rate=params.get("sample_rate"),
        generator=params, preprocess=dataclasses.asdict(PreprocessConfig()), radiofm_version=__version__,
    )


class _Stop(BaseException):
    """Raised in a worker by SIGTERM while it writes a sample, so that the write removes its temporary file."""


_writing = False  # in a worker: inside _write, where SIGTERM raises _Stop rather than ending the process at once


def _worker_signal(signum, frame) -> None:
    if _writing:
        raise _Stop
    os._exit(128 + signum)


def _worker_init(parent: int) -> None:
    """Workers leave Ctrl-C to the main process (a terminal sends it to the whole process group) and end
    on SIGTERM, which the main process sends when it stops; on Linux they also get SIGTERM if the main
    process dies without a word (SIGKILL), so no worker outlives it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_signal)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the main process ended before the line above took effect
        os._exit(128 + signal.SIGTERM)


def _write(task: str, out: str, i: int, seed: int) -> int:
    global _writing
    _writing = True
    try:
        task_module(task).write_sample(Path(out), i, seed, PreprocessConfig())
    except _Stop:  # the temporary file is gone (atomic_write); nothing half-written is left
        os._exit(128 + signal.SIGTERM)
    finally:
        _writing = False
    return i


@contextmanager
def _signals_held():
    """Ignore SIGINT and SIGTERM for the moment it takes to end the workers (a second Ctrl-C must not
    interrupt that half-way); in the main thread only, where Python handles signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _end_workers(pool: ProcessPoolExecutor, grace_s: float = 3.0) -> None:
    """Cancel the queued samples and end the workers now: SIGTERM (each drops the sample it was writing,
    temporary file included), then SIGKILL for any still there after ``grace_s``."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
    if manager is not None:
        manager.join(1.0)


def missing(task: str, out: Path, n: int) -> list[int]:
    mod = task_module(task)
    return [i for i in range(n) if not all(p.exists() for p in mod.sample_paths(out, i))]


def synthesize(task: str, n: int, out: str | Path, seed: int = 0, workers: int = 1, progress: bool = True) -> int:
    """Write samples 0..n-1 of ``task`` into ``out``; returns how many were written (the rest existed)."""
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    manifest = manifest_for(task, n, seed)
    old = read_manifest(out)
    if old is not None:
        for key in ("task", "seed", "generator"):
            if old.get(key) != manifest[key]:
                raise ValueError(
                    f"{out} already holds a dataset with {key}={old.get(key)!r}, not {manifest[key]!r}; "
                    "use another --out folder, or the same task and seed to fill it in"
                )
        held = old.get("num_samples")
        if isinstance(held, int) and n < held:  # a smaller n would drop samples from the set, not make a new one
            raise ValueError(
                f"{out} holds a set of {held} {task} samples; --n {n} would leave {held - n} of them out of it: "
                f"use a new --out folder for a set of {n}, or --n {held} (or more) to complete it"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, manifest)
    todo = missing(task, out, n)
    if not todo:
        return 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"{task}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task(task, total=n, completed=n - len(todo))
        if workers <= 1:
            for i in todo:
                _write(task, str(out), i, seed)
                bar.advance(job)
        else:
            # On any way out but the end (Ctrl-C, SIGTERM turned into an exception, a failed sample) the
            # queued samples are cancelled and the workers ended at once, not waited for.
            pool = ProcessPoolExecutor(min(workers, len(todo)), initializer=_worker_init, initargs=(os.getpid(),))
            try:
                for future in as_completed([pool.submit(_write, task, str(out), i, seed) for i in todo]):
                    future.result()
                    bar.advance(job)
            except BaseException:
                with _signals_held():
                    _end_workers(pool)
                raise
            pool.shutdown()
    return len(todo)
