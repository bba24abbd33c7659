import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch

from resnext_triton.model import build_model
from resnext_triton.spec import ModelSpec
from resnext_triton.weights import (
    CACHE_ENV,
    NGC_URL_ENV,
    DownloadError,
    WeightsError,
    download,
    load_weights,
    read_checkpoint,
    sha256_file,
)

SPEC = ModelSpec()
SMALL = ModelSpec(variant="resnext50_32x4d")


@pytest.fixture(scope="module")
def reference():
    """A full-size model with random weights (seed 1) and its state dict in NVIDIA's current names."""
    torch.manual_seed(1)
    model = build_model(SPEC)
    return model, model.state_dict()


def ngc_style(state):
    """The NGC file's naming: torchvision-style `layerN.` and a DataParallel `module.` prefix."""
    out = {}
    for key, value in state.items():
        if key.startswith("layers."):
            stage, rest = key[len("layers.") :].split(".", 1)
            key = f"layer{int(stage) + 1}.{rest}"
        out["module." + key] = value
    return out


def logits(model, x):
    with torch.inference_mode():
        return model.eval()(x)


def test_ngc_checkpoint_gives_the_same_logits(reference, tmp_path):
    model, state = reference
    path = tmp_path / "nvidia_resnext101-32x4d_200821.pth.tar"
    torch.save(ngc_style(state), path)
    loaded = load_weights(SPEC, str(path))
    x = torch.randn(2, 3, 224, 224)
    assert torch.equal(logits(loaded.model, x), logits(model, x))
    assert loaded.sha256 == sha256_file(path)
    assert loaded.describe()["trained"] is True


def test_training_checkpoint_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    model = build_model(SMALL)
    state = model.state_dict()
    training = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 90, "best_prec1": 79.1, "state_dict": ngc_style(state), "optimizer": {"lr": 0.1}}, training)
    st = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    x = torch.randn(1, 3, 224, 224)
    for path in (training, st):
        assert torch.equal(logits(load_weights(SMALL, str(path)).model, x), logits(model, x))


def test_random_weights_are_marked():
    loaded = load_weights(SMALL, "random")
    assert loaded.is_random and loaded.describe() == {"source": "random", "path": None, "sha256": None,
                                                      "trained": False}


def test_wrong_keys_are_named(tmp_path):
    state = build_model(SMALL).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["layers.1.0.conv2.weight"]
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_weights(SMALL, str(path))
    assert "missing keys: layers.1.0.conv2.weight" in str(info.value)
    assert "unexpected keys: extra.weight" in str(info.value)


def test_wrong_shapes_are_named(tmp_path):
    state = build_model(SMALL).state_dict()
    state["fc.weight"] = torch.zeros(10, 2048)
    state["fc.bias"] = torch.zeros(10)
    path = tmp_path / "finetuned.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"fc.weight: checkpoint \(10, 2048\) vs model \(1000, 2048\)") as info:
        load_weights(SMALL, str(path))
    assert "--num-classes" in str(info.value)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(10)))
    loaded = load_weights(SMALL.with_(num_classes=10, labels_path=labels), str(path))
    assert loaded.model.fc.out_features == 10


def test_wrong_variant(tmp_path):
    path = tmp_path / "r50.pt"
    torch.save(build_model(SMALL).state_dict(), path)
    with pytest.raises(WeightsError, match="missing keys"):
        load_weights(SPEC, str(path))


def test_truncated_text_and_empty_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(build_model(SMALL).state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    empty = tmp_path / "empty.pt"
    empty.touch()
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for path, pattern in ((truncated, "truncated or not"), (text, "not a PyTorch checkpoint|truncated or not"),
                          (empty, "is empty"), (bad_st, "not a safetensors"), (tmp_path / "nope.pt", "does not exist")):
        with pytest.raises(WeightsError, match=pattern):
            read_checkpoint(path)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(MARKER),))


MARKER = ""


def test_pickled_code_is_never_executed(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"fc.weight": _Payload()}}, f)
    torch.save({"fc.weight": _Payload()}, tmp_path / "evil_zip.pt")
    for candidate in (path, tmp_path / "evil_zip.pt"):
        with pytest.raises(WeightsError):
            read_checkpoint(candidate)
    assert not Path(MARKER).exists()


class _Server:
    """A loopback HTTP server that serves one file, optionally cut short, and counts requests."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.truncate_at: int | None = None
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                body = outer.payload if outer.truncate_at is None else outer.payload[: outer.truncate_at]
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/files/nvidia_resnext101-32x4d_200821.pth.tar"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ngc_server(reference, tmp_path):
    _, state = reference
    path = tmp_path / "served.pth.tar"
    torch.save(ngc_style(state), path)
    server = _Server(path.read_bytes())
    yield server
    server.close()


def test_ngc_download_progress_cache_and_checksum(ngc_server, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(NGC_URL_ENV, ngc_server.url)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    loaded = load_weights(SPEC, "ngc", progress=True)
    assert "nvidia_resnext101-32x4d_200821" in capsys.readouterr().err  # the progress bar
    cached = tmp_path / "cache" / "nvidia_resnext101-32x4d_200821.pth.tar"
    assert cached.is_file()
    assert loaded.sha256 == sha256_file(cached) == cached.with_name(cached.name + ".sha256").read_text().split()[0]
    assert loaded.source == "ngc"
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(logits(loaded.model, x), logits(reference[0], x))
    again = load_weights(SPEC, "ngc", progress=False)
    assert ngc_server.requests == 1  # served from the cache
    assert again.sha256 == loaded.sha256


def test_corrupted_cache_is_downloaded_again(ngc_server, tmp_path):
    path, digest = download(ngc_server.url, tmp_path, progress=False)
    path.write_bytes(b"bit rot")
    path2, digest2 = download(ngc_server.url, tmp_path, progress=False)
    assert ngc_server.requests == 2 and digest2 == digest and sha256_file(path2) == digest


def test_interrupted_download_leaves_nothing_usable(ngc_server, tmp_path):
    ngc_server.truncate_at = 1000
    with pytest.raises(DownloadError, match="stopped after 1000 of"):
        download(ngc_server.url, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_download_names_the_alternatives(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(NGC_URL_ENV, f"http://127.0.0.1:{port}/x.pth.tar")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(DownloadError, match="--weights random"):
        load_weights(SPEC, "ngc", progress=False)
