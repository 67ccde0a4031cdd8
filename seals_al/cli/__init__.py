"""The ``seals-al`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from rich.console import Console

from seals_al.cli.campaign import add_campaign_commands
from seals_al.cli.data import add_build_index, add_embed
from seals_al.cli.labels import add_label_commands
from seals_al.cli.simulate import add_compare, add_simulate
from seals_al.errors import EXIT_USAGE, SealsError
from seals_al.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seals-al", description=__doc__)
    parser.add_argument("--version", action="version", version=f"seals-al {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_simulate(sub)
    add_compare(sub)
    add_campaign_commands(sub)
    add_label_commands(sub)
    add_build_index(sub)
    add_embed(sub)
    for plugin in entry_points(group="seals_al.commands"):  # e.g. `compile`, from pipelines/
        plugin.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Only `embed`, `score`, `refresh` and `build-index` take options they do not declare: they are
    # Beam's, and the pipeline rejects any that no Beam options class knows. Every other command
    # parses strictly.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("embed", "score", "refresh", "build-index"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    console = Console(soft_wrap=True)  # a long path or URL stays on one line, whole
    try:
        return args.handler(args, console)
    except SealsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
