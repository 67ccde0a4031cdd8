"""Beam pipeline options as the command line passes them on, shared by every Beam pipeline here
(embed, score): strict (an option no Beam options class knows is an error, not silently dropped)
and in-process by default (the FnApiRunner, never the runner that downloads Prism)."""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from seals_al.errors import SealsError


def beam_options(argv: Sequence[str]) -> PipelineOptions:
    """Parse Beam options; an unknown one is an error naming it; the runner defaults to the
    in-process FnApiRunner."""
    options = PipelineOptions(list(argv))
    unknown = sorted(
        set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    )
    if unknown:
        raise SealsError(f"unknown option(s): {', '.join('--' + u for u in unknown)}")
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "FnApiRunner"
    return options
