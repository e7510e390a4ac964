"""vmr: multimodal sequential recommendation on frozen pretrained features."""

__version__ = "0.1.0"
