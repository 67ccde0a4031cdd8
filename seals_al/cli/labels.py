"""The labeling commands: the tool (push, pull, progress, subscribe), the terminal labeler, the
wait, the listener, and the labeled set as a file."""

from __future__ import annotations

import argparse
import signal

from rich.console import Console

from seals_al.errors import SealsError
from seals_al.settings import (
    WAIT_POLL_SECONDS,
    WAIT_TIMEOUT_SECONDS,
)


def add_label_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="label the open batch in the terminal (y / n / skip / undo / quit)")
    p.add_argument("campaign")
    p.set_defaults(handler=_label)
    p = sub.add_parser(
        "wait",
        help="wait until labels arrive: in the open round's inbox or, with a labeling tool, as its "
        "answers to the batch (exit 2 on timeout)",
    )
    p.add_argument("campaign")
    p.add_argument("--poll-seconds", type=float, default=WAIT_POLL_SECONDS)
    p.add_argument("--timeout-seconds", type=float, default=WAIT_TIMEOUT_SECONDS)
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="with a labeling tool: end the wait once this fraction of the batch is answered",
    )
    p.set_defaults(handler=_wait)
    tool = sub.add_parser(
        "label-tool",
        aliases=["labelstudio"],  # its name when Label Studio was the only tool
        help="push the open batch to the campaign's labeling tool, pull its answers into the inbox, "
        "or show how far people are",
        description="The campaign's label_tool (label_studio, terminal, oracle), its URL from "
        "$LABEL_TOOL_URL or the tool's own variable (e.g. $LABEL_STUDIO_URL) or label_tool_url, its "
        "key from $LABEL_TOOL_API_KEY or the tool's own variable.",
    )
    actions = tool.add_subparsers(dest="action", required=True)
    for action, text in (
        ("push", "make the open batch available to label (Label Studio: the project and tasks; idempotent)"),
        ("pull", "write the answers given so far into the inbox (idempotent); then `seals-al round`"),
        ("progress", "how many items of the open batch are answered"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("campaign")
        p.add_argument(
            "--if-configured",
            action="store_true",
            help="exit 0 with a note when the campaign has no labeling tool (pipelines, scripts)",
        )
        p.set_defaults(handler=_label_tool)
    p = actions.add_parser(
        "subscribe",
        help="have the tool send its annotation events to `seals-al listen` (Label Studio: a webhook)",
        description="Registers (or brings up to date) the tool's webhook to URL, which carries the "
        "shared secret from $SEALS_LISTEN_SECRET. `seals-al listen --public-url` does it itself.",
    )
    p.add_argument("campaign")
    p.add_argument("url", help="the listener's hook for this campaign (`seals-al listen` prints it)")
    p.set_defaults(handler=_subscribe)
    _add_listen(sub)
    p = sub.add_parser(
        "labeled",
        help="write the labeled set with who gave each label, when and from which file or tool",
    )
    p.add_argument("campaign")
    p.add_argument("--out", required=True, help="the file to write (.csv or .jsonl; local or gs://)")
    p.set_defaults(handler=_labeled)
    p = sub.add_parser(
        "search",
        help="the items nearest to words, in the campaign's index and model: where a new concept starts",
        description="Embeds the texts with the campaign's model, finds the nearest items of U in its "
        "index (each item once, at its best similarity) and shows them with whether each is labeled "
        "or out for labeling; --out writes them as a CSV to label (fill in label, delete the rows "
        "left unanswered, and drop it into the inbox).",
    )
    p.add_argument("campaign")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="one or more phrasings of the concept")
    p.add_argument("--k", type=int, default=20, help="how many items (default 20)")
    p.add_argument("--out", help="a CSV to write them to (local or gs://, outside the campaign)")
    p.set_defaults(handler=_search)


def _labeled(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labelformats.labeled_set import check_labeled_set_name, is_labeled_set, labeled_set_file
    from seals_al.storage import check_output_file, open_storage
    from seals_al.storage.uris import split_uri

    check_labeled_set_name(args.out)
    campaign = Campaign(args.campaign, progress=False)
    where = check_output_file(args.out, campaign.storage.uri, "labeled set", is_labeled_set)
    labeled = campaign.state().labeled
    data = labeled_set_file(labeled.values(), args.out)
    parent, name = split_uri(args.out)
    open_storage(parent).write_bytes(name, data)
    console.print(f"{len(labeled):,} labeled item(s): {where}", highlight=False)
    return 0


def _wait(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labeltools.loop import wait_for_labels

    campaign = Campaign(args.campaign)
    files = wait_for_labels(campaign, args.poll_seconds, args.timeout_seconds, args.fraction)
    console.print(f"new label file(s): {', '.join(files)}", highlight=False)
    return 0


def _label_tool(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labeltools.registry import tool_of

    campaign = Campaign(args.campaign, progress=False)
    tool = tool_of(campaign)
    if tool is None:
        message = "no labeling tool: the campaign sets no label_tool (label files in the inbox only)"
        if not args.if_configured:
            raise SealsError(message)
        console.print(f"{message}; nothing to {args.action}", highlight=False)
        return 0
    if args.action == "progress":
        console.print(tool.progress().line(tool.title), highlight=False)
        return 0
    done = tool.push() if args.action == "push" else tool.pull()
    console.print(done.summary(), highlight=False)
    return 0


def _label(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labeltools.terminal import run_labeler

    run_labeler(Campaign(args.campaign, progress=False), console)
    return 0


def _subscribe(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labeltools.listen import SECRET_HEADER, secret_from_environment
    from seals_al.labeltools.registry import tool_of

    campaign = Campaign(args.campaign, progress=False)
    console.print(
        _subscribed(tool_of(campaign), campaign, args.url, {SECRET_HEADER: secret_from_environment()})
    )
    return 0


def _subscribed(tool, campaign, url: str, headers: dict[str, str]) -> str:
    if tool is None or not hasattr(tool, "subscribe"):
        what = "no labeling tool" if tool is None else f"{tool.title}, which sends no events"
        raise SealsError(f"{campaign.storage.uri}: the campaign has {what}; nothing to subscribe")
    return tool.subscribe(url, headers)


def _add_listen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listen",
        help="an HTTP service that continues campaigns on the labeling tool's webhooks (no polling)",
        description="Receives the labeling tool's webhooks (POST /hooks/<id>, with the shared secret "
        "from $SEALS_LISTEN_SECRET in the X-Seals-Secret header) and, once a campaign's open batch "
        "is answered, continues it: runs the round here, starts a run of the one-round KFP "
        "pipeline, or resumes the campaign's suspended Argo workflow. Idempotent per round.",
    )
    p.add_argument("campaigns", nargs="+", metavar="CAMPAIGN")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--fraction", type=float, default=1.0, help="continue once this fraction is answered")
    p.add_argument("--then", choices=("here", "kfp", "argo"), default="here", help="how a campaign goes on")
    p.add_argument(
        "--public-url", help="the address the tool reaches this service at: subscribe there at start"
    )
    p.add_argument("--kfp-host", help="--then kfp: the KFP API (token in $KFP_TOKEN if it needs one)")
    p.add_argument("--kfp-pipeline-id", help="--then kfp: the uploaded one-round pipeline")
    p.add_argument("--kfp-version-id", help="--then kfp: its version")
    p.add_argument("--kfp-experiment-id", default="")
    p.add_argument("--service-account", default="", help="--then kfp: the runs' service account")
    p.add_argument("--argo-host", help="--then argo: the Argo Server (token in $ARGO_TOKEN)")
    p.add_argument("--argo-namespace", default="seals-al")
    p.set_defaults(handler=_listen)


def _continuation(args: argparse.Namespace):
    from seals_al.labeltools.events import ResumeArgo, RunHere, StartKfpRun

    if args.then == "here":
        return RunHere()
    if args.then == "kfp":
        missing = [
            f"--{n}"
            for n in ("kfp-host", "kfp-pipeline-id", "kfp-version-id")
            if not getattr(args, n.replace("-", "_"))
        ]
        if missing:
            raise SealsError(f"listen --then kfp: give {', '.join(missing)}")
        return StartKfpRun(
            args.kfp_host,
            args.kfp_pipeline_id,
            args.kfp_version_id,
            args.kfp_experiment_id,
            args.service_account,
        )
    if not args.argo_host:
        raise SealsError("listen --then argo: give --argo-host")
    return ResumeArgo(args.argo_host, args.argo_namespace)


def _listen(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labeltools.events import continue_if_answered
    from seals_al.labeltools.listen import SECRET_HEADER, Listener, secret_from_environment
    from seals_al.labeltools.registry import tool_of

    secret, how = secret_from_environment(), _continuation(args)
    campaigns = [
        Campaign(uri, progress=False) for uri in args.campaigns
    ]  # each checked now, not at the first event

    def look(uri: str) -> str:
        return continue_if_answered(Campaign(uri, progress=False), how, args.fraction)

    listener = Listener([c.storage.uri for c in campaigns], look, secret, args.host, args.port)
    for campaign in campaigns:
        hook = listener.hook_url(campaign.storage.uri, args.public_url)
        if args.public_url:
            line = _subscribed(tool_of(campaign), campaign, hook, {SECRET_HEADER: secret})
        else:
            line = f"{campaign.storage.uri}: hook {hook} (`seals-al label-tool subscribe` it)"
        console.print(line, highlight=False)
    console.print(f"listening at {listener.url}; continuing with: {how.name}", highlight=False)
    listener.catch_up()

    def stopped(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (a pod stopping) ends the service as Ctrl-C does

    signal.signal(signal.SIGTERM, stopped)
    try:
        listener.server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopping", highlight=False)
    finally:
        listener.stop()
    return 0


def _search(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from seals_al.campaign import Campaign
    from seals_al.search import is_search_file, label_file, nearest
    from seals_al.storage import check_output_file, open_storage
    from seals_al.storage.uris import split_uri

    campaign = Campaign(args.campaign, progress=False)
    if args.out:
        if not args.out.lower().endswith(".csv"):
            raise SealsError(f"{args.out}: write the items found as .csv")
        where = check_output_file(args.out, campaign.storage.uri, "search result", is_search_file)
    found = nearest(campaign, args.texts, args.k)
    table = Table("#", "similarity", "id", "now", "text", title=f"nearest to {' | '.join(args.texts)}")
    for n, row in enumerate(found, 1):
        now = (
            "in the batch"
            if row["in_batch"]
            else ""
            if row["labeled"] is None
            else f"labeled {row['labeled']}"
        )
        table.add_row(str(n), f"{row['similarity']:.3f}", row["id"], now, row["text"][:100])
    console.print(table)
    if args.out:
        parent, name = split_uri(args.out)
        open_storage(parent).write_bytes(name, label_file(found))
        console.print(f"{len(found)} item(s) to label: {where}", highlight=False)
    return 0
