"""The serving view: the directory Triton polls, holding only the models this host serves.

Triton runs in ``--model-control-mode=poll`` over ``<state dir>/serving/``. Each model chosen by
the launcher gets a real directory there whose entries are symlinks into the repository
(``config.pbtxt``, ``configs/``, ``labels.txt``), and each complete version a real directory of
symlinks to its files. The supervisor calls :meth:`ServingView.sync` every few seconds, so a
version the exporter publishes appears in the view, Triton loads it, then unloads the old one, while
requests are served; a pruned version disappears. Models the host cannot serve (TensorRT on CPU)
never appear, so Triton never tries them.

Why not one symlink per model directory: the view's own directories let the supervisor reload a
single model without touching the repository (:meth:`ServingView.request_reload` changes the
model's directory, which poll mode takes as a change of the model), and Python models'
``__pycache__`` is written here (compiled before Triton starts, so the first poll sees no change)
instead of into the user's repository.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import py_compile
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

RELOAD_MARKER = ".reload"
STAGING_PREFIX = ".tmp-"


def _is_version(path: Path) -> bool:
    return path.name.isdigit() and path.is_dir()


def _link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` (replacing a link that points elsewhere)."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f"{STAGING_PREFIX}{link.name}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)  # links inside are removed, never followed
    else:
        path.unlink(missing_ok=True)


class ServingView:
    """The directory of symlinks Triton serves from.

    Args:
        root: the view directory (``<state dir>/serving``).
        repo: the model repository the links point into.
    """

    def __init__(self, root: Path, repo: Path) -> None:
        self.root = root
        self.repo = repo.resolve()

    def rebuild(self, models: list[str]) -> None:
        """Start over: remove whatever a previous server left, then link ``models``."""
        _remove(self.root)
        self.sync(models)

    def sync(self, models: list[str]) -> list[str]:
        """Make the view hold exactly ``models`` with every complete version of each.

        Returns:
            The models whose entries changed (added, removed, new or pruned versions).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        changed = []
        for entry in sorted(self.root.iterdir()):
            if entry.name not in models:
                _remove(entry)
                changed.append(entry.name)
        for name in models:
            if self._sync_model(name):
                changed.append(name)
        if changed:
            log.debug("serving view changed: %s", ", ".join(changed))
        return changed

    def _sync_model(self, name: str) -> bool:
        source, target = self.repo / name, self.root / name
        if not source.is_dir():
            existed = target.exists()
            _remove(target)
            return existed
        target.mkdir(exist_ok=True)
        wanted = {p.name: p for p in source.iterdir() if not p.name.startswith(".")}
        changed = False
        for entry in target.iterdir():
            if entry.name.startswith("."):
                continue
            mirrored = entry.is_dir() and not entry.is_symlink()
            if entry.name not in wanted or _is_version(wanted[entry.name]) != mirrored:
                _remove(entry)
                changed = True
        for entry_name, path in sorted(wanted.items()):
            link = target / entry_name
            if _is_version(path):
                if not link.exists():
                    self._mirror_version(path, link)
                    changed = True
            elif not (link.is_symlink() and os.readlink(link) == str(path)):
                _link(path, link)
                changed = True
        return changed

    @staticmethod
    def _mirror_version(source: Path, target: Path) -> None:
        """A version directory of links to ``source``'s files, renamed into place complete."""
        staging = target.with_name(f"{STAGING_PREFIX}{target.name}")
        _remove(staging)
        staging.mkdir()
        files = [p for p in source.iterdir() if not p.name.startswith(".") and p.name != "__pycache__"]
        for path in files:
            (staging / path.name).symlink_to(path)
        for path in files:
            if path.suffix == ".py" and path.is_file():
                _precompile(staging / path.name)
        os.rename(staging, target)

    def request_reload(self, name: str) -> None:
        """Make Triton reload ``name`` at its next poll (a new instance set, then the old one unloaded)."""
        marker = self.root / name / RELOAD_MARKER
        marker.write_text(f"{time.time():.6f}\n", encoding="utf-8")
        with contextlib.suppress(OSError):
            os.utime(marker.parent)  # the directory's own time changes too (some pollers look only at it)


def _precompile(source: Path) -> None:
    """Write the bytecode the stub would write on import, before Triton starts polling.

    Triton's Python stub imports ``model.py`` with a default interpreter configuration, which writes
    ``__pycache__`` beside it; created after the first poll, that directory would look like a change
    of the model and trigger a reload. Compiled here, the cache is already valid.
    """
    cfile = importlib.util.cache_from_source(str(source))
    try:
        py_compile.compile(str(source), cfile=cfile, doraise=True)
    except (py_compile.PyCompileError, OSError) as exc:
        log.warning("could not precompile %s: %s", source, exc)
