"""`seals-al compile`: write every pipeline's compiled YAML.

This module is a plugin of the seals-al command line (entry point group ``seals_al.commands``),
so the core package never imports kfp; kfp is imported only when the command runs.
"""

import argparse
from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "compiled"


def pipelines() -> dict:
    """File name -> pipeline, each at its default number of rounds."""
    from pipelines.looped import seals_looped
    from pipelines.many_concepts import seals_many_concepts
    from pipelines.one_round import seals_one_round
    from pipelines.simulation import seals_simulation

    return {
        "seals_looped.yaml": seals_looped,
        "seals_simulation.yaml": seals_simulation,
        "seals_one_round.yaml": seals_one_round,
        "seals_many_concepts.yaml": seals_many_concepts,
    }


def compile_all(out_dir: str | Path = COMPILED) -> list[Path]:
    """Compile every pipeline into ``out_dir``; returns the files written."""
    from kfp import compiler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in pipelines().items():
        compiler.Compiler().compile(pipeline, str(out / name))
        written.append(out / name)
    return written


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="write the compiled YAML of every pipeline (needs kfp)")
    p.add_argument("--out", default=str(COMPILED), help="output folder")
    p.set_defaults(handler=_compile)


def _compile(args: argparse.Namespace, console) -> int:
    for path in compile_all(args.out):
        console.print(f"wrote {path}", highlight=False)
    return 0
