"""The client against the real local Triton: golden top-5 vs the eager model, bad inputs, image modes, failures."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_triton.client import ModelNotReady, TritonClassifier
from resnext_triton.client.cli import EXIT_INPUT_FAILED, EXIT_OK, EXIT_SERVER, main
from resnext_triton.client.results import ClassificationResult
from resnext_triton.preprocess import preprocess_path
from resnext_triton.spec import Format

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "client" / "classify.py"
FORMATS = [Format.ONNX, Format.TORCHSCRIPT]
PROTOCOLS = ["grpc", "http"]
PROB_ATOL = 1e-5
LOGIT_ATOL = 1e-3
ALL = 1000  # top_k that returns every class: the full logit vector


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def address(triton_server, protocol: str) -> str:
    return triton_server.grpc_url if protocol == "grpc" else triton_server.http_address


def logits_of(result: ClassificationResult) -> np.ndarray:
    """The full logit vector of a result classified with top_k=1000."""
    assert result.ok, result.error
    out = np.empty(len(result.predictions))
    for p in result.predictions:
        out[p.class_id] = p.logit
    return out


@pytest.fixture(scope="module")
def photo_files(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The real photos (grace_hopper, chelsea, coffee, astronaut, rocket, camera) written to files."""
    out = tmp_path_factory.mktemp("photos")
    files = []
    for path in photos:
        target = out / path.name
        target.write_bytes(path.read_bytes())
        files.append(target)
    return files


@pytest.fixture(scope="module")
def eager_logits(exported_repo, photo_files: list[Path]) -> np.ndarray:
    """The eager torch model's logits on the client's preprocessing of each photo."""
    import torch

    batch = np.stack([preprocess_path(p) for p in photo_files])
    model = exported_repo.eager.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).double().numpy()


def assert_same_top5(result: ClassificationResult, logits: np.ndarray) -> None:
    """Same top-5 classes in the same order (a pair closer than the numeric tolerance may swap)."""
    assert result.ok, result.error
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    expected = list(np.argsort(-logits, kind="stable")[:5])
    got = [p.class_id for p in result.predictions]
    assert len(got) == 5
    assert set(got) == set(expected) or _near_boundary(logits, expected), (got, expected)
    for rank, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e or abs(logits[g] - logits[e]) < LOGIT_ATOL, f"rank {rank + 1}: {g} vs {e}"
    for p in result.predictions:
        assert p.probability == pytest.approx(probs[p.class_id], abs=PROB_ATOL)
        assert p.logit == pytest.approx(logits[p.class_id], abs=LOGIT_ATOL)


def _near_boundary(logits: np.ndarray, expected: list[int]) -> bool:
    order = np.sort(logits)[::-1]
    return bool(order[4] - order[5] < LOGIT_ATOL)


# ----------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.value)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_top5_through_triton_equals_the_eager_model(
    triton_server, photo_files: list[Path], eager_logits: np.ndarray, protocol: str, fmt: Format
) -> None:
    model = triton_server.models[fmt]
    with TritonClassifier(address(triton_server, protocol), protocol, model, timeout_s=30) as clf:
        info = clf.wait_until_ready()
        assert (info.name, info.input_name, info.datatype, info.layout) == (model, "INPUT__0", "FP32", "NCHW")
        results = clf.classify(photo_files, top_k=5, batch_size=4, concurrency=2)
    assert [r.input for r in results] == [str(p) for p in photo_files]
    for result, logits in zip(results, eager_logits, strict=True):
        assert_same_top5(result, logits)
    assert results[0].predictions[0].label == triton_server.spec.labels()[results[0].predictions[0].class_id]


def test_model_is_discovered_from_the_index_onnx_first(triton_server) -> None:
    with TritonClassifier(triton_server.grpc_url, "grpc", timeout_s=30) as clf:
        assert clf.wait_until_ready().name == triton_server.models[Format.ONNX]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_topk_reports_triton_logits(triton_server, photo_files: list[Path], protocol: str) -> None:
    with TritonClassifier(address(triton_server, protocol), protocol, timeout_s=30) as clf:
        (local,) = clf.classify(photo_files[:1], top_k=5)
        (remote,) = clf.classify(photo_files[:1], top_k=5, server_topk=True)
    assert remote.ok, remote.error
    assert [p.class_id for p in remote.predictions] == [p.class_id for p in local.predictions]
    for r, loc in zip(remote.predictions, local.predictions, strict=True):
        assert r.probability is None
        assert r.logit == pytest.approx(loc.logit, abs=1e-4)
        assert r.label == loc.label


# ----------------------------------------------------------------------------------------- CLI


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, photo_files: list[Path]) -> dict[str, str]:
    """One input of each bad kind, by kind."""
    d = tmp_path_factory.mktemp("bad")
    (d / "zero.jpg").write_bytes(b"")
    good = photo_files[0].read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "notes.png").write_text("this is not an image\n")
    Image.new("1", (10_000, 10_000)).save(d / "bomb.png")  # 100 megapixels, a few kilobytes
    unreadable = d / "unreadable.jpg"
    unreadable.write_bytes(good)
    unreadable.chmod(0)
    kinds = {
        "zero-byte": str(d / "zero.jpg"),
        "truncated": str(d / "truncated.jpg"),
        "non-image": str(d / "notes.png"),
        "bomb": str(d / "bomb.png"),
        "missing": str(d / "missing.jpg"),
        "url": f"http://127.0.0.1:{free_port()}/photo.jpg",
        "glob": str(d / "*.nothing"),
    }
    if os.access(unreadable, os.R_OK):  # root reads anything: no unreadable file to test with
        unreadable.unlink()
    else:
        kinds["unreadable"] = str(unreadable)
    return kinds


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_inputs_fail_alone_in_a_mixed_batch(
    triton_server, photo_files: list[Path], bad_inputs: dict[str, str], eager_logits: np.ndarray
) -> None:
    good = [str(p) for p in photo_files[:4]]
    bad = list(bad_inputs.values())
    args = [good[0], bad[0], bad[1], good[1], *bad[2:5], good[2], *bad[5:], good[3]]
    code, out, err = _run_cli([*args, "-u", triton_server.grpc_url, "--json", "-b", "3", "--url-timeout", "2"])
    assert code == EXIT_INPUT_FAILED, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["input"] for line in lines] == args
    by_input = {line["input"]: line for line in lines}
    for i, path in enumerate(good):
        line = by_input[path]
        assert line["error"] is None and len(line["predictions"]) == 5
        assert line["predictions"][0]["class_id"] == int(np.argmax(eager_logits[i]))
    for kind, arg in bad_inputs.items():
        line = by_input[arg]
        assert line["predictions"] == [] and isinstance(line["error"], str) and line["error"], kind
    assert "empty" in by_input[bad_inputs["zero-byte"]]["error"]
    assert "decompression bomb" in by_input[bad_inputs["bomb"]]["error"]
    assert "not an image" in by_input[bad_inputs["non-image"]]["error"]
    assert "unreachable" in by_input[bad_inputs["url"]]["error"]
    assert "no files match" in by_input[bad_inputs["glob"]]["error"]
    assert "classified 4 of" in err


def test_table_output_and_exit_0(triton_server, photo_files: list[Path]) -> None:
    code, out, err = _run_cli([str(photo_files[0]), "-i", "http", "-u", triton_server.http_url, "-k", "3"])
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0] == str(photo_files[0]) and lines[1].split() == ["rank", "class", "probability", "label"]
    assert len(lines) == 5
    assert f"model {triton_server.models[Format.ONNX]} (picked " in err


def test_directory_and_url_inputs(triton_server, photo_files: list[Path]) -> None:
    served = photo_files[0].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(served)))
            self.end_headers()
            self.wfile.write(served)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{photo_files[0].name}"
        code, out, err = _run_cli([url, str(photo_files[0].parent), "-u", triton_server.grpc_url, "--json", "-k", "3"])
    finally:
        server.shutdown()
        server.server_close()
    assert code == EXIT_OK, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["input"] for line in lines[1:]] == sorted(str(p) for p in photo_files)
    from_file = next(line for line in lines[1:] if line["input"] == str(photo_files[0]))
    assert [p["class_id"] for p in lines[0]["predictions"]] == [p["class_id"] for p in from_file["predictions"]]


def test_a_symlink_loop_is_skipped_with_a_warning_and_a_fifo_is_not_a_regular_file(
    triton_server, photo_files: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(photo_files[0].read_bytes())
    (folder / "sub" / "b.jpg").write_bytes(photo_files[0].read_bytes())
    (folder / "sub" / "up").symlink_to("..")  # walking it would go round and round
    fifo = folder / "sub" / "pipe.jpg"
    os.mkfifo(fifo)  # reading it would block until a writer comes
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), str(folder), str(fifo), "-u", triton_server.grpc_url, "--json", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == EXIT_INPUT_FAILED, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["input"] for line in lines] == [str(folder / "a.jpg"), str(folder / "sub" / "b.jpg"), str(fifo)]
    assert lines[0]["error"] is None and lines[1]["error"] is None
    assert lines[0]["predictions"] == lines[1]["predictions"]
    assert lines[2]["error"] == f"not a regular file (a FIFO): {fifo}"
    assert proc.stderr == (
        f"WARNING resnext_triton.client.inputs: skipping {folder}/sub/up: "
        "a symbolic link loop (it leads back to a directory above it)\n"
    )


# ----------------------------------------------------------------------------------------- modes


@pytest.fixture(scope="module")
def variants(photo_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same pictures in other encodings: CMYK JPEG, RGBA PNG, 16-bit PNG, EXIF-rotated JPEG."""
    d = tmp_path_factory.mktemp("variants")
    with Image.open(photo_files[0]) as img:
        rgb = img.convert("RGB")
    gray = Image.open(next(p for p in photo_files if p.name == "camera.png")).convert("L")
    out = {"rgb.png": rgb, "gray8.png": gray}
    paths = {name: d / name for name in out}
    for name, img in out.items():
        img.save(paths[name])
    rgb.save(paths.setdefault("rgb.jpg", d / "rgb.jpg"), quality=95)
    rgb.convert("CMYK").save(paths.setdefault("cmyk.jpg", d / "cmyk.jpg"), quality=95)
    rgba = rgb.copy()
    rgba.putalpha(255)
    rgba.save(paths.setdefault("rgba.png", d / "rgba.png"))
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(paths.setdefault("gray16.png", d / "gray16.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise; viewers turn it clockwise
    stored = rgb.transpose(Image.Transpose.ROTATE_90)
    stored.save(paths.setdefault("rotated.jpg", d / "rotated.jpg"), quality=95, exif=exif.tobytes())
    stored.save(paths.setdefault("sideways.jpg", d / "sideways.jpg"), quality=95)
    # what an EXIF-aware viewer shows of rotated.jpg, stored losslessly: the very pixels to expect
    with Image.open(paths["sideways.jpg"]) as sideways:
        sideways.transpose(Image.Transpose.ROTATE_270).save(paths.setdefault("upright.png", d / "upright.png"))
    # the CMYK JPEG as Pillow converts it to RGB, stored losslessly
    with Image.open(paths["cmyk.jpg"]) as cmyk:
        cmyk.convert("RGB").save(paths.setdefault("cmyk_as_rgb.png", d / "cmyk_as_rgb.png"))
    return paths


def test_cmyk_rgba_16bit_and_rotated_images_classify_correctly(triton_server, variants: dict[str, Path]) -> None:
    names = list(variants)
    with TritonClassifier(triton_server.grpc_url, "grpc", timeout_s=30) as clf:
        results = dict(zip(names, clf.classify([variants[n] for n in names], top_k=ALL, batch_size=1), strict=True))
    logits = {name: logits_of(r) for name, r in results.items()}

    def top5(name: str) -> list[int]:
        return list(np.argsort(-logits[name], kind="stable")[:5])

    # lossless re-encodings: the very same pixels, the very same logits
    np.testing.assert_allclose(logits["rgba.png"], logits["rgb.png"], atol=1e-4)
    np.testing.assert_allclose(logits["gray16.png"], logits["gray8.png"], atol=1e-4)
    # EXIF orientation applied: exactly the pixels of the upright picture (the same JPEG decoded, turned)
    np.testing.assert_allclose(logits["rotated.jpg"], logits["upright.png"], atol=1e-4)
    assert top5("rotated.jpg") == top5("upright.png")
    assert np.abs(logits["rotated.jpg"] - logits["sideways.jpg"]).mean() > 1e-3  # it was turned
    # CMYK: exactly Pillow's conversion to RGB, and the same picture (closer to it than turned sideways)
    np.testing.assert_allclose(logits["cmyk.jpg"], logits["cmyk_as_rgb.png"], atol=1e-4)
    reference = np.abs(logits["sideways.jpg"] - logits["rgb.jpg"]).mean()
    assert np.abs(logits["cmyk.jpg"] - logits["rgb.jpg"]).mean() < reference


# ----------------------------------------------------------------------------------------- failures


def test_server_down_gives_a_clear_message_and_exit_3_within_the_timeout(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), str(tmp_path / "x.jpg"), "-u", f"127.0.0.1:{port}", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == EXIT_SERVER
    assert proc.stdout == ""
    assert (
        proc.stderr.strip()
        == f"error: Triton server at 127.0.0.1:{port} (grpc) is not reachable after 2 s: connection refused"
    )
    assert elapsed < 2 + 5  # the timeout plus interpreter start-up


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_not_loaded_gives_a_clear_message(triton_server, protocol: str, tmp_path: Path) -> None:
    missing = triton_server.spec.model_name(Format.TENSORRT)  # a plan cannot load on a CPU host
    code, out, err = _run_cli(
        [
            str(tmp_path / "x.jpg"),
            "-i",
            protocol,
            "-u",
            address(triton_server, protocol),
            "-m",
            missing,
            "--timeout",
            "5",
        ]
    )
    assert code == EXIT_SERVER and out == ""
    assert err.startswith(f"error: model '{missing}' is not") and "Traceback" not in err
    assert triton_server.models[Format.ONNX] in err  # names what is there
    with TritonClassifier(address(triton_server, protocol), protocol, "no_such_model", timeout_s=5) as clf:
        started = time.monotonic()
        with pytest.raises(ModelNotReady, match="no_such_model"):
            clf.wait_until_ready()
        assert time.monotonic() - started < 2  # not retried


def test_batch_larger_than_the_model_allows_is_refused(triton_server, photo_files: list[Path]) -> None:
    code, _, err = _run_cli([str(photo_files[0]), "-u", triton_server.grpc_url, "-b", "1000"])
    assert code == EXIT_SERVER and "exceeds the max_batch_size" in err
