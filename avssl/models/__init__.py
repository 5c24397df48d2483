"""Flax encoders and heads."""
