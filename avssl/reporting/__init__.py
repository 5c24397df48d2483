"""Reporting of a run for people: the cluster browser (a self-contained HTML site) and training plots."""
