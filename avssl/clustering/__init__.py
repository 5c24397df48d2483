"""The math of assignments: Sinkhorn-Knopp, k-means, modality alignment, prototypes."""
