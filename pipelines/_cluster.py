"""What a pipeline asks of the cluster, fixed when it is compiled: CPU and memory per component,
retries, the Kubernetes Secret the labeling tool steps read its name, URL and API key from, and,
when asked for, a run's workspace (a volume every task of one run shares as its cache).

By default there is no workspace: tasks share nothing but object storage and read it by range
(docs/CLUSTER.md), so a stock cluster, whose default storage class is ReadWriteOnce, runs them.
``seals-al compile --workspace-size 50Gi --storage-class standard-rwx --resources select_round=4,16Gi``
changes them; docs/CLUSTER.md says what each is for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from kfp import dsl, kubernetes


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits of one component's pod (CPU in cores, memory as a quantity)."""

    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str

    @classmethod
    def parse(cls, text: str) -> Resources:
        """``CPU,MEMORY`` (requests = limits) or ``CPU,MEMORY,CPU_LIMIT,MEMORY_LIMIT``."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 2:
            return cls(parts[0], parts[1], parts[0], parts[1])
        if len(parts) == 4:
            return cls(*parts)
        raise ValueError(f"{text!r}: expected CPU,MEMORY or CPU,MEMORY,CPU_LIMIT,MEMORY_LIMIT")


# Embedding and index building are the heavy one-off steps; select reads the neighbour graph and
# scores the pool (and builds the graph on a cluster's first round); waiting only polls.
RESOURCES: dict[str, Resources] = {
    "embed": Resources("2", "6Gi", "4", "8Gi"),
    "build-index": Resources("2", "4Gi", "4", "16Gi"),
    "init-campaign": Resources("1", "2Gi", "2", "4Gi"),
    "label-ingest": Resources("500m", "1Gi", "1", "2Gi"),
    "train": Resources("1", "2Gi", "2", "4Gi"),
    "select-round": Resources("2", "4Gi", "4", "8Gi"),
    "report": Resources("500m", "1Gi", "1", "2Gi"),
    "score": Resources("2", "4Gi", "4", "8Gi"),
    "refresh-data": Resources("2", "6Gi", "4", "16Gi"),
    "oracle-labeler": Resources("500m", "1Gi", "1", "2Gi"),
    "wait-for-labels": Resources("100m", "256Mi", "500m", "512Mi"),
    "label-push": Resources("100m", "256Mi", "500m", "1Gi"),
}

# Campaign steps are idempotent (each resumes or redoes its round, refresh_data finds what it
# published; a killed one's lease expires and the retry takes it over): a pod lost to preemption or
# an OOM-kill is retried. Not score: with new_only, a retry after the first attempt recorded what
# it scored would find nothing new.
RETRIED = frozenset(
    {
        "init-campaign",
        "label-ingest",
        "train",
        "select-round",
        "report",
        "oracle-labeler",
        "label-push",
        "refresh-data",
    }
)

# The steps that talk to the labeling tool get its name, URL and API key from a Kubernetes Secret,
# as environment variables; the Secret is optional, so a pipeline runs the same without it.
LABEL_TOOL_STEPS = frozenset({"label-ingest", "wait-for-labels", "label-push"})
LABEL_TOOL_KEYS = {"tool": "LABEL_TOOL", "url": "LABEL_TOOL_URL", "api-key": "LABEL_TOOL_API_KEY"}


@dataclass(frozen=True)
class Cluster:
    """Compile-time settings of every pipeline."""

    workspace_size: str = ""  # "" = no workspace: each pod caches on its own disk (the default)
    storage_class: str = ""  # "" = the cluster's default; tasks of a run may share nodes or not
    access_mode: str = "ReadWriteMany"
    resources: Mapping[str, Resources] = field(default_factory=lambda: dict(RESOURCES))
    retries: int = 2
    backoff: str = "60s"
    label_tool_secret: str = "label-tool"  # "" = no labeling tool step or Secret
    # Beam options for the steps that read all of U (embed, the neighbour graph, score), e.g.
    # ("--runner=DataflowRunner", "--project=p", ...); () = each runs in its own pod.
    beam_args: tuple[str, ...] = ()

    def with_resources(self, overrides: Mapping[str, str]) -> Cluster:
        """These settings with some components' resources replaced (``{"select_round": "4,16Gi"}``)."""
        merged = dict(self.resources)
        for name, text in overrides.items():
            key = name.replace("_", "-")
            if key not in RESOURCES:
                raise ValueError(f"unknown component {name!r}; one of {', '.join(sorted(RESOURCES))}")
            merged[key] = Resources.parse(text)
        return replace(self, resources=merged)

    def without_label_tool(self) -> Cluster:
        """These settings with no labeling tool step or Secret (simulations: an oracle labels)."""
        return replace(self, label_tool_secret="")

    def pipeline_config(self) -> dsl.PipelineConfig | None:
        if not self.workspace_size:
            return None
        patch: dict = {"accessModes": [self.access_mode]}
        if self.storage_class:
            patch["storageClassName"] = self.storage_class
        return dsl.PipelineConfig(
            workspace=dsl.WorkspaceConfig(
                size=self.workspace_size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch)
            )
        )

    @property
    def workspace(self) -> str:
        """What every component gets as ``workspace``: KFP's workspace path, or "" without one."""
        return dsl.WORKSPACE_PATH_PLACEHOLDER if self.workspace_size else ""

    def step(self, component, **arguments) -> dsl.PipelineTask:
        """A task of ``component`` with the workspace, its resources and (campaign steps) retries.
        Campaign state changes between runs, so no task is served from KFP's cache."""
        task = component(**arguments, workspace=self.workspace)
        name = component.component_spec.name
        res = self.resources[name]
        task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu_limit)
        task.set_memory_request(res.memory).set_memory_limit(res.memory_limit)
        if name in RETRIED and self.retries:
            task.set_retry(num_retries=self.retries, backoff_duration=self.backoff)
        if name in LABEL_TOOL_STEPS and self.label_tool_secret:
            kubernetes.use_secret_as_env(task, self.label_tool_secret, LABEL_TOOL_KEYS, optional=True)
        return task.set_caching_options(False)


DEFAULT = Cluster()


def built_on_use(name: str, make: Callable[[], object], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` that builds ``name`` (a pipeline with the default settings) the
    first time it is read and keeps it: building a pipeline takes seconds, and importing its
    module (as ``seals-al compile`` imports all of them) should not."""

    def __getattr__(attribute: str) -> object:
        if attribute != name:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attribute!r}")
        namespace[name] = made = make()
        return made

    return __getattr__
