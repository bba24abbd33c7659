"""The evaluate tool without a server: Wilson intervals, scoring, reports, the command line."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from resnext_triton.client import cli as classify_cli
from resnext_triton.client.dataset import DatasetError, load_dataset
from resnext_triton.client.discovery import ModelInfo
from resnext_triton.client.evaluate import (
    SHARED_OPTIONS,
    build_parser,
    format_comparison,
    format_report,
    main,
)
from resnext_triton.client.evaluation import evaluate_models
from resnext_triton.client.inputs import Source
from resnext_triton.client.metrics import AccuracyMeter, AgreementMeter, logit_vector, wilson_interval
from resnext_triton.client.results import ClassificationResult, top_k_from_logits

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "client" / "evaluate.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded by these tests")
    return path


# ----------------------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # z = 1.959964, z² = 3.841459. 8/10: p = 0.8, denominator 1 + z²/n = 1.384146,
        # centre (0.8 + z²/20) / 1.384146 = 0.716727,
        # half width z / 1.384146 * sqrt(0.8 * 0.2 / 10 + z² / 400) = 1.416010 * 0.160012 = 0.226579.
        (8, 10, 0.490162, 0.943318),
        # 0/10: centre = half width = (z²/20) / 1.384146 = 0.138766: [0, 0.277533].
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722467, 1.0),
        # 50/100: centre 0.5; half width z / 1.038415 * sqrt(0.0025 + z²/40000) = 1.887457 * 0.050951 = 0.096168.
        (50, 100, 0.403832, 0.596168),
        # 3/6 and 5/6: the integration test's figures. 3/6: centre 0.5, denominator 1.640243,
        # half 1.194921 * sqrt(0.041667 + 0.026676) = 0.312382.
        (3, 6, 0.187618, 0.812382),
        (5, 6, 0.436497, 0.969947),
    ],
)
def test_wilson_interval_matches_hand_computed_values(successes: int, trials: int, low: float, high: float) -> None:
    got = wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=2e-6)
    assert 0.0 <= got[0] <= successes / trials <= got[1] <= 1.0


def test_wilson_interval_at_90_percent_and_bad_arguments() -> None:
    # z = 1.644854, z² = 2.705544: 8/10 -> denominator 1.270554, centre 0.935277 / 1.270554 = 0.736118,
    # half width 1.294597 * sqrt(0.016 + 0.006764) = 1.294597 * 0.150877 = 0.195325.
    assert wilson_interval(8, 10, confidence=0.90) == pytest.approx((0.540793, 0.931443), abs=2e-6)
    for args in ((0, 0), (11, 10), (-1, 10)):
        with pytest.raises(ValueError):
            wilson_interval(*args)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


# ----------------------------------------------------------------------------------------- scoring


def preds(*logits: float) -> tuple:
    return top_k_from_logits(np.array(logits), ["a", "b", "c", "d", "e", "f"], len(logits))


def test_accuracy_meter_counts_top1_top5_and_worst_classes() -> None:
    meter = AccuracyMeter()
    meter.add(0, preds(9, 8, 7, 6, 5, 4))  # top-1 hit
    meter.add(2, preds(9, 8, 7, 6, 5, 4))  # 3rd: top-5 hit
    meter.add(5, preds(9, 8, 7, 6, 5, 4))  # 6th: miss
    meter.add(2, preds(0, 0, 9, 0, 0, 0))  # top-1 hit
    assert (meter.top1.correct, meter.top1.total, meter.top5.correct) == (2, 4, 3)
    worst = meter.worst(2, ["a", "b", "c", "d", "e", "f"])
    assert [(c.class_id, c.correct, c.total, c.accuracy) for c in worst] == [(5, 0, 1, 0.0), (2, 1, 2, 0.5)]
    assert worst[0].to_dict() == {"class_id": 5, "label": "f", "correct": 0, "total": 1, "accuracy": 0.0}
    assert meter.top1.to_dict()["ci95"] == pytest.approx(list(wilson_interval(2, 4)))


def test_agreement_meter_and_logit_vectors() -> None:
    meter = AgreementMeter("ref")
    meter.add(preds(9, 8, 7, 6, 5, 4), preds(9, 8, 7, 6, 5, 4.5))
    meter.add(preds(9, 8, 7, 6, 5, 4), preds(8, 9, 7, 6, 4, 5))  # top-1 differs; top-5 shares 4 of 5
    d = meter.to_dict()
    assert d["reference"] == "ref" and d["images"] == 2 and d["top1_agreement"] == 0.5
    assert d["top5_overlap"] == pytest.approx(0.9) and d["max_abs_logit_diff"] == pytest.approx(1.0)
    assert list(logit_vector(preds(1, 3, 2))) == [1, 3, 2]
    with pytest.raises(ValueError, match="every class"):
        logit_vector(preds(1, 3, 2)[:2])
    assert AgreementMeter("ref").to_dict()["max_abs_logit_diff"] is None


class FakeClassifier:
    """What evaluate_models uses of a TritonClassifier, answering from fixed logits per file name."""

    def __init__(self, name: str, logits: dict[str, np.ndarray], labels: list[str], classes: int | None = None):
        self.url, self.protocol, self.labels, self.logits = "127.0.0.1:1", "grpc", labels, logits
        n = len(labels) if classes is None else classes
        self.model_info = ModelInfo(name, "INPUT__0", "FP32", "NCHW", (3, 224, 224), 8, "OUTPUT__0", n, False)
        self.top_k: int | None = None

    def classify_iter(self, sources: Iterable[Source], *, top_k: int, **_: object) -> Iterator[ClassificationResult]:
        self.top_k = top_k
        for source in sources:
            name = Path(source.name).name
            if name not in self.logits:
                yield ClassificationResult(source.name, error="not an image (Pillow cannot identify it)")
            else:
                yield ClassificationResult(source.name, top_k_from_logits(self.logits[name], self.labels, top_k))


@pytest.fixture
def small_set(tmp_path: Path):
    """Six classes; a.jpg, b.jpg in class 0, c.jpg in class 2, d.jpg in class 5, bad.jpg in class 2."""
    labels = [f"n0000000{i} class {i}" for i in range(6)]
    for rel in ("0/a.jpg", "0/b.jpg", "2/c.jpg", "2/bad.jpg", "5/d.jpg"):
        touch(tmp_path / rel)
    logits = {
        "a.jpg": np.array([9.0, 8, 7, 6, 5, 4]),  # class 0: top-1
        "b.jpg": np.array([1.0, 8, 7, 6, 5, 4]),  # class 0: 6th, miss
        "c.jpg": np.array([9.0, 8, 7, 6, 5, 4]),  # class 2: 3rd, top-5
        "d.jpg": np.array([0.0, 0, 0, 0, 0, 1]),  # class 5: top-1
    }
    return load_dataset(tmp_path, labels), labels, logits


def test_evaluate_models_scores_one_model_and_names_failures(small_set) -> None:
    data, labels, logits = small_set
    clf = FakeClassifier("m", logits, labels)
    ticks = []
    clock = iter([10.0, 12.0])
    (ev,) = evaluate_models(data, [clf], progress=ticks.append, clock=lambda: next(clock))  # type: ignore[list-item]
    assert clf.top_k == 5 and len(ticks) == 5
    assert ev.accuracy is not None and ev.agreement is None
    assert (ev.accuracy.top1.correct, ev.accuracy.top5.correct, ev.accuracy.top1.total) == (2, 3, 4)
    assert ev.classified == 4 and [Path(n).name for n, _ in ev.failed] == ["bad.jpg"]
    d = ev.to_dict(worst=2)
    assert json.loads(json.dumps(d)) == d
    assert d["model"] == "m" and d["images"] == 5 and d["classified"] == 4 and d["elapsed_s"] == 2.0
    assert d["dataset"] == {"root": str(data.root), "layout": "image folder", "images": 5, "classes": 3}
    assert d["failed"] == [
        {"input": str(data.root / "2" / "bad.jpg"), "error": "not an image (Pillow cannot identify it)"}
    ]
    assert d["top1"] == {"correct": 2, "total": 4, "accuracy": 0.5, "ci95": pytest.approx(list(wilson_interval(2, 4)))}
    assert d["top5"]["correct"] == 3 and d["top5"]["accuracy"] == 0.75
    assert [(c["class_id"], c["accuracy"]) for c in d["worst_classes"]] == [(2, 0.0), (0, 0.5)]
    assert d["images_per_s"] == 2.0 and d["agreement"] is None

    text = format_report(ev, worst=2)
    lines = text.splitlines()
    assert lines[0] == f"m on {data.root} (image folder): 5 images in 3 classes"
    assert lines[1] == "classified 4 of 5 images in 2.0 s (2.0 img/s)"
    assert lines[2] == "failed 1 (left out of the figures):"
    assert lines[3] == f"  {data.root / '2' / 'bad.jpg'}: not an image (Pillow cannot identify it)"
    assert lines[5:8] == [
        "       accuracy  correct / images  95% CI (Wilson)",
        "top-1   50.00 %        2 / 4       15.00 % - 85.00 %",
        "top-5   75.00 %        3 / 4       30.06 % - 95.44 %",
    ]
    assert "worst 2 of 3 classes by top-1 accuracy:" in text
    assert "      2    0.00 %        0 / 1       n00000002 class 2" in text


def test_evaluate_models_compares_with_the_first_model(small_set) -> None:
    data, labels, logits = small_set
    other = {k: v.copy() for k, v in logits.items()}
    other["a.jpg"][1] = 9.5  # top-1 flips to class 1 on a.jpg; logit differs by 1.5
    ref, alt = FakeClassifier("ref", logits, labels), FakeClassifier("alt", other, labels)
    first, second = evaluate_models(data, [ref, alt])  # type: ignore[list-item]
    assert ref.top_k == alt.top_k == 6  # every class's logit
    assert first.agreement is None and second.agreement is not None
    agree = second.agreement.to_dict()
    assert agree["images"] == 4 and agree["top1_agreement"] == 0.75 and agree["max_abs_logit_diff"] == 1.5
    assert agree["top5_overlap"] == 1.0
    assert second.accuracy is not None and second.accuracy.top1.correct == 1
    table = format_comparison([first, second])
    lines = table.splitlines()
    assert lines[1] == "each model classified 4 of 5 images in 0.0 s"
    assert lines[-3:] == [
        "model     top-1     top-5  top-1 agreement  top-5 overlap  max|logit diff|",
        "ref     50.00 %   75.00 %      (reference)",
        "alt     25.00 %   75.00 %          75.00 %       100.00 %          1.5e+00",
    ]
    assert f"  {data.root / '2' / 'bad.jpg'}: not an image" in table  # failed on both: named once


def test_unlabelled_compare_and_class_count_checks(small_set, tmp_path: Path) -> None:
    data, labels, logits = small_set
    flat = load_dataset(data.root, labels, unlabelled=True)
    first, second = evaluate_models(flat, [FakeClassifier("a", logits, labels), FakeClassifier("b", logits, labels)])  # type: ignore[list-item]
    assert first.accuracy is None and second.agreement is not None and second.agreement.top1.accuracy == 1.0
    assert first.to_dict()["top1"] is None and first.to_dict()["worst_classes"] == []
    table = format_comparison([first, second])
    assert table.splitlines()[-3:] == [
        "model  top-1 agreement  top-5 overlap  max|logit diff|",
        "a          (reference)",
        "b             100.00 %       100.00 %          0.0e+00",
    ]
    with pytest.raises(DatasetError, match="output 7 classes but the label list has 6"):
        evaluate_models(data, [FakeClassifier("m", logits, labels, classes=7)])  # type: ignore[list-item]
    with pytest.raises(DatasetError, match="different numbers of classes"):
        evaluate_models(data, [FakeClassifier("a", logits, labels), FakeClassifier("b", logits, labels, 7)])  # type: ignore[list-item]


# ----------------------------------------------------------------------------------------- command line


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_shared_options_are_classify_s_own() -> None:
    ours = {a.dest: a for a in build_parser()._actions}
    theirs = {a.dest: a for a in classify_cli.build_parser()._actions}
    for dests in SHARED_OPTIONS.values():
        for dest in dests:
            assert ours[dest] is theirs[dest] or (ours[dest].option_strings, ours[dest].help) == (
                theirs[dest].option_strings,
                theirs[dest].help,
            )
    text = build_parser().format_help()
    for needle in ("--compare", "--label-file", "WordNet id", "Wilson", "exit status", "  1  some images failed"):
        assert needle in text, needle


@pytest.mark.parametrize(
    "argv",
    [[], ["d", "--compare", "a"], ["d", "--compare", "a,a"], ["d", "-m", "x", "--compare", "a,b"], ["d", "-b", "0"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv, out=io.StringIO(), err=io.StringIO())
    assert exc.value.code == 2


def test_image_set_errors_exit_2_before_any_connection(tmp_path: Path) -> None:
    touch(tmp_path / "n99999999" / "a.jpg")
    port = f"127.0.0.1:{free_port()}"
    code, out, err = run_cli([str(tmp_path), "-u", port, "--timeout", "30"])
    assert code == 2 and out == "" and err.startswith("error: class folder") and "n99999999" in err
    code, _, err = run_cli([str(tmp_path), "--unlabelled", "-u", port])
    assert code == 2 and "nothing to score" in err and "--compare" in err
    code, _, err = run_cli([str(tmp_path), "--labels", str(tmp_path / "none.txt")])
    assert code == 2 and "cannot read the label list" in err


def test_server_down_exits_3(tmp_path: Path) -> None:
    touch(tmp_path / "0" / "a.jpg")
    code, out, err = run_cli([str(tmp_path), "-u", f"127.0.0.1:{free_port()}", "--timeout", "1", "-i", "http"])
    assert code == 3 and out == ""
    assert err.startswith("error: Triton server at 127.0.0.1:") and "not reachable after 1 s" in err


def test_evaluate_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import resnext_triton.client.evaluate as e\n"
        "e.build_parser().format_help()\n"
        "from resnext_triton.client.dataset import load_dataset\n"
        "from resnext_triton.client.evaluation import evaluate_models\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'torchvision'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_launcher_runs_from_a_checkout_without_the_package_installed(tmp_path: Path) -> None:
    import numpy

    env = dict(os.environ, PYTHONPATH=str(Path(numpy.__file__).parent.parent))
    run = {"capture_output": True, "text": True, "timeout": 120, "check": False, "env": env, "cwd": tmp_path}
    proc = subprocess.run([sys.executable, "-S", str(LAUNCHER), "--help"], **run)  # type: ignore[call-overload]
    assert proc.returncode == 0, proc.stderr
    assert "usage: evaluate.py" in proc.stdout and "exit status" in proc.stdout
