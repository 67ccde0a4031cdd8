"""report: the round's metrics, curves and report as artifacts the pipeline UI renders."""

from kfp import dsl

from components._base import seals_component


@seals_component
def report(
    campaign_uri: str,
    metrics: dsl.Output[dsl.Metrics],
    curves: dsl.Output[dsl.ClassificationMetrics],
    html_report: dsl.Output[dsl.HTML],
    summary: dsl.Output[dsl.Markdown],
    target_metric: str = "",
    target_value: float = 1.0,
    workspace: str = "",
) -> bool:
    """The round's artifacts for the pipeline UI, and whether to continue: a Metrics artifact (labeled,
    positives, recall when known, average precision, pool size and fraction, selection seconds, scored,
    batch), ClassificationMetrics (ROC curve and confusion matrix on the evaluation split), an HTML
    report (plots of the campaign so far, the batch with scores) and a Markdown summary (where the batch
    is, where labels go, what happens next).

    Args:
        campaign_uri: the campaign.
        metrics: labeled, positives, recall (when truth is known), AP, pool size and fraction,
            selection seconds, scored, batch.
        curves: ROC and confusion matrix on the evaluation split (when truth is known).
        html_report: plots of the campaign so far and the batch with its scores.
        summary: a Markdown summary with where the batch is and where labels go.
        target_metric: stop once this metric (e.g. average_precision) reaches target_value.
        target_value: see target_metric.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        Whether to keep going: budget left, pool not exhausted, target not reached (the reason
        is printed and in the summary). One return value, not a NamedTuple: kfp.local does not
        resolve dsl.If conditions on NamedTuple fields.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from seals_al.campaign import Campaign
    from seals_al.report import round_report

    result = round_report(Campaign(campaign_uri), target_metric, target_value)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    if result.classification is not None:
        c = result.classification
        curves.log_roc_curve(c["fpr"], c["tpr"], c["thresholds"])
        curves.log_confusion_matrix(c["categories"], c["confusion_matrix"])
    with open(html_report.path, "w") as f:
        f.write(result.html)
    with open(summary.path, "w") as f:
        f.write(result.markdown)
    print(f"round {result.round}: {result.reason}")
    return result.keep_going
