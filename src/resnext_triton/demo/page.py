"""The Gradio page: upload, drop or pick a photo, see its top-5 from a model served by Triton.

:func:`build_page` lays the page out over a :class:`~.service.DemoService`; :func:`launch` serves
it on 127.0.0.1 without analytics or share links. Every handler returns something to show:
a problem (Triton unreachable, not an image) becomes a message on the page, never a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: offline, no telemetry

import gradio as gr
from PIL import Image

from resnext_triton.demo.service import Answer, DemoService, Problem, ServedModel, sample_choices
from resnext_triton.preprocess import PreprocessError, open_image

logger = logging.getLogger(__name__)

TITLE = "ResNeXt101-32x4d on Triton"
DISPLAY_SIZE = 768
"""The longest side of the photo as shown (the model sees NVIDIA's 224 x 224 crop)."""
MAX_FILE_SIZE = "50mb"
NO_PHOTO = "Upload or drop a photo, or pick a sample photo."

# What every classifying handler returns: the current photo (state), the photo shown, the top-5, the message.
Outputs = tuple[str | None, Image.Image | None, dict[str, float] | None, str]


def build_page(service: DemoService, samples: Sequence[Path], *, model: str | None = None) -> gr.Blocks:
    """The demo page over ``service``, with ``samples`` in a gallery and ``model`` preselected when served."""
    samples = list(samples)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as page:
        gr.Markdown(
            f"# {TITLE}\nNVIDIA's ImageNet classifier served by Triton Inference Server at "
            f"`{service.where}`, through the project's client (`resnext_triton.client.TritonClassifier`)."
        )
        photo = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                with gr.Row(equal_height=True):
                    chooser = gr.Dropdown(  # any name is accepted (API callers); an unknown one gets a message
                        choices=[],
                        value=None,
                        label="Served model",
                        elem_id="model",
                        scale=4,
                        interactive=True,
                        allow_custom_value=True,
                    )
                    refresh = gr.Button("Refresh models", elem_id="refresh", scale=1, size="sm")
                server = gr.Markdown(elem_id="server-status")
                upload = gr.File(label="Upload or drop a photo", type="filepath", elem_id="upload", height=140)
                gallery = gr.Gallery(
                    value=sample_choices(samples),
                    label="...or pick a sample photo",
                    elem_id="samples",
                    columns=3,
                    height=300,
                    allow_preview=False,
                    interactive=False,
                    object_fit="cover",
                    visible=bool(samples),  # the photos matplotlib and scikit-image ship, when installed
                )
            with gr.Column(scale=1):
                shown = gr.Image(label="Photo", type="pil", interactive=False, elem_id="photo", height=300)
                answer = gr.Markdown(NO_PHOTO, elem_id="answer")
                top5 = gr.Label(num_top_classes=5, label="Top-5 ImageNet classes", elem_id="top5", show_heading=False)
        outputs = [photo, shown, top5, answer]

        def models(current: str | None) -> tuple[Any, str]:
            return refresh_models(service, current or model)

        def classify_upload(path: str | None, chosen: str | None) -> Outputs:
            return classify_photo(service, path, chosen)

        def classify_sample(chosen: str | None, evt: gr.SelectData) -> Outputs:
            index = evt.index if isinstance(evt.index, int) else evt.index[0]
            return classify_photo(service, str(samples[index]), chosen)

        def reclassify(current: str | None, chosen: str | None) -> Outputs:
            return classify_photo(service, current, chosen)

        page.load(models, [chooser], [chooser, server], api_name="models")
        refresh.click(models, [chooser], [chooser, server], api_visibility="private")
        classified = upload.upload(classify_upload, [upload, chooser], outputs, api_name="classify")
        classified.then(lambda: None, None, upload, api_visibility="private")  # ready for the next photo
        gallery.select(classify_sample, [chooser], outputs, api_visibility="private")
        chooser.input(reclassify, [photo, chooser], outputs, api_visibility="private")
    return page


def refresh_models(service: DemoService, current: str | None) -> tuple[Any, str]:
    """The dropdown filled from the server (keeping ``current`` if still served) and a status line."""
    try:
        served = service.served_models()
    except Exception as exc:  # the page must stay up whatever happens; the log has the traceback
        logger.warning("cannot list the served models at %s: %s", service.where, exc, exc_info=True)
        message = (
            f"**{Problem.UNREACHABLE.value}** at `{service.where}`: {exc}. "
            "Start it (`./deploy.sh`), then press *Refresh models*."
        )
        return gr.Dropdown(choices=[], value=None), message
    if not served:
        message = f"Triton at `{service.where}` serves no ready ResNeXt model: export one (`export/export.py`)."
        return gr.Dropdown(choices=[], value=None), message
    names = [m.name for m in served]
    value = current if current in names else names[0]
    return gr.Dropdown(choices=[(m.choice, m.name) for m in served], value=value), describe_served(service, served)


def describe_served(service: DemoService, served: Sequence[ServedModel]) -> str:
    """``Triton at 127.0.0.1:8001 (grpc) serves 2 models: ONNX FP32, TorchScript FP32.``."""
    titles = ", ".join(m.title for m in served)
    return f"Triton at `{service.where}` serves {len(served)} model{'s' * (len(served) != 1)}: {titles}."


def classify_photo(service: DemoService, path: str | None, model: str | None) -> Outputs:
    """Classify the photo at ``path`` with ``model``: what the page shows next."""
    if not path:
        return None, None, None, NO_PHOTO
    try:
        answer = service.classify(path, model or None)
    except Exception as exc:  # the page must stay up whatever happens; the log has the traceback
        logger.exception("classifying %s failed", path)
        answer = Answer(Path(path).name, model=model, problem=Problem.INTERNAL, detail=f"{type(exc).__name__}: {exc}")
    if not answer.ok:
        return path, None, None, answer.message
    return path, display_image(path), answer.confidences, answer.message


def display_image(path: str) -> Image.Image | None:
    """The photo upright, in RGB, at most :data:`DISPLAY_SIZE` pixels on its longest side."""
    try:
        img = open_image(path)
    except (PreprocessError, OSError):
        return None
    img.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
    return img


def launch(
    page: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    samples: Sequence[Path] = (),
    block: bool = True,
) -> str:
    """Serve ``page`` on ``host:port`` (no share link, no analytics); returns its URL.

    With ``block`` (the command line) this returns after Ctrl-C; otherwise at once, the server
    running in a thread until ``page.close()``.

    Raises:
        OSError: if the port cannot be bound.
    """
    page.queue(default_concurrency_limit=2)
    _, local_url, _ = page.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        allowed_paths=[str(p) for p in samples],
        max_file_size=MAX_FILE_SIZE,
        ssr_mode=False,
        footer_links=["api"],
        quiet=not block,
    )
    return str(local_url)
