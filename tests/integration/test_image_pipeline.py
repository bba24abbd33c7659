"""The image pipeline on the real local Triton: encoded bytes in, logits and labels out.

Parity is measured against the tensor endpoint fed by the client's preprocessing (the same module),
on the real photos and on valid-but-unusual images; bad images fail alone; curl works.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from resnext_triton.preprocess import preprocess_bytes
from resnext_triton.spec import Format
from resnext_triton.triton.ensemble import ensemble_name

pytestmark = pytest.mark.integration

PARITY_ATOL = 1e-5


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def unusual(photos) -> dict[str, bytes]:
    """Valid images in every awkward mode: CMYK, RGBA, palette, grayscale, 16-bit, EXIF-rotated, WebP, BMP, TIFF."""
    base = Image.open(photos[0]).convert("RGB")
    base.thumbnail((400, 400))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    gray16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    return {
        "cmyk.jpg": _encode(base.convert("CMYK"), "JPEG", quality=92),
        "rgba.png": _encode(rgba, "PNG"),
        "palette.png": _encode(base.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "gray.png": _encode(base.convert("L"), "PNG"),
        "gray16.png": _encode(gray16, "PNG"),
        "exif_rotated.jpg": _encode(base, "JPEG", quality=92, exif=exif),
        "photo.webp": _encode(base, "WEBP", quality=90),
        "photo.bmp": _encode(base, "BMP"),
        "photo.tiff": _encode(base, "TIFF"),
    }


def infer_bytes(client, model: str, data: bytes, class_count: int = 0):
    arr = np.frombuffer(data, dtype=np.uint8)[None, :]
    inp = grpcclient.InferInput("IMAGE", list(arr.shape), "UINT8")
    inp.set_data_from_numpy(arr)
    out = grpcclient.InferRequestedOutput("OUTPUT__0", class_count=class_count)
    return client.infer(model, [inp], outputs=[out]).as_numpy("OUTPUT__0")


def infer_tensor(client, model: str, pixels: np.ndarray) -> np.ndarray:
    inp = grpcclient.InferInput("INPUT__0", list(pixels.shape), "FP32")
    inp.set_data_from_numpy(pixels)
    return client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT__0")]).as_numpy("OUTPUT__0")


@pytest.mark.parametrize("fmt", [Format.ONNX, Format.TORCHSCRIPT])
def test_pipeline_matches_the_tensor_endpoint_on_photos_and_unusual_images(triton_server, photos, unusual, fmt):
    spec = triton_server.spec
    files = {Path(p).name: Path(p).read_bytes() for p in photos} | unusual
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    worst = 0.0
    try:
        for name, data in files.items():
            served = infer_bytes(client, ensemble_name(spec, fmt), data)[0]
            pixels = preprocess_bytes(data, spec.preprocessing)[None]
            direct = infer_tensor(client, spec.model_name(fmt), pixels)[0]
            diff = float(np.max(np.abs(served - direct)))
            worst = max(worst, diff)
            assert diff <= PARITY_ATOL, f"{name}: max|diff| {diff:.2e}"
            assert list(np.argsort(-served)[:5]) == list(np.argsort(-direct)[:5]), name
    finally:
        client.close()
    assert len(files) >= 14 and worst <= PARITY_ATOL


def test_classification_extension_on_the_pipeline(triton_server, photos):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        model = ensemble_name(triton_server.spec, Format.ONNX)
        top = infer_bytes(client, model, Path(photos[0]).read_bytes(), class_count=5)[0]
        logits = infer_bytes(client, model, Path(photos[0]).read_bytes())[0]
    finally:
        client.close()
    labels = triton_server.spec.labels()
    parsed = [t.decode().split(":", 2) for t in top]
    assert [int(index) for _, index, _ in parsed] == list(np.argsort(-logits)[:5])
    assert [label for _, _, label in parsed] == [labels[i] for i in np.argsort(-logits)[:5]]


def test_bad_images_fail_alone_and_the_server_stays_ready(triton_server, photos):
    """Truncated, not an image, a decompression bomb and an empty file, sent together with good photos."""
    good = Path(photos[0]).read_bytes()
    bomb = _encode(Image.new("1", (12000, 8000)), "PNG")  # 96 Mpx > Pillow's 89.5 Mpx limit
    cases = {
        "good-1": good,
        "truncated": good[: len(good) // 3],
        "not-an-image": b"this is not an image, just text\n" * 20,
        "bomb": bomb,
        "good-2": Path(photos[1]).read_bytes(),
        "empty": b"",
    }
    model = ensemble_name(triton_server.spec, Format.ONNX)

    def send(item):
        name, data = item
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        try:
            return name, infer_bytes(client, model, data), None
        except InferenceServerException as exc:
            return name, None, exc.message()
        finally:
            client.close()

    with ThreadPoolExecutor(len(cases)) as pool:  # together, so the dynamic batcher groups them
        results = {name: (out, err) for name, out, err in pool.map(send, cases.items())}
    for name in ("good-1", "good-2"):
        out, err = results[name]
        assert err is None and out.shape == (1, triton_server.spec.num_classes), (name, err)
    expected = {"truncated": "", "not-an-image": "not an image", "bomb": "decompression bomb", "empty": ""}
    for name, words in expected.items():
        out, err = results[name]
        assert out is None and err, f"{name} should fail"
        assert words in err, (name, err)
    http = httpclient.InferenceServerClient(triton_server.http_address)
    assert http.is_server_ready() and http.is_model_ready(model)
    http.close()


def _raw_request(data: bytes) -> tuple[bytes, int]:
    header = json.dumps({
        "inputs": [{"name": "IMAGE", "shape": [1, len(data)], "datatype": "UINT8",
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": "OUTPUT__0", "parameters": {"classification": 5}}],
    }).encode()
    return header + data, len(header)


def test_raw_http_request_with_the_binary_data_extension(triton_server, photos):
    """What any language can send: a JSON header followed by the file's bytes (README's curl request)."""
    model = ensemble_name(triton_server.spec, Format.ONNX)
    body, header_len = _raw_request(Path(photos[0]).read_bytes())
    request = urllib.request.Request(
        f"{triton_server.http_url}/v2/models/{model}/infer", data=body, method="POST",
        headers={"Inference-Header-Content-Length": str(header_len), "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    (output,) = answer["outputs"]
    assert output["name"] == "OUTPUT__0" and output["datatype"] == "BYTES" and len(output["data"]) == 5
    labels = triton_server.spec.labels()
    for entry in output["data"]:
        value, index, label = entry.split(":", 2)
        assert labels[int(index)] == label and float(value) == float(value)


def test_readme_curl_command(triton_server, photos, tmp_path):
    """The README's curl lines, run as written (with this server's port and a real photo)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("<!-- curl-example -->")
    block = readme[start:].split("```bash\n", 1)[1].split("```", 1)[0]
    script = block.replace("127.0.0.1:8000", triton_server.http_address).replace("photo.jpg", str(photos[0]))
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [o["name"] for o in answer["outputs"]] == ["OUTPUT__0"] and len(answer["outputs"][0]["data"]) == 5


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_classify_cli_sends_files_to_the_pipeline(triton_server, photos, tmp_path, protocol, capsys):
    """classify.py --pipeline: same top-5 as the tensor endpoint, per-input errors, JSON lines, exit codes."""
    from resnext_triton.client.cli import EXIT_INPUT_FAILED, main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in photos[:3]:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    url = triton_server.http_address if protocol == "http" else triton_server.grpc_url
    code = main([str(folder), "-u", url, "-i", protocol, "--pipeline", "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == EXIT_INPUT_FAILED, captured.err
    assert f"model {ensemble_name(triton_server.spec, Format.ONNX)}" in captured.err
    assert "encoded files, preprocessed on the server" in captured.err
    rows = {Path(r["input"]).name: r for r in map(json.loads, captured.out.splitlines())}
    assert "broken.jpg" in rows and rows["broken.jpg"]["error"] and "image" in rows["broken.jpg"]["error"]
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        for p in photos[:3]:
            row = rows[Path(p).name]
            pixels = preprocess_bytes(Path(p).read_bytes(), triton_server.spec.preprocessing)[None]
            direct = infer_tensor(client, triton_server.spec.model_name(Format.ONNX), pixels)[0]
            assert [pred["class_id"] for pred in row["predictions"]] == list(np.argsort(-direct)[:5])
    finally:
        client.close()
