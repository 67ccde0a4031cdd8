"""Label tools: how a batch reaches people and how their answers come back into the inbox.

- :mod:`~seals_al.labeltools.base`: the protocol every tool speaks (push, pull, progress).
- :mod:`~seals_al.labeltools.registry`: the tools there are, and the campaign's (``label_tool``).
- :mod:`~seals_al.labeltools.loop`: the tool around a round (push, wait, pull before an ingest).
- :mod:`~seals_al.labeltools.events`: continuing a campaign when the tool says the batch is done.
- Tools: :mod:`~seals_al.labeltools.labelstudio` (Label Studio), :mod:`~seals_al.labeltools.terminal`
  (a person in a terminal), :mod:`~seals_al.labeltools.oracle` (the truth column, simulations).

This package sits above the campaign; the formats answers come back in (:mod:`seals_al.labelformats`)
sit below it.
"""
