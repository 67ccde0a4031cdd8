"""Bringing a campaign's published data up to date with its items, before a round: on a cluster the
embeddings and the index are published folders (the pipelines' ``embeddings_uri`` and
``index_uri``), which a data version that grew would otherwise not match.

New items are embedded (Beam) and appended to the published store, whose rows keep their row ids
(:func:`seals_al.embed.pipeline.ensure_embeddings`); the new rows are added to the published index
(a single-file index: its IVF quantizer as trained; any other is built again over the grown U with
the factory, layout and search parameters it was built with). Unchanged data costs the manifest
checks alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seals_al.campaign.stages import Campaign
from seals_al.errors import SealsError


@dataclass(frozen=True)
class Refreshed:
    """What one refresh did."""

    embedded: int  # items that went through the model now (0: the store was up to date)
    appended: bool  # the store was appended to (not embedded whole)
    store_rows: int  # rows of the store after it
    index_updated: bool  # the index was extended or built again over U
    index_rows: int | None  # rows of the published index (None: the campaign has none)
    index_extended: bool = False  # the new rows were added to it (not built again)

    def lines(self) -> list[str]:
        if not self.store_rows:
            return ["no published embeddings: each round prepares the data on its machine"]
        if not self.embedded and not self.index_updated:
            return [f"data up to date: {self.store_rows:,} rows embedded"]
        how = "appended to the store" if self.appended else "embedded whole"
        out = [f"{self.embedded:,} item(s) {how}: {self.store_rows:,} rows"]
        if self.index_updated:
            how = "the new rows added to the index" if self.index_extended else "index built again over U"
            out.append(f"{how}: {self.index_rows:,} rows")
        return out


def refresh_data(campaign: Campaign, beam_args: Sequence[str] = ()) -> Refreshed:
    """Embed the campaign's new items into its published store and add them to its published
    index (or build it again over the grown U); a campaign whose data is not published (embedded
    on this machine) is prepared by its round instead, and this does nothing.

    Args:
        campaign: the campaign (its ``data``, ``embeddings`` and ``index`` settings).
        beam_args: Beam pipeline options for the embedding.

    Returns:
        What was embedded, and what became of the index.

    Raises:
        SealsError: the embeddings setting names a file (.npy, .parquet) rather than a store, or
            the index was not built by seals-al build-index.
    """
    if beam_args:  # an option Beam does not know is an error before any work, with or without any
        from seals_al.beam_options import beam_options

        beam_options(beam_args)
    config = campaign.config.dataset
    if not config.embeddings:
        return Refreshed(0, False, 0, False, None)
    with campaign.leased():  # never while a stage of this campaign reads the store or the index
        return _refresh(campaign, beam_args)


def _refresh(campaign: Campaign, beam_args: Sequence[str]) -> Refreshed:
    from seals_al.dataset import index_over_u
    from seals_al.embed.pipeline import ensure_embeddings
    from seals_al.index.directory import INDEX_FORMAT
    from seals_al.published import read_manifest_at

    config = campaign.config.dataset
    if config.embeddings.rstrip("/").endswith((".npy", ".parquet")):
        raise SealsError(
            f"{config.embeddings}: precomputed embeddings in a file are not refreshed; embed the "
            "items with seals-al embed into a store directory to let them grow"
        )
    store, reused = ensure_embeddings(
        config.data,
        config.embeddings,
        id_column=config.id_column,
        text_column=config.text_column,
        beam_args=beam_args,
    )
    extra = store.get("extra", {})
    embedded = 0 if reused else int(extra.get("embedded", store["count"]))
    updated, extended, index_rows = False, False, None
    if config.index:
        built = read_manifest_at(config.index, INDEX_FORMAT)
        if built is None:
            raise SealsError(f"{config.index}: not an index directory (no manifest.json)")
        source = built["source"]
        manifest, kept = index_over_u(
            config.data,
            config.embeddings,
            config.index,
            source["factory"],
            id_column=config.id_column,
            split_column=config.split_column,
            eval_split=config.eval_split,
            layout=source["layout"],
            search_params=source["search_params"],
        )
        updated, index_rows = not kept, int(manifest["ntotal"])
        extended = updated and "grown_from" in manifest
    appended = "appended_to" in extra and not reused
    return Refreshed(embedded, appended, int(store["count"]), updated, index_rows, extended)
