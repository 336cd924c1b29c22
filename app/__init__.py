"""imgclass: a self-hosted image-classification and visual-similarity service."""

__version__ = "0.1.0"
