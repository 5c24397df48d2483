"""Evaluation: clustering metrics, retrieval, probes and the tables that report them."""
