"""imgclass training: Keras CNNs, evaluation and export into model bundles (offline, TensorFlow)."""

import os

# Quiet TensorFlow's C++ logging before it is imported anywhere in the package.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN kernels train the shipped CNNs 2-3x faster on CPU (measured here); the price is one
# start-up log line. Set TF_ENABLE_ONEDNN_OPTS=0 to turn them off (results then differ slightly).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# The onnxruntime telemetry opt-out (app/__init__.py) before any training module, whose
# third-party imports come first, loads onnxruntime.
import app  # noqa: F401
