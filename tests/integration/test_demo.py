"""The demo page (``demo/app.py``) in a real browser against the real local Triton.

Debian's chromium, driven by its chromedriver through Selenium (no browser download), opens the
page served by ``demo/app.py`` on a free 127.0.0.1 port; the top-5 read off the page must be the
client's answer for the same photo and model. The screenshot is written to ``docs/demo.png``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resnext_triton.client import TritonClassifier
from resnext_triton.client.discovery import PIPELINE_SUFFIX
from resnext_triton.spec import Format

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "demo" / "app.py"
SCREENSHOT = ROOT / "docs" / "demo.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
)
APP_START_S = 90.0
ANSWER_S = 60.0
PROB_ATOL = 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def demo_app(triton_url: str, protocol: str, tmp: Path, *extra: str) -> Iterator[str]:
    """``demo/app.py`` in a subprocess on a free 127.0.0.1 port; yields its URL; always stopped."""
    port = free_port()
    log = tmp / f"demo-{port}.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(tmp / "gradio"))
    cmd = [sys.executable, str(APP), "--port", str(port), "-u", triton_url, "-i", protocol, "--timeout", "3", *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + APP_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"demo/app.py exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"demo/app.py did not serve {url} within {APP_START_S:g} s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def live_app(triton_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo pointed at the session's Triton over gRPC."""
    with demo_app(triton_server.grpc_url, "grpc", tmp_path_factory.mktemp("demo_live")) as url:
        yield url


@pytest.fixture(scope="module")
def dead_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo pointed at a 127.0.0.1 port where nothing listens (Triton down)."""
    with demo_app(f"127.0.0.1:{free_port()}", "http", tmp_path_factory.mktemp("demo_dead")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless Debian chromium through chromedriver, with a fresh profile."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"needs Debian's chromium and chromium-driver ({', '.join(missing)} missing): "
            "apt-get install chromium chromium-driver (scripts/bootstrap.py installs them)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the demo extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def photo(photos: list[Path]) -> Path:
    """A real photo: scikit-image's cat if present."""
    return next((p for p in photos if p.name == "chelsea.png"), photos[0])


def client_answer(triton_server, model: str, path: Path) -> list[tuple[str, float]]:
    """TritonClassifier's top-5 (label, probability) for a photo with a model."""
    with TritonClassifier(triton_server.grpc_url, "grpc", model, timeout_s=30) as clf:
        [result] = clf.classify([path], top_k=5)
    assert result.ok, result.error
    return [(p.label, float(p.probability or 0.0)) for p in result.predictions]


# ------------------------------------------------------------------------------ page helpers


def wait_for(driver, condition: Callable[[], object], what: str, timeout_s: float = ANSWER_S):
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(_driver):
        try:
            return condition()
        except StaleElementReferenceException:
            return False

    try:
        return WebDriverWait(driver, timeout_s).until(check)
    except WebDriverException as exc:
        text = driver.find_element("tag name", "body").text
        pytest.fail(f"timed out waiting for {what}; the page says:\n{text}\n({exc.msg})")


def text_of(driver, elem_id: str) -> str:
    return str(driver.find_element("id", elem_id).text)


def open_page(driver, url: str, ready: str) -> None:
    """Open the page and wait until the server status line contains ``ready``."""
    driver.get(url)
    wait_for(driver, lambda: ready in text_of(driver, "server-status"), f"server status {ready!r}")


def upload(driver, path: Path) -> None:
    driver.find_element("css selector", "#upload input[type=file]").send_keys(str(path))


def wait_for_answer(driver, previous: str, expect: str) -> str:
    """Wait until the answer line changes from ``previous`` and contains ``expect``; return it."""

    def changed() -> str | bool:
        text = text_of(driver, "answer")
        return text if text != previous and expect in text else False

    return str(wait_for(driver, changed, f"an answer containing {expect!r}"))


def page_top5(driver) -> list[tuple[str, float]]:
    """The (label, probability) pairs of the top-5 bar chart, top first."""
    rows = driver.find_elements("css selector", "#top5 .confidence-set")
    out = []
    for row in rows:
        label = row.find_element("css selector", "dt").text.strip()
        value = float(row.find_element("css selector", "meter").get_attribute("value"))
        out.append((label, value))
    return out


def choose_model(driver, model: str) -> None:
    driver.find_element("css selector", "#model input").click()
    options = wait_for(
        driver,
        lambda: [
            o
            for o in driver.find_elements("css selector", "[data-testid=dropdown-option]")
            if o.get_attribute("aria-label").endswith(model)
        ],
        f"the dropdown option {model}",
    )
    options[0].click()


def assert_same_top5(page: list[tuple[str, float]], client: list[tuple[str, float]]) -> None:
    assert [label for label, _ in page] == [label for label, _ in client]
    for (_, shown), (_, expected) in zip(page, client, strict=True):
        assert shown == pytest.approx(expected, abs=PROB_ATOL)


# ------------------------------------------------------------------------------ tests


def test_uploaded_photo_gets_the_clients_top5_and_a_screenshot(browser, live_app, triton_server, photo):
    onnx = triton_server.models[Format.ONNX]
    open_page(browser, live_app, "serves")
    status = text_of(browser, "server-status")
    assert "ONNX FP32" in status and "TorchScript FP32" in status, status

    answer = wait_for_answer(browser, "", "Upload")  # the page starts with the invitation
    upload(browser, photo)
    answer = wait_for_answer(browser, answer, "answered in")
    assert onnx in answer and " ms" in answer, answer
    assert_same_top5(page_top5(browser), client_answer(triton_server, onnx, photo))
    assert browser.find_elements("css selector", "#photo img"), "the photo is not shown"

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, int(height) + 160)  # the whole page, browser frame included
    time.sleep(1)  # let the layout and the bars settle before the screenshot
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_dropdown_switches_models_and_reclassifies(browser, live_app, triton_server, photo):
    torchscript = triton_server.models[Format.TORCHSCRIPT]
    open_page(browser, live_app, "serves")
    upload(browser, photo)
    answer = wait_for_answer(browser, "", "answered in")
    choose_model(browser, torchscript)
    answer = wait_for_answer(browser, answer, torchscript)
    assert "TorchScript FP32" in answer, answer
    assert_same_top5(page_top5(browser), client_answer(triton_server, torchscript, photo))


def test_an_image_pipeline_is_offered_and_answers_like_the_client(browser, live_app, triton_server, photo):
    pipeline = triton_server.models[Format.ONNX] + PIPELINE_SUFFIX
    if pipeline not in triton_server.served:
        pytest.skip(f"the session's Triton does not serve the image pipeline {pipeline}")
    open_page(browser, live_app, "pipeline")
    upload(browser, photo)
    answer = wait_for_answer(browser, "", "answered in")
    choose_model(browser, pipeline)
    answer = wait_for_answer(browser, answer, pipeline)
    assert "ONNX FP32 pipeline" in answer, answer
    assert_same_top5(page_top5(browser), client_answer(triton_server, pipeline, photo))


def test_a_sample_photo_is_one_click_away(browser, live_app, triton_server, photos):
    open_page(browser, live_app, "serves")
    thumbnails = browser.find_elements("css selector", "#samples button.thumbnail-item")
    assert len(thumbnails) == len(photos)
    thumbnails[0].click()
    wait_for_answer(browser, "", "answered in")
    onnx = triton_server.models[Format.ONNX]
    assert_same_top5(page_top5(browser), client_answer(triton_server, onnx, photos[0]))


def test_a_file_that_is_not_an_image_gets_a_clear_message(browser, live_app, photo, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("a shopping list, not a photo\n")
    open_page(browser, live_app, "serves")
    upload(browser, photo)
    answer = wait_for_answer(browser, "", "answered in")

    upload(browser, notes)
    answer = wait_for_answer(browser, answer, "Cannot classify this file")
    assert "notes.jpg" in answer and "not an image" in answer, answer
    assert page_top5(browser) == []
    assert "Traceback" not in browser.find_element("tag name", "body").text

    upload(browser, photo)  # the app is still there
    wait_for_answer(browser, answer, "answered in")


def test_triton_unreachable_gets_a_clear_message(browser, dead_app, photo):
    open_page(browser, dead_app, "Triton is unreachable")
    assert "connection refused" in text_of(browser, "server-status")
    upload(browser, photo)
    answer = wait_for_answer(browser, "", "Triton is unreachable")
    assert "./deploy.sh" in answer, answer
    assert page_top5(browser) == []


def test_the_api_answers_gradio_client(live_app, triton_server, photo):
    pytest.importorskip("gradio_client", reason="needs gradio_client (the demo extra)")
    from gradio_client import Client, handle_file

    torchscript = triton_server.models[Format.TORCHSCRIPT]
    client = Client(live_app, verbose=False, download_files=False)
    shown, label, message = client.predict(handle_file(str(photo)), torchscript, api_name="/classify")
    assert shown is not None
    assert torchscript in message and "answered in" in message, message
    page = [(c["label"], float(c["confidence"])) for c in label["confidences"]]
    expected = client_answer(triton_server, torchscript, photo)
    assert label["label"] == expected[0][0]
    assert_same_top5(page, expected)


def test_the_app_refuses_a_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(APP), "--port", str(port), "-u", "127.0.0.1:9"],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"),
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot serve the page on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
