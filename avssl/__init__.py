"""avssl: audio-visual self-supervised learning by clustering, in JAX/Flax."""

__version__ = '0.1.0'
