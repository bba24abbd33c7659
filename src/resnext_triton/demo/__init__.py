"""A Gradio page over the Triton client: a photo in, its top-5 ImageNet classes out.

``python demo/app.py`` serves it on 127.0.0.1 (:mod:`.cli`); :mod:`.service` talks to Triton
through :class:`~resnext_triton.client.TritonClassifier` and imports neither gradio nor torch;
:mod:`.page` lays out the page.
"""

from resnext_triton.demo.service import Answer, DemoService, Problem, ServedModel

__all__ = ["Answer", "DemoService", "Problem", "ServedModel"]
