"""Readers for pretrained weight files in formats other than Keras' own (no PyTorch needed)."""

from training.weights.torch_checkpoint import CheckpointError, load_torch_state_dict

__all__ = ["CheckpointError", "load_torch_state_dict"]
