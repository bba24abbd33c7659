"""Does the repository load in this container's Triton? The export job's reason to skip, or not.

A TensorRT plan loads only in the TensorRT version and on the GPU compute capability that built
it. After an NGC release bump or a GPU change, an old plan makes Triton fail with "engine plan
file is not compatible" (a crash loop under ``--exit-on-error`` and a restart policy). And a model
directory with a ``config.pbtxt`` but no version makes Triton refuse to start ("at least one
version must be available"). The export job therefore skips its work only when every model
directory has a version and every plan's newest manifest names the TensorRT version and compute
capability of the container it runs in.

Command line (the compose ``export`` service runs it)::

    python -m resnext_triton.exporters.plan_check --repo model_repository
    # exit 0: a matching plan exists (skip the export); 1: export needed (reason printed); 2: usage
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from resnext_triton.spec import Format
from resnext_triton.triton.repository import RepositoryError, latest_version, read_manifest

EXIT_MATCH = 0
EXIT_EXPORT = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Target:
    """Where a plan must load: the TensorRT version and the GPU's compute capability (``"9.0"``)."""

    tensorrt_version: str
    compute_capability: str


def current_target() -> Target:
    """The TensorRT version importable here and the compute capability of GPU 0.

    Raises:
        RuntimeError: without TensorRT, torch or a CUDA GPU.
    """
    try:
        import tensorrt as trt
        import torch
    except ImportError as exc:
        raise RuntimeError(f"cannot check plans without TensorRT and torch: {exc}") from exc
    version = getattr(trt, "__version__", None)  # None: only type stubs (a namespace package) are installed
    if version is None:
        raise RuntimeError("cannot check plans without TensorRT: only its type stubs are installed")
    if not torch.cuda.is_available():
        raise RuntimeError("cannot check plans: no CUDA GPU is visible")
    major, minor = torch.cuda.get_device_capability(0)
    return Target(tensorrt_version=str(version), compute_capability=f"{major}.{minor}")


def unexported_models(repo: Path) -> list[str]:
    """The model directories with a ``config.pbtxt`` and no version: Triton will not start with one."""
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file() and latest_version(p) is None)


def plan_mismatch(repo: Path, target: Target) -> str | None:
    """Why the repository must be exported again for ``target``, or None when it loads as it is.

    Every model directory needs a version, and every TensorRT model directory's newest version
    must match ``target``; a repository with no plan at all needs an export too.
    """
    suffixes = tuple(f"_{fmt.model_suffix}" for fmt in Format if fmt.is_plan)  # not their ``_image`` pipelines
    model_dirs = sorted(p for p in repo.iterdir() if p.is_dir() and p.name.endswith(suffixes)) if repo.is_dir() else []
    reasons: list[str] = []
    missing = unexported_models(repo)
    if missing:
        reasons.append(f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no exported version")
    checked = 0
    for model_dir in model_dirs:
        version = latest_version(model_dir)
        if version is None:
            continue
        checked += 1
        try:
            export = read_manifest(version).get("export", {})
        except RepositoryError as exc:
            reasons.append(str(exc))
            continue
        built = Target(str(export.get("tensorrt_version", "?")), str(export.get("compute_capability", "?")))
        if built != target:
            reasons.append(
                f"{model_dir.name}/{version.name} was built by TensorRT {built.tensorrt_version} for compute "
                f"capability {built.compute_capability}; this host has TensorRT {target.tensorrt_version} and "
                f"compute capability {target.compute_capability}"
            )
    if not checked:
        reasons.insert(0, f"no TensorRT plan in {repo}")
    return "; ".join(reasons) or None


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every model is exported and every plan matches this host, 1 when an export is needed."""
    parser = argparse.ArgumentParser(
        prog="python -m resnext_triton.exporters.plan_check",
        description="Exit 0 if the repository loads here as it is (every model exported, every TensorRT "
        "plan built by this TensorRT for this compute capability), 1 if it must be exported again.",
    )
    parser.add_argument("--repo", type=Path, default=Path("model_repository"), help="model repository")
    parser.add_argument("--tensorrt-version", help="check against this version instead of the installed one")
    parser.add_argument("--compute-capability", help="check against this capability (e.g. 9.0) instead of GPU 0's")
    args = parser.parse_args(argv)
    if bool(args.tensorrt_version) != bool(args.compute_capability):
        parser.error("give both --tensorrt-version and --compute-capability, or neither")
    if args.tensorrt_version:
        target = Target(args.tensorrt_version, args.compute_capability)
    else:
        try:
            target = current_target()
        except RuntimeError as exc:
            print(f"plan check: {exc}", file=sys.stderr)
            return EXIT_EXPORT
    reason = plan_mismatch(args.repo, target)
    if reason is None:
        print(f"plan check: every model in {args.repo} is exported and its plans match TensorRT "
              f"{target.tensorrt_version}, compute capability {target.compute_capability}")
        return EXIT_MATCH
    print(f"plan check: export needed: {reason}")
    return EXIT_EXPORT


if __name__ == "__main__":
    sys.exit(main())
