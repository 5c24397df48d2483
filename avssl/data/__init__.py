"""Datasets, host-side input pipelines and synthetic data."""
