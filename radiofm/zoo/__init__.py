"""Bundled models: each sub-folder is a model folder (config.json + model.safetensors)."""
