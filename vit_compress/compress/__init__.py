"""Compression transforms on parameters: pruning, shrink, quantization, low-rank."""
