"""An atomic, versioned Triton model repository.

A new export becomes version N+1: its files are written into a hidden staging directory inside
the model directory (Triton skips names that are not integers) and renamed into place in one
step, so a Triton polling the repository never sees a half-written version. config.pbtxt,
configs/cpu.pbtxt and labels.txt are replaced atomically too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.config import LABELS_FILENAME, ServingOptions, build_config, to_pbtxt
from resnext_triton.triton.ensemble import (
    PREPROCESS_MODEL_FILE,
    PREPROCESS_SUFFIX,
    build_ensemble_config,
    build_preprocess_config,
    classifier_of,
    ensemble_name,
    preprocess_model_name,
    preprocess_model_source,
)
from resnext_triton.triton.process import pid_alive

log = logging.getLogger(__name__)

MANIFEST = "export_manifest.json"
STAGING_PREFIX = ".tmp-"
CPU_CONFIG = Path("configs") / "cpu.pbtxt"


class RepositoryError(RuntimeError):
    """A model repository could not be written or read."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so readers see either the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions(model_dir: Path) -> list[int]:
    """The complete (numbered) versions in a model directory, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def write_configs(repo: Path, spec: ModelSpec, fmt: Format, options: ServingOptions) -> Path:
    """Write config.pbtxt (GPU), configs/cpu.pbtxt (not for TensorRT) and labels.txt.

    Returns:
        The model directory.
    """
    labels = "\n".join(spec.labels()) + "\n"
    model_dir = repo / spec.model_name(fmt)
    atomic_write_text(model_dir / "config.pbtxt", to_pbtxt(build_config(spec, fmt, options)))
    if not fmt.is_plan:
        atomic_write_text(model_dir / CPU_CONFIG, to_pbtxt(build_config(spec, fmt, options, cpu=True)))
    atomic_write_text(model_dir / LABELS_FILENAME, labels)
    _write_pipeline(repo, spec, fmt, options, labels)
    return model_dir


def _write_pipeline(repo: Path, spec: ModelSpec, fmt: Format, options: ServingOptions, labels: str) -> None:
    """The image pipeline in front of a format: the shared preprocessing model and the ensemble.

    Neither has weights: the preprocessing model's version 1 is its ``model.py``, the ensemble's an
    empty directory (Triton needs one).
    """
    pre_dir = repo / preprocess_model_name(spec)
    pre_text = to_pbtxt(build_preprocess_config(spec, options))
    atomic_write_text(pre_dir / "config.pbtxt", pre_text)
    atomic_write_text(pre_dir / CPU_CONFIG, pre_text)
    atomic_write_text(pre_dir / "1" / PREPROCESS_MODEL_FILE, preprocess_model_source())
    ens_dir = repo / ensemble_name(spec, fmt)
    ens_text = to_pbtxt(build_ensemble_config(spec, fmt, options))
    atomic_write_text(ens_dir / "config.pbtxt", ens_text)
    if not fmt.is_plan:
        atomic_write_text(ens_dir / CPU_CONFIG, ens_text)
    atomic_write_text(ens_dir / LABELS_FILENAME, labels)
    (ens_dir / "1").mkdir(exist_ok=True)


def publish_version(
    model_dir: Path,
    fill: Callable[[Path], dict[str, Any]],
    *,
    keep: int = 2,
) -> Path:
    """Create version N+1 of a model atomically.

    Args:
        model_dir: the model's directory in the repository.
        fill: writes the model file(s) into the staging directory it is given and returns the
            manifest, which is written beside them as export_manifest.json.
        keep: how many versions to keep, the new one included (0 keeps all). A version that a
            running Triton on this host serves is never removed (see :func:`prune_versions`).

    Returns:
        The published version directory.

    Raises:
        RepositoryError: if the version could not be published; nothing is left behind.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    model_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=model_dir))
    try:
        manifest = fill(staging)
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
        (staging / MANIFEST).write_text(text, encoding="utf-8")
        for path in staging.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        staging.chmod(0o755)
        version = (versions(model_dir) or [0])[-1] + 1
        target = model_dir / str(version)
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise RepositoryError(f"could not publish {target}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("published %s", target)
    if keep:
        prune_versions(model_dir, keep)
    return target


def prune_versions(model_dir: Path, keep: int) -> list[int]:
    """Remove all but the newest ``keep`` versions, sparing every version a running Triton serves.

    The tritonservers of this host are asked which versions of the model they have loaded (or are
    loading); when one that serves the model cannot be asked, nothing is removed.

    Returns:
        The versions removed.
    """
    from resnext_triton.triton.local.served import served_versions  # the launcher imports this module

    old = versions(model_dir)[:-keep]
    if not old:
        return []
    served, unknown = served_versions(model_dir)
    if unknown:
        log.warning(
            "not removing old versions of %s: %s serve(s) it and cannot be asked which versions are loaded",
            model_dir.name, "; ".join(unknown),
        )  # fmt: skip
        return []
    removed = []
    for version in old:
        if version in served:
            log.info("keeping old version %s/%d: a running Triton serves it", model_dir.name, version)
            continue
        shutil.rmtree(model_dir / str(version), ignore_errors=True)
        log.info("removed old version %s/%d", model_dir.name, version)
        removed.append(version)
    return removed


def _remove_stale_staging(model_dir: Path) -> None:
    """Remove staging directories left by an export that was killed (never a numbered version)."""
    for path in model_dir.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and pid_alive(int(pid)) and int(pid) != os.getpid():
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def latest_version(model_dir: Path) -> Path | None:
    """The newest complete version directory, or None."""
    found = versions(model_dir)
    return model_dir / str(found[-1]) if found else None


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """Read a version's export manifest.

    Raises:
        RepositoryError: if it is missing or not JSON.
    """
    path = version_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RepositoryError(f"{path} is not a JSON object")
    return data


def servable_models(repo: Path, *, cpu: bool) -> tuple[list[str], dict[str, str]]:
    """Which models in a repository can be loaded on this kind of host.

    Returns:
        (model names to load, {model name: reason it is skipped}).
    """
    load: list[str] = []
    skipped: dict[str, str] = {}
    if not repo.is_dir():
        return load, skipped
    for model_dir in sorted(p for p in repo.iterdir() if (p / "config.pbtxt").is_file()):
        if latest_version(model_dir) is None:
            skipped[model_dir.name] = "no exported version (run export/export.py)"
        elif cpu and not (model_dir / CPU_CONFIG).is_file():
            skipped[model_dir.name] = "TensorRT plan needs a GPU; left unloaded on this CPU-only host"
        else:
            load.append(model_dir.name)
    for name in list(load):  # an image pipeline needs the model it stands in front of
        classifier = classifier_of(name)
        if classifier is not None and classifier not in load:
            load.remove(name)
            skipped[name] = f"its model {classifier} is not loadable here ({skipped.get(classifier, 'not found')})"
    if not any(classifier_of(name) for name in load):  # preprocessing serves the pipelines alone
        for name in [n for n in load if n.endswith(PREPROCESS_SUFFIX)]:
            load.remove(name)
            skipped[name] = "no image pipeline to serve here"
    return load, skipped
