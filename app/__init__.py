"""imgclass: a self-hosted image-classification and visual-similarity service."""

import os

__version__ = "0.1.0"

# onnxruntime >= 1.32 collects usage telemetry on Linux too: a device id and an ever-growing
# event database under $HOME/.cache/Microsoft, queued for upload to Microsoft. A self-hosted,
# possibly air-gapped service sends nothing, so this opts out unless the operator set the
# variable. onnxruntime reads it when it is imported, so it is set here, before any module of
# the package (or training/ and bench/, which import this package first) loads it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
