"""The benchmark library without a server: perf_analyzer CSV/console parsing, settings, URLs, ratios, reports.

No assertion here is about speed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnext_triton.bench import candidates as cand
from resnext_triton.bench import cli, machine, perf, perf_csv, report, serving, sweep, sweep_report
from resnext_triton.bench import config_search as cs
from resnext_triton.bench.baseline_suite import BaselineReport
from resnext_triton.bench.baselines import BaselineResult, cycle, model_only
from resnext_triton.bench.preprocessing import PreprocessTiming
from resnext_triton.bench.ratios import compute_ratios
from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.config import ServingOptions, parse_pbtxt
from resnext_triton.triton.repository import write_configs

ROOT = Path(__file__).resolve().parent.parent

# A report perf_analyzer 2.51 wrote with -f and --verbose-csv (latencies in microseconds).
CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,\
request/response,response wait
2,12.3075,66,1371,77614,111,80364,155,2,160343,166050,168254,169293,66,157770
"""

UNSTABLE_OUTPUT = """\
 Successfully read data for 1 stream/streams with 6 step/steps.
Request concurrency: 1
  Pass [1] throughput: 5.97363 infer/sec. p95 latency: 862783 usec
  Pass [2] throughput: 3.98415 infer/sec. p95 latency: 881735 usec
  Pass [3] throughput: 4.5 infer/sec. p95 latency: 868147 usec
  Pass [4] throughput: 3.99059 infer/sec. p95 latency: 870000 usec
Failed to obtain stable measurement within 4 measurement windows for concurrency 1.
Failed to obtain stable measurement.
"""


def test_parse_csv_and_point(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(CSV)
    run = perf.PerfRun("m", "grpc", "127.0.0.1:1", batch=1, concurrency=2)
    point = perf_csv.point_from_csv(run, path)
    assert point.throughput == pytest.approx(12.3075)
    assert point.p50_ms == pytest.approx(160.343)
    assert point.p95_ms == pytest.approx(168.254)
    assert point.p99_ms == pytest.approx(169.293)
    assert point.server_queue_ms == pytest.approx(77.614)
    assert point.server_infer_ms == pytest.approx(80.364)
    assert point.ok


def test_parse_csv_without_data_row(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(CSV.splitlines()[0] + "\n")
    with pytest.raises(perf_csv.PerfAnalyzerError, match="no data row"):
        perf_csv.parse_csv(path)


def test_unstable_point_from_windows() -> None:
    run = perf.PerfRun("m", "http", "127.0.0.1:1", batch=4, concurrency=1)
    assert [round(t, 2) for t, _, _ in perf_csv.parse_passes(UNSTABLE_OUTPUT)] == [5.97, 3.98, 4.5, 3.99]
    point = perf_csv.point_from_passes(run, UNSTABLE_OUTPUT)
    assert point is not None and not point.stable and point.ok
    assert point.throughput == pytest.approx(3.99059)  # median of the last three windows
    assert point.p95_ms == pytest.approx(870.0)
    assert point.p50_ms is None and "unstable" in point.note
    assert perf_csv.point_from_passes(run, "Failed to obtain stable measurement.") is None


def test_run_perf_with_a_fake_binary(tmp_path: Path) -> None:
    """run_perf passes count_windows/stability options, keeps the CSV and log, and reports failures."""
    fake = tmp_path / "perf_analyzer"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$@" > "$(dirname "$0")/args.txt"\n'
        'while [ $# -gt 0 ]; do [ "$1" = "-f" ] && out="$2"; shift; done\n'
        f"cat > \"$out\" <<'EOF'\n{CSV}EOF\n"
    )
    fake.chmod(0o755)
    settings = perf.MeasureSettings(window_images=8, min_requests=2, stability_percentage=15, max_trials=5)
    run = perf.PerfRun("resnext101_32x4d_onnx", "grpc", "127.0.0.1:9", batch=4, concurrency=2)
    point = perf.run_perf(run, settings, tmp_path / "raw", input_data=tmp_path / "in.json", binary=fake)
    args = (tmp_path / "args.txt").read_text().split()
    for flag, value in (("--measurement-mode", "count_windows"), ("--measurement-request-count", "4"),
                        ("--stability-percentage", "15"), ("--max-trials", "5"), ("--percentile", "95"),
                        ("-b", "4"), ("--concurrency-range", "2:2"), ("-i", "grpc"), ("-u", "127.0.0.1:9")):
        assert args[args.index(flag) + 1] == value, flag
    assert "--verbose-csv" in args
    assert point.ok and point.stable and Path(point.csv or "").is_file() and Path(point.log or "").is_file()

    fake.write_text("#!/bin/sh\necho 'error: failed to get model metadata' >&2\nexit 99\n")
    failed = perf.run_perf(run, settings, tmp_path / "raw2", binary=fake)
    assert not failed.ok and "exit 99" in (failed.error or "") and "model metadata" in (failed.error or "")


def test_measure_settings() -> None:
    s = perf.MeasureSettings(window_images=32, min_requests=4)
    assert [s.request_count(b) for b in (1, 4, 8, 64)] == [32, 8, 4, 4]
    assert s.request_count(8, concurrency=4) == 8 and s.request_count(1, concurrency=4) == 32
    with pytest.raises(ValueError):
        perf.MeasureSettings(max_trials=2)
    with pytest.raises(ValueError):
        perf.MeasureSettings(stability_percentage=0)
    with pytest.raises(ValueError):
        perf.PerfRun("m", "udp", "x:1", 1, 1)


def test_input_data_holds_the_real_tensors(tmp_path: Path) -> None:
    batch = np.random.default_rng(0).standard_normal((3, 3, 4, 4), dtype=np.float32)
    path = perf.write_input_data(batch, "INPUT__0", tmp_path / "in.json")
    data = json.loads(path.read_text())["data"]
    assert len(data) == 3
    first = data[0]["INPUT__0"]
    assert first["shape"] == [3, 4, 4]
    decoded = np.frombuffer(base64.b64decode(first["content"]["b64"]), dtype="<f4").reshape(3, 4, 4)
    np.testing.assert_array_equal(decoded, batch[0])
    with pytest.raises(ValueError):
        perf.write_input_data(batch.astype(np.float64), "INPUT__0", tmp_path / "x.json")


def test_best_point_respects_the_budget() -> None:
    def pt(c: int, thr: float, p95: float) -> perf_csv.PerfPoint:
        return perf_csv.PerfPoint("m", "grpc", 1, c, "default", throughput=thr, p95_ms=p95)

    points = [pt(1, 10.0, 90.0), pt(2, 12.0, 170.0), pt(4, 12.5, 330.0),
              perf_csv.PerfPoint("m", "grpc", 1, 8, "default", error="boom")]
    assert perf_csv.best_point(points).concurrency == 4
    assert perf_csv.best_point(points, p95_budget_ms=200).concurrency == 2
    assert perf_csv.best_point(points, p95_budget_ms=50) is None
    points.append(perf_csv.PerfPoint("m", "grpc", 1, 3, "default", throughput=13.0, p95_ms=190.0, stable=False))
    assert perf_csv.best_point(points, p95_budget_ms=200).concurrency == 3
    assert perf_csv.best_point(points, p95_budget_ms=200, prefer_stable=True).concurrency == 2
    assert perf_csv.best_point(points[-1:], prefer_stable=True).concurrency == 3  # no stable point: take what there is


def test_cuda_runtime_on_library_path() -> None:
    env = perf.perf_env({"LD_LIBRARY_PATH": "/x"})
    lib = perf.cuda_runtime_lib_dir()
    if lib is None:
        pytest.skip("nvidia-cuda-runtime-cu12 is not installed (the bench extra)")
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [str(lib), "/x"]


@pytest.mark.parametrize("text, expected", [
    ("grpc://127.0.0.1:8001", ("grpc", "127.0.0.1:8001")),
    ("HTTP://127.0.0.1:8000/", ("http", "127.0.0.1:8000")),
])
def test_parse_url(text: str, expected: tuple[str, str]) -> None:
    assert serving.parse_url(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:8001", "ftp://h:1", "grpc://127.0.0.1", "grpc://:80"])
def test_parse_url_rejects(text: str) -> None:
    with pytest.raises(serving.EndpointError):
        serving.parse_url(text)


def test_two_urls_for_one_protocol() -> None:
    with pytest.raises(serving.EndpointError, match="two URLs"):
        serving.endpoints_from_urls(["grpc://127.0.0.1:1", "grpc://127.0.0.1:2"])


def test_argument_types() -> None:
    assert cli.int_list("1,2,4,2") == [1, 2, 4]
    for bad in ("0", "a", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.int_list(bad)
    assert cli.name_list(("grpc", "http"))("HTTP,grpc") == ["http", "grpc"]
    with pytest.raises(argparse.ArgumentTypeError):
        cli.name_list(("grpc", "http"))("udp")
    args = sweep.build_parser().parse_args(["-b", "1,8", "-c", "1,2", "--protocols", "grpc", "--no-baselines"])
    assert (args.batch_sizes, args.concurrency, args.protocols, args.no_baselines) == ([1, 8], [1, 2], ["grpc"], True)


def _points() -> list[perf_csv.PerfPoint]:
    onnx, ts = ModelSpec().model_name(Format.ONNX), ModelSpec().model_name(Format.TORCHSCRIPT)
    return [
        perf_csv.PerfPoint(onnx, "grpc", 4, 1, "default", throughput=9.5, p50_ms=400, p95_ms=420, p99_ms=430),
        perf_csv.PerfPoint(onnx, "grpc", 4, 2, "default", throughput=10.0, p50_ms=790, p95_ms=800, p99_ms=810),
        perf_csv.PerfPoint(onnx, "http", 4, 1, "default", throughput=9.0, p95_ms=440, stable=False, note="unstable"),
        perf_csv.PerfPoint(ts, "grpc", 4, 1, "default", throughput=7.0, p50_ms=560, p95_ms=580, p99_ms=590),
        perf_csv.PerfPoint(ts, "grpc", 4, 2, "default", error="exit 1: boom"),
    ]


def _baselines() -> BaselineReport:
    return BaselineReport(
        results=[
            BaselineResult("ONNX Runtime in-process", 4, 40, 4.0, [400.0] * 10),
            BaselineResult("torch.hub example (eager + PIL)", 8, 48, 8.0, [1300.0] * 6),
            BaselineResult("classify.py end to end (grpc)", 8, 48, 6.0),
        ],
        preprocessing=[PreprocessTiming("single", 100, 1.0, 1, True), PreprocessTiming("threaded", 100, 0.55, 2, True)],
        sgemm=machine.SgemmResult(n=256, numpy_gflops=160.0, torch_gflops=None),
    )


def test_ratios() -> None:
    ratios = {r.key: r for r in compute_ratios(_points(), _baselines(), ModelSpec(), baseline_batch=8)}
    assert ratios["a/b4"].value == pytest.approx(10.0 / 10.0) and ratios["a/b4"].met
    assert "HTTP 0.90" in ratios["a/b4"].note
    assert ratios["b"].value == pytest.approx(8.0 / 6.0) and ratios["b"].met is False  # 8 img/s vs 6 img/s
    assert ratios["c"].value == pytest.approx(1.0 / 0.55) and ratios["c"].met
    assert ratios["d"].value == pytest.approx(10.0 / 10.0) and ratios["d"].met is None  # 160/16 = 10 img/s
    assert "no goal" in ratios["d"].line() and "BELOW goal" in ratios["b"].line()


def test_ratios_not_measured() -> None:
    ratios = compute_ratios([], BaselineReport(), ModelSpec(), baseline_batch=8)
    assert {r.key for r in ratios} == {"b", "c", "d"}
    assert all(r.value is None and r.verdict == "not measured" for r in ratios)


def test_summary_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    points, base = _points(), _baselines()
    ratios = compute_ratios(points, base, ModelSpec(), baseline_batch=8)
    meta = {"run": "r1", "command": "python bench/perf_sweep.py -b 4", "machine": machine.machine_info(),
            "load_before": "l0", "load_after": "l1", "photos": ["a.jpg"], "settings": "s", "seconds": 1.0,
            "triton_version": "2.51.0", "perf_analyzer": "Perf Analyzer Version 2.51.0"}
    sweep_report.write_results(tmp_path, meta, points, base, ratios, plot=True, echo=lambda _: None)
    summary = (tmp_path / report.SUMMARY_FILE).read_text()
    assert "`python bench/perf_sweep.py -b 4`" in summary
    assert "| resnext101_32x4d_onnx | grpc | default | 4 | 2 | 10.00 | 790.0 | 800.0 | 810.0 |" in summary
    assert "error: exit 1: boom" in summary
    assert "(b) classify.py end to end / torch.hub example loop | 1.33 | >= 1.5 | BELOW goal" in summary
    png = (tmp_path / report.PLOT_FILE).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    data = json.loads((tmp_path / report.RESULTS_FILE).read_text())
    assert len(data["served"]) == 5 and data["ratios"][0]["key"] == "a/b4"


def test_markdown_table_alignment() -> None:
    table = report.markdown_table(["name", "n"], [["a", "1.5"], ["b", "-"]])
    assert table.splitlines()[1] == "| --- | ---: |"


def test_model_only_baseline() -> None:
    calls = []
    result = model_only("fake", lambda batch: calls.append(batch.shape), np.zeros((3, 3, 2, 2), np.float32),
                        batch=2, images=5)
    assert calls[0] == (2, 3, 2, 2) and len(calls) == 1 + 3  # warm-up + ceil(5 / 2) batches
    assert result.images == 6 and result.throughput > 0 and len(result.latencies_ms) == 3
    assert cycle([Path("a"), Path("b")], 3) == [Path("a"), Path("b"), Path("a")]


def test_sgemm_and_machine() -> None:
    result = machine.measure_sgemm(128, repeats=1, use_torch=False)
    assert result.numpy_gflops > 0 and result.gflops == result.numpy_gflops
    assert result.images_per_s == pytest.approx(result.gflops / 16.0)
    info = machine.machine_info()
    assert info["cores"] >= 1 and "numpy" in info["versions"]
    assert machine.LoadSnapshot.now().line()


def _exported_like(repo: Path) -> Path:
    """A repository with the ONNX model's configs and a fake version 1."""
    spec = ModelSpec()
    model_dir = write_configs(repo, spec, Format.ONNX, ServingOptions())
    (model_dir / "1").mkdir()
    (model_dir / "1" / "model.onnx").write_bytes(b"not really onnx")
    return model_dir


def test_scratch_copy_and_configs_only(tmp_path: Path) -> None:
    """The search rewrites configs in a scratch copy with the exporter CLI; the source stays untouched."""
    source = _exported_like(tmp_path / "repo")
    before = {p.name: p.read_bytes() for p in (source / "config.pbtxt", source / "configs" / "cpu.pbtxt")}
    scratch = cand.scratch_copy(tmp_path / "repo", source.name, tmp_path / "scratch")
    assert (scratch / "1" / "model.onnx").read_bytes() == b"not really onnx"
    candidate = cand.Candidate(instances=2, max_batch_size=4, queue_delay_us=3000)
    cmd = cand.apply_configs(candidate, Format.ONNX, tmp_path / "scratch")
    assert "--configs-only" in cmd
    cpu = parse_pbtxt((scratch / "configs" / "cpu.pbtxt").read_text())
    assert cpu.max_batch_size == 4 and cpu.instance_group[0].count == 2
    assert cpu.dynamic_batching.max_queue_delay_microseconds == 3000
    after = {p.name: p.read_bytes() for p in (source / "config.pbtxt", source / "configs" / "cpu.pbtxt")}
    assert after == before
    assert (source / "1" / "model.onnx").read_bytes() == b"not really onnx"


def test_apply_command_and_winner(tmp_path: Path) -> None:
    candidate = cand.Candidate(2, 8, 5000)
    text = cand.apply_command(candidate, Format.ONNX, tmp_path / "model_repository")
    assert text.startswith("python export/export.py --configs-only --formats onnx --out ")
    assert text.endswith("--cpu-instances 2 --max-batch-size 8 --queue-delay-us 5000")
    # the printed command is one the exporter accepts
    proc = subprocess.run([sys.executable, str(ROOT / "export" / "export.py"),
                           *candidate.export_args(Format.ONNX, tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert parse_pbtxt((tmp_path / "out" / "resnext101_32x4d_onnx" / "configs" / "cpu.pbtxt").read_text()
                       ).max_batch_size == 8

    def result(inst: int, thr: float | None) -> cand.CandidateResult:
        best = perf_csv.PerfPoint("m", "grpc", 1, 1, "x", throughput=thr, p95_ms=1.0) if thr else None
        return cand.CandidateResult(cand.Candidate(inst, 4, 0), best=best)

    assert cand.winner([result(1, 10.0), result(2, 10.0), result(2, 11.0)]).best.throughput == 11.0
    assert cand.winner([result(2, 10.0), result(1, 10.0)]).candidate.instances == 1  # tie: fewer instances
    assert cand.winner([result(1, None)]) is None
    with pytest.raises(ValueError, match="TensorRT"):
        cand.model_format("resnext101_32x4d_tensorrt_fp16", ModelSpec())


def test_candidates_skip_delays_that_cannot_matter() -> None:
    grid = cand.candidates([1, 2], [1, 8], [0, 5000])
    assert [c.label for c in grid] == ["i1-mb1-d0", "i1-mb8-d0", "i1-mb8-d5000", "i2-mb1-d0", "i2-mb8-d0",
                                       "i2-mb8-d5000"]
    assert [c.label for c in cand.candidates([1], [1], [500])] == ["i1-mb1-d500"]


def test_cli_help() -> None:
    for script in ("perf_sweep.py", "config_search.py"):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_sweep_refuses_a_missing_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["--repo", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cs.main(["--repo", str(tmp_path), "--p95-budget-ms", "0", "--out", str(tmp_path)]) == 2


def test_formats_summary_shows_batches_and_an_unstable_point_without_its_percentiles() -> None:
    from resnext_triton.bench.formats import ratios, summary

    spec = ModelSpec()
    onnx, int8 = spec.model_name(Format.ONNX), spec.model_name(Format.ONNX_INT8)
    local = BaselineResult(onnx, batch=8, images=24, seconds=2.0, latencies_ms=[600.0, 610.0, 620.0]).to_dict()
    results = {
        "batch_size": 8,
        "in_process": {onnx: local, int8: {**local, "name": int8, "throughput": 24.0}},
        "perf": {onnx: {"throughput": 11.8, "p50_ms": 2585.0, "p95_ms": 2684.0, "stable": True},
                 int8: {"throughput": 32.0, "p50_ms": None, "p95_ms": 1163.0, "stable": False},
                 f"{onnx}_image": {"throughput": 10.3, "p50_ms": 374.0, "p95_ms": 490.0, "stable": True}},
        "client": {"tensor": {"model": onnx, "img_per_s": 11.5, "failed": []},
                   "pipeline": {"model": f"{onnx}_image", "img_per_s": 10.7, "failed": []}},
        "agreement": {}, "wire_bytes": {"tensor": 602112, "pipeline": 302019},
    }
    results["ratios"] = ratios(results, spec)
    assert results["ratios"]["int8_over_fp32_in_process"] == pytest.approx(2.0)
    assert results["ratios"]["int8_over_fp32_served"] == pytest.approx(32.0 / 11.8)
    text = summary(results, "python bench/formats.py -b 8")
    assert f"| {int8} | FP32 tensors | 8 | 32.00 (unstable) | n/a | 1163 |" in text
    assert f"| {onnx}_image | encoded files | 1 | 10.30 | 374 | 490 |" in text
    assert f"| {int8} in process | FP32 tensors | 8 | 24.00 | 610 | 619 |" in text
