"""SEALS: similarity search for efficient active learning and search of rare concepts.

The core package holds all logic (embeddings, faiss index, candidate pool, strategies, training,
the round engine, campaigns, simulation, reports) and never imports kfp; Kubeflow components are
thin wrappers over it. The layers and where each concept lives: docs/ARCHITECTURE.md.
"""

import logging

from seals_al.version import __version__


def _not_beams_bigquery_notice(record: logging.LogRecord) -> bool:
    """Beam warns on import that its BigQuery client libraries are missing (they are: this
    project reads object storage with google-cloud-storage and never BigQuery); that line alone is
    dropped, so a command's stderr holds only what it has to say."""
    return not record.getMessage().startswith("apitools not found, and bigquery client libraries")


logging.getLogger().addFilter(_not_beams_bigquery_notice)

__all__ = ["__version__"]
