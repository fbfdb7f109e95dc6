"""What an exported model says about itself, readable without torch.

An exported ONNX file carries its model's ``config.json`` and provenance in ``metadata_props``; the
folder's ``onnx.json`` records, per precision, what the export measured. The SDK reads both with
onnxruntime alone, so this module imports nothing heavier than numpy (through radiofm.engines) at import time.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from radiofm.engines import (  # noqa: F401  (the SDK's contract, re-exported)
    CALIB_METHODS,
    CALIB_PERCENTILE,
    DEFAULT_CALIB_METHOD,
    DEFAULT_INT8_SCOPE,
    INT8_SCOPES,
    INPUT_NAME,
    KEY_PADDING,
    ONNX_FILES,
    OUTPUT_NAMES,
    default_int8_scope,
)
from radiofm.engines import ONNX_CONFIG_KEY as KEY_CONFIG

PRECISIONS = ("fp32", "fp16", "int8")
REPORT_FILE = "onnx.json"

# metadata_props keys written into every exported file
KEY_VERSION = "radiofm_version"
KEY_SOURCE = "source_sha256"
KEY_PRECISION = "precision"
METADATA_KEYS = (KEY_CONFIG, KEY_VERSION, KEY_SOURCE, KEY_PRECISION)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The radiofm metadata of an exported ONNX file, read with onnxruntime only.

    Returns ``{"config": dict, "radiofm_version": str, "source_sha256": str, "precision": str}``.
    A missing file raises ``FileNotFoundError``; a corrupted or truncated one, or an ONNX file that
    radiofm did not export, raises ``ValueError`` naming the file.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only reading
    try:
        # Building a session parses and checks the whole graph, which is what catches truncation.
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise ValueError(
            f"{path} is not a readable ONNX model (corrupted or truncated?): {str(e).splitlines()[0]}. "
            f"Export it again with `radiofm export MODEL --out {path.parent}`."
        ) from None
    props = session.get_modelmeta().custom_metadata_map
    missing = [k for k in METADATA_KEYS if k not in props]
    if missing:
        raise ValueError(f"{path} has no radiofm metadata ({', '.join(missing)} missing): export it with `radiofm export`")
    try:
        config = json.loads(props[KEY_CONFIG])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata {KEY_CONFIG} is not valid JSON ({e})") from None
    return {
        "config": config,
        "radiofm_version": props[KEY_VERSION],
        "source_sha256": props[KEY_SOURCE],
        "precision": props[KEY_PRECISION],
    }


def read_report(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's ``onnx.json`` (an empty dict when there is none)."""
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and export again") from None
    if not isinstance(report, dict):
        raise ValueError(f"{path} should hold a JSON object keyed by precision")
    return report


def update_report(folder: str | os.PathLike, precision: str, entry: dict[str, Any]) -> Path:
    """Merge one precision's entry into ``onnx.json``, replacing the file in one rename."""
    from radiofm.checkpoint import write_json_atomic

    report = read_report(folder)
    report[precision] = entry
    path = Path(folder) / REPORT_FILE
    write_json_atomic(path, {p: report[p] for p in sorted(report, key=_precision_order)})
    return path


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _precision_order(precision: str) -> tuple[int, str]:
    return (PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS), precision)
