"""radiofm.export: validated ONNX exports (fp32, fp16, int8) and TensorRT engines.

Only the metadata reader is imported here, so an application reading an exported file's metadata
never loads torch: ``radiofm.export.onnx`` (export, needs torch) and ``radiofm.export.tensorrt``
(engines) are imported explicitly by whoever builds.
"""

from .metadata import ONNX_FILES, PRECISIONS, REPORT_FILE, read_onnx_metadata, read_report

__all__ = ["ONNX_FILES", "PRECISIONS", "REPORT_FILE", "read_onnx_metadata", "read_report"]
