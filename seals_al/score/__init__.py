"""Searching the corpus with a round's model (``seals-al score``, the score component).

- :mod:`.corpus`: a campaign's items scored, ranked and written (Parquet), with the counts at each
  operating threshold and the record of what was scored (for ``--new-only``);
- :mod:`.stored`: the classifier over stored embeddings, in this process (the default);
- :mod:`.pipeline`: the same as an Apache Beam pipeline (RunInference), when Beam options are given.

Importing this package, :mod:`.corpus` or :mod:`.stored` imports no Beam (4 s of a fresh process).
"""
