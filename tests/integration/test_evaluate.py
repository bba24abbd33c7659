"""evaluate.py against the real local Triton: accuracy figures checked against the eager model, --compare.

The expected figures are computed here, independently of the tool: the eager torch model ranks each
photo's classes in-process, and each photo is filed under a class chosen from that ranking (its
top-1 class, its 3rd class, or a class outside its top-5). The tool must then report exactly the
fractions this construction implies.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from resnext_triton.client.evaluate import main
from resnext_triton.client.metrics import wilson_interval
from resnext_triton.preprocess import preprocess_path
from resnext_triton.spec import Format

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "client" / "evaluate.py"
MARGIN = 1e-2  # logit gap that no export or transport difference (<= 1e-3) can cross
TOP1, THIRD, MISS = "top-1", "3rd", "outside top-5"
PLAN = (TOP1, TOP1, TOP1, THIRD, THIRD, MISS)  # expected: top-1 3/6, top-5 5/6


@dataclass
class LabelledSet:
    root: Path
    label_file: Path
    flat: Path
    labels: dict[str, int]  # photo file name -> class
    kinds: dict[str, str]  # photo file name -> TOP1, THIRD or MISS
    corrupt: str
    top1: int
    top5: int
    scored: int

    @property
    def classes(self) -> int:
        return len(set(self.labels.values()))

    def per_class(self) -> list[tuple[int, int, int]]:
        """(class, top-1 hits, images) per class, in the tool's worst-first order."""
        hits: dict[int, list[int]] = {}
        for name, cls in self.labels.items():
            hits.setdefault(cls, []).append(self.kinds[name] == TOP1)
        rows = [(cls, sum(h), len(h)) for cls, h in hits.items()]
        return sorted(rows, key=lambda r: (r[1] / r[2], -r[2], r[0]))


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--no-progress"], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def eager_logits(exported_repo, photos: list[Path]) -> np.ndarray:
    """The eager torch model's logits for each photo, preprocessed by the shared preprocessing."""
    import torch

    batch = np.stack([preprocess_path(p) for p in photos])
    with torch.inference_mode():
        return exported_repo.eager.eval()(torch.from_numpy(batch)).double().numpy()


@pytest.fixture(scope="module")
def labelled(photos: list[Path], eager_logits: np.ndarray, exported_repo, tmp_path_factory) -> LabelledSet:
    """The photos filed by the PLAN in an ImageFolder tree (WordNet and index folders), a label file, and flat."""
    assert len(photos) >= len(PLAN), "needs the six sample photos"
    labels = exported_repo.spec.labels()
    base = tmp_path_factory.mktemp("evalset")
    root, flat = base / "tree", base / "flat"
    flat.mkdir()
    chosen: dict[str, int] = {}
    for i, (photo, kind) in enumerate(zip(photos, PLAN, strict=False)):
        logits = eager_logits[i]
        ranked = logits[np.argsort(-logits, kind="stable")]
        # The chosen class must sit clearly inside (or outside) the top-1 and top-5 boundaries.
        rank, gaps = {
            TOP1: (0, [ranked[0] - ranked[1]]),
            THIRD: (2, [ranked[0] - ranked[2], ranked[2] - ranked[5]]),
            MISS: (10, [ranked[4] - ranked[10]]),
        }[kind]
        assert min(gaps) > MARGIN, f"{photo.name}: rank boundaries too close for a robust test: {gaps}"
        cls = int(np.argsort(-logits, kind="stable")[rank])
        folder = labels[cls].split()[0] if i % 2 == 0 else str(cls)  # both folder namings in one tree
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / photo.name).write_bytes(photo.read_bytes())
        (flat / photo.name).write_bytes(photo.read_bytes())
        chosen[photo.name] = cls
    corrupt = root / str(chosen[photos[0].name]) / "corrupt.jpg"
    corrupt.parent.mkdir(exist_ok=True)
    corrupt.write_text("this is not an image\n")
    (flat / "corrupt.jpg").write_text("this is not an image\n")
    label_file = base / "val.txt"
    lines = [f"{name} {cls}" for name, cls in chosen.items()] + [f"corrupt.jpg {chosen[photos[0].name]}"]
    label_file.write_text("\n".join(lines) + "\n")
    kinds = {photo.name: kind for photo, kind in zip(photos, PLAN, strict=False)}
    return LabelledSet(root, label_file, flat, chosen, kinds, str(corrupt), top1=3, top5=5, scored=len(PLAN))


def check_figures(row: dict, data: LabelledSet, corrupt: str) -> None:
    assert row["images"] == data.scored + 1 and row["classified"] == data.scored
    assert [f["input"] for f in row["failed"]] == [corrupt]
    assert "not an image" in row["failed"][0]["error"]
    for key, correct in (("top1", data.top1), ("top5", data.top5)):
        assert row[key]["correct"] == correct and row[key]["total"] == data.scored, (key, row[key])
        assert row[key]["accuracy"] == pytest.approx(correct / data.scored)
        assert row[key]["ci95"] == pytest.approx(list(wilson_interval(correct, data.scored)))
    assert [(c["class_id"], c["correct"], c["total"]) for c in row["worst_classes"]] == data.per_class()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_accuracy_on_an_image_folder_matches_the_eager_construction(
    triton_server, labelled: LabelledSet, protocol: str
) -> None:
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_address
    model = triton_server.models[Format.ONNX]
    code, out, err = run_cli([str(labelled.root), "-u", url, "-i", protocol, "-m", model, "--json", "-b", "4"])
    assert code == 1, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["model"] == model and row["protocol"] == protocol and row["agreement"] is None
    assert row["dataset"] == {
        "root": str(labelled.root),
        "layout": "image folder",
        "images": 7,
        "classes": labelled.classes,
    }
    check_figures(row, labelled, labelled.corrupt)
    assert row["elapsed_s"] > 0 and row["images_per_s"] > 0


def test_text_report_through_the_image_pipeline_with_a_label_file(triton_server, labelled: LabelledSet) -> None:
    code, out, err = run_cli(
        [str(labelled.flat), "--label-file", str(labelled.label_file), "-u", triton_server.grpc_url, "--pipeline"]
    )
    assert code == 1, err
    assert "_image" in err.splitlines()[0]  # the model line names the pipeline
    lines = out.splitlines()
    assert lines[0].endswith(f"on {labelled.flat} (label file): 7 images in {labelled.classes} classes")
    assert lines[1].startswith("classified 6 of 7 images in ")
    assert lines[2] == "failed 1 (left out of the figures):"
    assert lines[3].startswith(f"  {labelled.flat / 'corrupt.jpg'}: ")  # the server's preprocessing error
    low, high = wilson_interval(3, 6)
    assert f"top-1   50.00 %        3 / 6       {100 * low:.2f} % - {100 * high:.2f} %" in lines
    assert any(line.startswith("top-5   83.33 %        5 / 6 ") for line in lines)
    assert any(line.startswith("worst ") and "classes by top-1 accuracy" in line for line in lines)


def test_compare_onnx_and_torchscript_agree(triton_server, labelled: LabelledSet) -> None:
    onnx, ts = triton_server.models[Format.ONNX], triton_server.models[Format.TORCHSCRIPT]
    code, out, err = run_cli([str(labelled.root), "-u", triton_server.grpc_url, "--compare", f"{onnx},{ts}", "--json"])
    assert code == 1, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert (first["model"], second["model"]) == (onnx, ts)
    for row in (first, second):
        check_figures(row, labelled, labelled.corrupt)
    assert first["agreement"] is None
    agree = second["agreement"]
    assert agree["reference"] == onnx and agree["images"] == labelled.scored
    assert agree["top1_agreement"] == 1.0 and agree["top5_overlap"] == 1.0
    assert 0.0 <= agree["max_abs_logit_diff"] <= 1e-3


def test_compare_on_an_unlabelled_folder_through_the_launcher(triton_server, labelled: LabelledSet) -> None:
    onnx, ts = triton_server.models[Format.ONNX], triton_server.models[Format.TORCHSCRIPT]
    argv = [
        str(LAUNCHER),
        str(labelled.flat),
        "-u",
        triton_server.http_address,
        "-i",
        "http",
        "--compare",
        f"{ts},{onnx}",
    ]
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{ts}, {onnx} on {labelled.flat} (unlabelled): 7 images"
    assert lines[1].startswith("each model classified 6 of 7 images")
    assert lines[-3].split() == ["model", "top-1", "agreement", "top-5", "overlap", "max|logit", "diff|"]
    assert lines[-2].split() == [ts, "(reference)"]
    name, agreement, _, overlap, _, diff = lines[-1].split()
    assert (name, agreement, overlap) == (onnx, "100.00", "100.00") and float(diff) <= 1e-3


def test_compare_with_the_int8_model_when_it_is_served(triton_server, labelled: LabelledSet) -> None:
    onnx, int8 = triton_server.models[Format.ONNX], triton_server.spec.model_name(Format.ONNX_INT8)
    client = httpclient.InferenceServerClient(triton_server.http_address)
    try:
        ready = client.is_model_ready(int8)
    finally:
        client.close()
    if not ready:
        pytest.skip(f"{int8} is not served by this repository (the ONNX INT8 export is not in it)")
    code, out, err = run_cli(
        [str(labelled.flat), "-u", triton_server.grpc_url, "--compare", f"{onnx},{int8}", "--json"]
    )
    assert code == 1, err
    _, row = (json.loads(line) for line in out.splitlines())
    agree = row["agreement"]
    assert agree["images"] == labelled.scored and 0.0 <= agree["top1_agreement"] <= 1.0
    assert 0.0 <= agree["top5_overlap"] <= 1.0 and agree["max_abs_logit_diff"] > 0.0
