"""resnext-triton: NVIDIA's ResNeXt101-32x4d from PyTorch to Triton Inference Server and back.

This top-level package imports nothing heavy: the client side must never pull in torch.
"""

__version__ = "0.1.0"
