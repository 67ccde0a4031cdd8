"""`seals-al compile`: write every pipeline's compiled YAML.

This module is a plugin of the seals-al command line (entry point group ``seals_al.commands``),
so the core package never imports kfp; kfp is imported only when the command runs.
"""

import argparse
import shlex
from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "compiled"


def pipelines(cluster=None) -> dict:
    """File name -> pipeline, each at its default number of rounds, with these cluster settings
    (default: :data:`pipelines._cluster.DEFAULT`)."""
    from pipelines._cluster import DEFAULT
    from pipelines.looped import make_looped
    from pipelines.many_concepts import make_many_concepts
    from pipelines.one_round import make_one_round
    from pipelines.simulation import make_simulation

    cluster = cluster or DEFAULT
    return {
        "seals_looped.yaml": make_looped(cluster=cluster),
        "seals_simulation.yaml": make_simulation(cluster=cluster),
        "seals_one_round.yaml": make_one_round(cluster),
        "seals_many_concepts.yaml": make_many_concepts(cluster=cluster),
    }


def compile_all(out_dir: str | Path = COMPILED, cluster=None) -> list[Path]:
    """Compile every pipeline into ``out_dir``; returns the files written."""
    from kfp import compiler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in pipelines(cluster).items():
        compiler.Compiler().compile(pipeline, str(out / name))
        written.append(out / name)
    return written


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="write the compiled YAML of every pipeline (needs kfp)")
    p.add_argument("--out", default=str(COMPILED), help="output folder")
    p.add_argument(
        "--workspace-size",
        default="",
        help='a shared cache volume for each run (ReadWriteMany), e.g. 20Gi; "" (default) for none: '
        "tasks read object storage by range",
    )
    p.add_argument(
        "--storage-class", default="", help="the workspace's storage class (default: the cluster's)"
    )
    p.add_argument(
        "--resources",
        action="append",
        default=[],
        metavar="COMPONENT=CPU,MEMORY[,CPU_LIMIT,MEMORY_LIMIT]",
        help="a component's requests (and limits), e.g. select_round=4,16Gi; repeatable",
    )
    p.add_argument("--retries", type=int, default=2, help="retries of each campaign step")
    p.add_argument(
        "--label-tool-secret",
        "--label-studio-secret",  # its name when Label Studio was the only tool
        dest="label_tool_secret",
        default="label-tool",
        help="the Kubernetes Secret (keys tool, url, api-key; each optional) the labeling tool steps "
        'read; "" for no labeling tool step',
    )
    p.add_argument(
        "--beam-args",
        dest="cluster_beam_args",  # not beam_args: the command line's own Beam options go there
        default="",
        metavar='"--runner=DataflowRunner --project=P ..."',
        help="Beam options for embed, the neighbour graph (built by build_index) and score, as one "
        'string (write --beam-args="..."); "" (default): each runs in its own pod',
    )
    p.set_defaults(handler=_compile)


def _compile(args: argparse.Namespace, console) -> int:
    from pipelines._cluster import Cluster
    from seals_al.errors import SealsError

    overrides = {}
    for text in args.resources:
        name, sep, value = text.partition("=")
        if not sep:
            raise SealsError(f"--resources {text!r}: expected COMPONENT=CPU,MEMORY")
        overrides[name] = value
    beam_args = tuple(shlex.split(args.cluster_beam_args))
    if beam_args:
        from seals_al.beam_options import beam_options

        try:
            beam_options(beam_args)  # an unknown option fails now, not in a pod of every run
        except SealsError as e:
            raise SealsError(f"--beam-args: {e}") from e
    try:
        cluster = Cluster(
            args.workspace_size,
            args.storage_class,
            retries=args.retries,
            label_tool_secret=args.label_tool_secret,
            beam_args=beam_args,
        )
        cluster = cluster.with_resources(overrides)
    except ValueError as e:
        raise SealsError(f"--resources: {e}") from e
    for path in compile_all(args.out, cluster):
        console.print(f"wrote {path}", highlight=False)
    return 0
