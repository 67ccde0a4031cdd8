"""Beam pipeline options as the command line passes them on, shared by every Beam pipeline here
(embed, the index, the graph, score): strict (an option no Beam options class knows is an error,
not silently dropped) and in-process by default (the FnApiRunner, never the runner that downloads
Prism); a pipeline whose workers may be elsewhere is refused paths only this machine sees."""

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


# Runners whose workers run on this machine, where its files are (unless an --environment_type
# puts them in containers: see :func:`runner_options`).
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
# Worker environments that see this machine's disk: the runner's own process or its subprocesses.
LOCAL_ENVIRONMENTS = ("", "BEAM_PYTHON", "EMBEDDED", "LOOPBACK", "PROCESS")


def runner_options(beam_args: Sequence[str], paths: dict[str, str]) -> PipelineOptions:
    """Beam options for a pipeline whose workers open ``paths`` ({what: path or URI}). Workers
    that may not see this machine's disk (a runner not in :data:`LOCAL_RUNNERS`, or any runner with
    workers in containers: ``--environment_type=DOCKER`` or ``EXTERNAL``) are refused, naming the
    path, while any of ``paths`` is on this machine's disk only."""
    from seals_al.storage.uris import is_remote

    options = beam_options(beam_args)
    local = {what: path for what, path in paths.items() if not is_remote(path)}
    if local and not workers_see_this_disk(options):
        what, path = next(iter(local.items()))
        name, environment = _runner_and_environment(options)
        where = f"--runner {name}" + (f" --environment_type={environment}" if environment else "")
        raise SealsError(
            f"{where}: {what}, {path}, is on this machine's disk, which its workers do not see; "
            f"give gs:// locations (or run on one of Beam's local runners, {', '.join(LOCAL_RUNNERS)}, "
            "with workers on this machine)"
        )
    return options


def workers_see_this_disk(options: PipelineOptions) -> bool:
    """Whether the workers run on this machine, outside containers: one of Beam's local runners
    (:data:`LOCAL_RUNNERS`) with its own process or subprocesses as the environment."""
    name, environment = _runner_and_environment(options)
    return name in LOCAL_RUNNERS and environment.upper() in LOCAL_ENVIRONMENTS


def _runner_and_environment(options: PipelineOptions) -> tuple[str, str]:
    """The runner's name and the worker environment type ("" when none is given)."""
    from apache_beam.options.pipeline_options import PortableOptions

    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name, str(options.view_as(PortableOptions).environment_type or "")
