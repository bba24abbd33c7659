"""A container health check that tells the truth: ready, AND a real inference through a Python model.

Triton keeps answering ``/v2/health/ready`` when a Python-backend stub has died, while every
request to that model fails. This check therefore also sends one tiny PNG through the image
pipeline's preprocessing model (a Python model: exactly the part that can die that way), with the
standard library only (it runs in the serving image's healthcheck).

It counts consecutive failures in a state file; after ``--kill-after`` of them it sends SIGTERM to
the server process (PID 1 in the container), so that the restart policy brings up a fresh server.
Docker itself only marks a container unhealthy; it does not restart it.

    python3 -m resnext_triton.triton.healthcheck [--url http://127.0.0.1:8000] [--model NAME]
        [--kill-after 3] [--pid 1] [--state /tmp/resnext-health]
    # exit 0: healthy; 1: not (the reason on stderr)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

DEFAULT_MODEL = "resnext101_32x4d_preprocess"


def tiny_png(size: int = 8) -> bytes:
    """A valid size x size grey RGB PNG, built with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80" * (3 * size) for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def check(url: str, model: str, timeout_s: float = 10.0) -> str | None:
    """None when the server is ready and the model answers one inference; else why not."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=timeout_s) as response:
            if response.status != 200:
                return f"not ready (HTTP {response.status})"
    except (urllib.error.URLError, OSError) as exc:
        return f"not ready: {exc}"
    data = tiny_png()
    header = json.dumps({
        "inputs": [{"name": "IMAGE", "shape": [1, len(data)], "datatype": "UINT8",
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": "PIXELS", "parameters": {"binary_data": True}}],
    }).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer", data=header + data, method="POST",
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        return f"inference on {model} failed: HTTP {exc.code} {exc.read()[:300]!r}"
    except (urllib.error.URLError, OSError) as exc:
        return f"inference on {model} failed: {exc}"
    return None


def record(state: Path, healthy: bool) -> int:
    """Update and return the count of consecutive failures kept in ``state``."""
    try:
        failures = 0 if healthy else int(state.read_text() or 0) + 1
    except (OSError, ValueError):
        failures = 0 if healthy else 1
    state.write_text(str(failures))
    return failures


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when healthy, 1 when not (and SIGTERM the server after ``--kill-after`` failures in a row)."""
    parser = argparse.ArgumentParser(prog="python3 -m resnext_triton.triton.healthcheck", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a Python model to run one inference on")
    parser.add_argument("--kill-after", type=int, default=3, help="failures in a row before SIGTERM (0: never)")
    parser.add_argument("--pid", type=int, default=1, help="the server's pid (1 in the container)")
    parser.add_argument("--state", type=Path, default=Path("/tmp/resnext-health"))
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    problem = check(args.url.rstrip("/"), args.model, args.timeout)
    failures = record(args.state, problem is None)
    if problem is None:
        return 0
    print(f"unhealthy ({failures} in a row): {problem}", file=sys.stderr)
    if args.kill_after and failures >= args.kill_after:
        print(f"sending SIGTERM to pid {args.pid} so that the restart policy starts a fresh server", file=sys.stderr)
        try:
            os.kill(args.pid, signal.SIGTERM)
        except OSError as exc:
            print(f"cannot signal pid {args.pid}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
