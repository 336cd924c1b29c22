"""Benchmarks that print tables (README "Performance baseline", docs/performance.md)."""

# The onnxruntime telemetry opt-out (app/__init__.py) before a benchmark loads onnxruntime.
import app  # noqa: F401
