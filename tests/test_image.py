"""The container image cannot be built here (no Docker engine); what can be checked offline is."""

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


def test_torch_and_requirements_match_requirements_txt():
    pins = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line
    )
    installs = re.findall(r"^RUN pip install .*torch==([0-9.]+)$", DOCKERFILE, flags=re.M)
    assert installs == [pins["torch"]], "the CPU torch the image installs is the pinned one"
    assert "pip install -r /src/requirements.txt" in DOCKERFILE
    assert "pip install --no-deps /src" in DOCKERFILE, "the package adds no unpinned dependency"


def test_python_311_slim_non_root_and_no_build_tools_in_the_final_stage():
    build, final = stages()
    assert build.startswith("python:3.11-slim AS build")
    assert final.startswith("python:3.11-slim\n")
    assert re.search(r"^USER 10001$", final, flags=re.M)
    assert "COPY --from=build /opt/venv /opt/venv" in final
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in final, f"{tool} in the final stage"
    assert "HF_HUB_OFFLINE=1" in final
