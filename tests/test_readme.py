"""The README's commands, options, image tags and pins must exist in the code (no drift)."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _parser_help(module: str) -> str:
    import importlib

    parser = importlib.import_module(module).build_parser()
    texts = [parser.format_help()]
    for action in parser._actions:  # sub-commands (server start/stop/...)
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            texts += [sub.format_help() for sub in choices.values()]
    return "\n".join(texts)


@pytest.fixture(scope="module")
def helps():
    deploy = subprocess.run([str(ROOT / "deploy.sh"), "--help"], capture_output=True, text=True, check=True).stdout
    return {
        "export/export.py": _parser_help("resnext_triton.exporters.cli"),
        "client/classify.py": _parser_help("resnext_triton.client.cli"),
        "bench/perf_sweep.py": _parser_help("resnext_triton.bench.sweep"),
        "bench/config_search.py": _parser_help("resnext_triton.bench.config_search"),
        "bench/soak.py": _parser_help("resnext_triton.bench.soak"),
        "bench/formats.py": _parser_help("resnext_triton.bench.formats"),
        "bench/int8_recipes.py": _parser_help("resnext_triton.bench.int8_recipes"),
        "client/evaluate.py": _parser_help("resnext_triton.client.evaluate"),
        "./deploy.sh": deploy,
        "./quickstart.sh": deploy + (ROOT / "quickstart.sh").read_text(),
    }


def _code_lines():
    """Command lines in the README's code blocks, joined across backslash continuations."""
    blocks = re.findall(r"```(?:bash|)\n(.*?)```", README, flags=re.S)
    lines = []
    for block in blocks:
        block = block.replace("\\\n", " ")
        lines += [ln.strip().removeprefix("$ ") for ln in block.splitlines() if ln.strip()]
    return lines


def _options(text):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def test_every_option_in_a_readme_command_exists(helps):
    checked = 0
    for line in _code_lines():
        for command, help_text in helps.items():
            if command in line.split("#")[0]:
                missing = _options(line.split("#")[0]) - _options(help_text)
                assert not missing, f"README: {line!r} uses {sorted(missing)}, unknown to {command}"
                checked += 1
    assert checked >= 8


def test_export_options_table_matches_the_parser(helps):
    section = README.split("## Export", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(ln for ln in section.splitlines() if ln.startswith("| `--"))
    options = _options(table)
    assert len(options) > 15
    assert options <= _options(helps["export/export.py"])


def test_scripts_and_paths_named_in_the_readme_exist():
    for path in ("quickstart.sh", "test.sh", "deploy.sh", "docker-compose.yml", "scripts/bootstrap.py",
                 "export/export.py", "export/Dockerfile", "client/classify.py", "bench/perf_sweep.py",
                 "bench/config_search.py", "BENCHMARKS.md", ".ci/run"):
        assert f"{path}" in README or path == ".ci/run"
        assert (ROOT / path).exists(), path
    assert "./test.sh" in (ROOT / ".ci" / "run").read_text()


def test_image_tags_match_compose_dockerfile_and_pins():
    release = PYPROJECT["tool"]["resnext-triton"]["ngc-release"]
    compose = (ROOT / "docker-compose.yml").read_text()
    dockerfile = (ROOT / "export" / "Dockerfile").read_text()
    for tag in re.findall(r"nvcr\.io/nvidia/[a-z]+:\d\d\.\d\d-py3", README):
        assert tag.endswith(f":{release}-py3"), tag
    assert f"nvcr.io/nvidia/tritonserver:{release}-py3" in README
    assert f"nvcr.io/nvidia/tritonserver:{release}-py3" in compose
    assert f"nvcr.io/nvidia/pytorch:{release}-py3" in README
    assert f"ARG NGC_RELEASE={release}" in dockerfile and "nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3" in dockerfile


def test_pins_quoted_in_the_readme_are_the_real_ones():
    project = PYPROJECT["project"]
    pins = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins += PYPROJECT["tool"]["resnext-triton"]["no-deps"]
    pins.append(PYPROJECT["tool"]["resnext-triton"]["perf-analyzer-wheel"])
    for name, version in re.findall(r"(torch|tritonclient|nvidia-pytriton|onnx|onnxruntime) (\d+\.\d+\.\d+)", README):
        assert any(re.fullmatch(rf"{name}(\[[a-z,]+\])?=={re.escape(version)}", p) for p in pins), (name, version)
    assert PYPROJECT["tool"]["resnext-triton"]["perf-analyzer-wheel"] == "tritonclient==2.51.0"
    assert "tritonclient 2.51.0" in README


def test_two_quickstart_commands():
    quick = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, flags=re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
    assert commands == ["./quickstart.sh --weights random", "./test.sh"]
