"""Label formats: what people's answers look like on disk, parsed and validated, with no network.

- :mod:`~seals_al.labelformats.answers`: an answer, a problem, a checked file (any format).
- :mod:`~seals_al.labelformats.files`: label files (CSV, JSONL, Label Studio JSON) checked against
  a campaign.
- :mod:`~seals_al.labelformats.labelstudio`: Label Studio's export and task formats.
- :mod:`~seals_al.labelformats.labeled_set`: the labeled set with its provenance, as a file.

This package sits below the campaign; the tools that move batches to people and answers back
(:mod:`seals_al.labeltools`) sit above it.
"""
