"""SEALS: similarity search for efficient active learning and search of rare concepts.

The core package holds all logic (embeddings, faiss index, candidate pool, strategies, training,
the round engine, campaigns, simulation, reports) and never imports kfp; Kubeflow components are
thin wrappers over it. The layers and where each concept lives: docs/ARCHITECTURE.md.
"""

from seals_al.version import __version__

__all__ = ["__version__"]
