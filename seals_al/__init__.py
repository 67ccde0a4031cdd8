"""SEALS: similarity search for efficient active learning and search of rare concepts.

The core package holds all logic (embeddings, faiss index, candidate pool, strategies, training,
simulation, reports) and never imports kfp; Kubeflow components are thin wrappers over it.
"""

from seals_al.version import __version__

__all__ = ["__version__"]
