"""Is the server really serving? Readiness as Triton reports it, checked against its processes.

Triton 2.51 keeps answering 200 on ``/v2/health/ready`` and on a model's ready endpoint after the
Python-backend stub of that model was killed, while every request to the model fails ("Stub process
... is not healthy"). The stubs are processes whose command line names the model file (and so the
model and version in the serving view) and the tritonserver they serve, so a model Triton calls
READY whose instances have fewer live stubs than its configuration asks for is broken, whatever the
endpoints say.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnext_triton.triton.ensemble import PREPROCESS_SUFFIX, classifier_of
from resnext_triton.triton.local import probes
from resnext_triton.triton.local.procs import Stub, stubs
from resnext_triton.triton.local.state import VIEW_DIR, ServerState

ConfigLookup = Callable[[str, str], "dict[str, Any] | None"]


def expected_instances(config: dict[str, Any]) -> int:
    """How many stub processes a served model runs (0 for an ensemble, which has none)."""
    if config.get("platform") == "ensemble" or config.get("backend") == "ensemble":
        return 0
    groups = config.get("instance_group") or [{"count": 1}]
    return sum(int(group.get("count", 1)) for group in groups)


def missing_stubs(index: list[dict[str, Any]], live: list[Stub], config_of: ConfigLookup) -> dict[str, str]:
    """{model: what is wrong} for each READY model version with fewer live stubs than instances.

    Args:
        index: Triton's repository index (one entry per model version).
        live: the live stubs of the server.
        config_of: (model, version) -> the served configuration (None: unknown, not checked).
    """
    count = Counter((s.model, s.version) for s in live)
    problems: dict[str, str] = {}
    for entry in index:
        if entry.get("state") != "READY":
            continue
        model, version = str(entry["name"]), str(entry.get("version", ""))
        config = config_of(model, version)
        want = expected_instances(config) if config is not None else 0
        have = count[(model, version)]
        if have < want:
            problems[model] = f"{want - have} of {want} backend stub process(es) of version {version} died"
    return problems


@dataclass
class Health:
    """What a health check found.

    Attributes:
        problem: '' when the server answers as itself and is ready; else what is wrong.
        models: {model: Triton's state}, a broken model's state replaced by ``BROKEN``.
        broken: {model: why} for models Triton calls ready whose own backend processes died.
        affected: {image pipeline: why} for pipelines that run a broken model.
        stubs: the server's live stubs.
    """

    problem: str = ""
    models: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    affected: dict[str, str] = field(default_factory=dict)
    stubs: list[Stub] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """True if the server and every model it loaded can serve."""
        return not self.problem and not self.broken and all(s == "READY" for s in self.models.values())


def affected_pipelines(models: list[str], broken: dict[str, str]) -> dict[str, str]:
    """{image pipeline: why} for each ``*_image`` ensemble whose classifier or preprocessing step is broken."""
    found = {}
    for name in models:
        classifier = classifier_of(name)
        if classifier is None:
            continue
        variants = [m.removesuffix(PREPROCESS_SUFFIX) for m in broken if m.endswith(PREPROCESS_SUFFIX)]
        dead = [classifier] if classifier in broken else []
        dead += [v + PREPROCESS_SUFFIX for v in variants if name.startswith(v + "_")]
        if dead:
            found[name] = f"runs {', '.join(dead)}, whose backend process died"
    return found


class ConfigCache:
    """Served configurations by (model, version), fetched once each."""

    def __init__(self, http_url: str) -> None:
        self.http_url = http_url
        self._configs: dict[tuple[str, str], dict[str, Any] | None] = {}

    def __call__(self, model: str, version: str) -> dict[str, Any] | None:
        """The served configuration of a model version (None if the server does not answer)."""
        key = (model, version)
        if self._configs.get(key) is None:
            self._configs[key] = probes.model_config(self.http_url, model)
        return self._configs[key]


def check(state: ServerState, config_of: ConfigLookup | None = None) -> Health:
    """Check the server of ``state``: it answers as itself, is ready, and every ready model has its stubs.

    Args:
        state: the server (its ``server_id`` and ``pid`` must be those of the running tritonserver).
        config_of: where served configurations come from (default: asked from the server).
    """
    if state.pid <= 0:
        return Health(problem="tritonserver is not running (its supervisor restarts it)")
    answering = probes.server_id(state.http_url)
    if not answering:
        return Health(problem=f"no answer at {state.http_url}")
    if state.server_id and answering != state.server_id:
        return Health(problem=f"another server (id {answering!r}) answers at {state.http_url}")
    index = probes.repository_index(state.http_url)
    if index is None:
        return Health(problem="the repository index does not answer")
    state_dir = Path(state.state_dir)
    live = stubs(state_dir, state_dir / VIEW_DIR, server_pid=state.pid)
    broken = missing_stubs(index, live, config_of or ConfigCache(state.http_url))
    models = probes.collapse_index(index)
    affected = affected_pipelines(list(models), broken)
    models.update({m: "BROKEN" for m in [*broken, *affected]})
    problem = "" if probes.is_ready(state.http_url) else "/v2/health/ready does not answer 200"
    return Health(problem=problem, models=models, broken=broken, affected=affected, stubs=live)
