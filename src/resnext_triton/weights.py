"""Checkpoint sources: NVIDIA's pretrained file, a local checkpoint, or explicit random weights.

Checkpoints are never unpickled as code: PyTorch files go through ``torch.load(weights_only=True)``
and ``.safetensors`` through safetensors. Names are mapped onto NVIDIA's current ones (a
``module.`` prefix is stripped; ``layerN.`` becomes ``layers.{N-1}.``), then checked key by key
and shape by shape against the model before anything is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnext_triton.model import build_model
from resnext_triton.spec import ModelSpec

log = logging.getLogger(__name__)

NGC_URL = (
    "https://api.ngc.nvidia.com/v2/models/nvidia/resnext101_32x4d_pyt_amp/versions/20.06.0/files/"
    "nvidia_resnext101-32x4d_200821.pth.tar"
)
NGC_URL_ENV = "RESNEXT_TRITON_NGC_URL"
CACHE_ENV = "RESNEXT_TRITON_CACHE"
_CHUNK = 1 << 20
_LAYER_RE = re.compile(r"^layer([1-4])\.")


class WeightsError(RuntimeError):
    """A checkpoint could not be fetched, read or matched to the model."""


class DownloadError(WeightsError):
    """The pretrained checkpoint could not be downloaded."""


@dataclass(frozen=True)
class LoadedWeights:
    """A model with its weights, and where they came from (recorded in the export manifest)."""

    model: nn.Module
    source: str
    path: str | None
    sha256: str | None
    batchnorm_images: int = 0
    """Photos the BatchNorm statistics were re-estimated on (0: as loaded)."""

    @property
    def is_random(self) -> bool:
        """True when the model carries random, untrained weights."""
        return self.source == "random"

    def describe(self) -> dict[str, Any]:
        """The manifest entry for these weights."""
        described: dict[str, Any] = {
            "source": self.source, "path": self.path, "sha256": self.sha256, "trained": not self.is_random
        }
        if self.batchnorm_images:
            described["batchnorm_reestimated_on_images"] = self.batchnorm_images
        return described


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept: $RESNEXT_TRITON_CACHE or ~/.cache/resnext_triton."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "resnext_triton"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, directory: Path, *, progress: bool = True, timeout_s: float = 30.0) -> tuple[Path, str]:
    """Download ``url`` into ``directory`` atomically and return (path, sha256).

    The file is streamed into ``<name>.part`` and renamed only once complete (its length matches
    Content-Length), so an interrupted download never leaves a usable-looking file. A finished
    download is cached with a ``.sha256`` sidecar; a cached file whose hash no longer matches is
    fetched again.

    Raises:
        DownloadError: on a network error, an HTTP error or a short read.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint.pth"
    target = directory / name
    sidecar = target.with_name(name + ".sha256")
    if target.is_file() and sidecar.is_file():
        digest = sha256_file(target)
        if digest == sidecar.read_text().split()[0]:
            log.info("using cached %s (sha256 %s)", target, digest)
            return target, digest
        log.warning("cached %s does not match its recorded sha256; downloading again", target)
    partial = target.with_name(name + ".part")
    try:
        digest = _stream(url, partial, progress=progress, timeout_s=timeout_s)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sidecar.write_text(f"{digest}  {name}\n")
    log.info("downloaded %s (sha256 %s)", target, digest)
    return target, digest


def _stream(url: str, dest: Path, *, progress: bool, timeout_s: float) -> str:
    from tqdm import tqdm

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "resnext-triton"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response, open(dest, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.stem, disable=not progress
            ) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
            if total is not None and done != total:
                raise DownloadError(f"download of {url} stopped after {done} of {total} bytes")
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        if isinstance(exc, DownloadError):
            raise
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url}: {reason}\n"
            "  offline? use --weights PATH with a local checkpoint, or --weights random for an untrained model"
        ) from exc
    return digest.hexdigest()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a PyTorch checkpoint or a .safetensors file, without running code.

    Accepts a flat state dict, NVIDIA training checkpoints (``{"state_dict": ...}``) and
    ``{"model": ...}`` wrappers.

    Raises:
        WeightsError: if the file is missing, truncated, not a checkpoint, or would need code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(f"checkpoint {path} is empty")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Weights only load failed" in str(exc):
            raise WeightsError(
                f"{path} holds more than tensors (it would run pickled code to load); refusing to load it. "
                f"Save a plain state_dict or a .safetensors file instead. ({first})"
            ) from exc
        raise WeightsError(f"{path} is not a PyTorch checkpoint: {first}") from exc
    except Exception as exc:  # torch.load raises many kinds on a damaged or foreign file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path} is truncated or not a PyTorch checkpoint: {first}") from exc
    return _unwrap(obj, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is truncated or not a safetensors file: {exc}") from exc


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path} holds no tensors")
    return tensors


def remap_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map NGC-file, training-checkpoint and torchvision/timm names onto NVIDIA's current names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        name = _LAYER_RE.sub(lambda m: f"layers.{int(m.group(1)) - 1}.", name)
        out[name] = value
    return out


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Compare a (remapped) state dict with a model, key by key and shape by shape.

    BatchNorm ``num_batches_tracked`` counters may be absent.

    Raises:
        WeightsError: naming every missing key, unexpected key and shape mismatch.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            parts.append(f"{title}: {shown}")
    hint = ""
    if any(k.startswith("fc.") for k in mismatched):
        hint = "\n  (a fine-tuned model? pass --num-classes N --labels FILE)"
    elif len(missing) > len(expected) // 2:
        hint = "\n  (is this checkpoint for another --variant?)"
    raise WeightsError("checkpoint does not match the model:\n  " + "\n  ".join(parts) + hint)


def load_weights(spec: ModelSpec, source: str, *, progress: bool = True, seed: int = 0) -> LoadedWeights:
    """Build the model for ``spec`` with weights from ``source``: ``ngc``, ``random`` or a file path.

    Raises:
        WeightsError: if the weights cannot be fetched, read or matched to the model.
    """
    model = build_model(spec)
    if source == "random":
        torch.manual_seed(seed)
        model = build_model(spec)
        log.warning("using RANDOM weights: the exported model is untrained and its labels are meaningless")
        return LoadedWeights(model=model, source="random", path=None, sha256=None)
    if source == "ngc":
        if spec.variant != "resnext101_32x4d" or spec.num_classes != 1000:
            raise WeightsError("--weights ngc provides resnext101_32x4d with 1000 classes only")
        url = os.environ.get(NGC_URL_ENV, NGC_URL)
        path, digest = download(url, cache_dir(), progress=progress)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsError(f"checkpoint {path} does not exist (--weights takes ngc, random or a file path)")
        digest = sha256_file(path)
    state = remap_keys(read_checkpoint(path))
    check_state_dict(model, state)
    model.load_state_dict(state, strict=False)
    kind = "ngc" if source == "ngc" else "file"
    return LoadedWeights(model=model.eval(), source=kind, path=str(path), sha256=digest)
