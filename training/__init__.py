"""imgclass training: Keras CNNs, evaluation and export into model bundles (offline, TensorFlow)."""

import os

# Quiet TensorFlow's C++ logging before it is imported anywhere in the package.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
