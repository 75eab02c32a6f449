"""vit_compress: train Vision Transformers and make them smaller and faster (JAX/Flax)."""

__version__ = '0.1.0'
