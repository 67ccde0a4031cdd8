"""embed: items (CSV, JSONL or Parquet; local or gs://) to an embeddings store, with Apache Beam."""

from typing import NamedTuple

from kfp import dsl

from components._base import seals_component


@seals_component
def embed(
    items_uri: str,
    embeddings_uri: str,
    store: dsl.Output[dsl.Artifact],
    id_column: str = "id",
    text_column: str = "text",
    modality: str = "text",
    beam_args: list = [],  # noqa: B006 (KFP reads the default from the signature)
    workspace: str = "",
) -> NamedTuple("Outputs", [("embeddings_uri", str), ("count", int), ("skipped", bool)]):
    """Embed items into an embeddings store with the Apache Beam pipeline (`seals_al.embed.pipeline`):
    all-MiniLM-L6-v2 for text, EfficientNet-Lite0 for image URIs, RunInference with batching,
    L2-normalized float32 shards, an id table and a manifest. Items that fail go to `dead_letter.jsonl`
    with the reason; the counts are in the manifest. If the store at `embeddings_uri` was made from the
    same file (sha256), columns, modality and model, nothing is recomputed.

    Args:
        items_uri: the item table.
        embeddings_uri: where the store is published (a directory).
        store: an artifact describing the store (its manifest); the vectors stay at embeddings_uri.
        id_column: the external id column.
        text_column: the text column, or the image URI column for images.
        modality: text or image.
        beam_args: Beam pipeline options, e.g. ["--runner=DataflowRunner", "--project=..."].
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        embeddings_uri, the number of vectors, and whether an existing store was reused.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    import json
    from collections import namedtuple

    from seals_al.embed.pipeline import ensure_embeddings

    manifest, skipped = ensure_embeddings(
        items_uri,
        embeddings_uri,
        id_column=id_column,
        text_column=text_column,
        modality=modality,
        beam_args=[str(a) for a in beam_args],
    )
    with open(store.path, "w") as f:
        json.dump(manifest, f, indent=2)
    store.metadata.update({"uri": embeddings_uri, "count": manifest["count"], "dim": manifest["dim"]})
    outputs = namedtuple("Outputs", ["embeddings_uri", "count", "skipped"])
    return outputs(embeddings_uri, manifest["count"], skipped)
