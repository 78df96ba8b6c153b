"""uvlm: controlled, reproducible experiments on unified vision-language models."""

__version__ = "0.1.0"
