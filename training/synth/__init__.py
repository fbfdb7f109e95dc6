"""Synthetic datasets: seeded, deterministic, written to disk one sample per file.

``synthesize(task, n, out, seed)`` writes samples 0..n-1 of a task into ``out`` with a
``dataset.json`` manifest. Sample i depends only on (seed, i), so the worker count never changes
the data and a re-run writes only the samples that are missing.
"""

from __future__ import annotations

import dataclasses
import importlib
from concurrent.futures import ProcessPoolExecutor, as_completed
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


def _write(task: str, out: str, i: int, seed: int) -> int:
    task_module(task).write_sample(Path(out), i, seed, PreprocessConfig())
    return i


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
            with ProcessPoolExecutor(workers) as pool:
                for future in as_completed([pool.submit(_write, task, str(out), i, seed) for i in todo]):
                    future.result()
                    bar.advance(job)
    return len(todo)
