"""radiofm: radio foundation models (ViT + Masked Spectrogram Modeling) for RAN and edge deployment.

``import radiofm`` stays light: torch, onnxruntime and tensorrt load only when an engine needs them.
"""

__version__ = "0.1.0"
