"""Each component's README, generated from the component itself, as kubeflow/pipelines-components
does: the description, inputs (type, default, description) and outputs come from the function's
signature and Google-style docstring, between markers in README.md; the rest of the README (the
example) is written by hand. ``tests/test_components.py`` fails when a README is stale.

    python -m components.readme          # rewrite the generated part of every README
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import docstring_parser

COMPONENTS = Path(__file__).resolve().parent
START, END = "<!-- generated from component.py: start -->", "<!-- generated from component.py: end -->"
TYPES = {
    "String": "str",
    "Integer": "int",
    "Float": "float",
    "Boolean": "bool",
    "List": "list",
    "Struct": "dict",
}


def names() -> list[str]:
    """Every component folder's name."""
    return sorted(p.parent.name for p in COMPONENTS.glob("*/component.py"))


def load(name: str):
    """The component object defined in ``components/<name>/component.py``."""
    return getattr(importlib.import_module(f"components.{name}.component"), name)


def generated(name: str) -> str:
    """The README part generated from the component ``name``."""
    component = load(name)
    spec = component.component_spec
    doc = docstring_parser.parse(component.python_func.__doc__ or "")
    described = {p.arg_name: _one_line(p.description) for p in doc.params}
    lines = [
        START,
        "",
        _one_line(doc.description),
        "",
        "## Inputs",
        "",
        "| name | type | default | |",
        "|---|---|---|---|",
    ]
    for arg, spec_input in spec.inputs.items():
        default = "" if spec_input.default is None else f"`{spec_input.default!r}`"
        lines.append(f"| {arg} | {_type(spec_input.type)} | {default} | {described.get(arg, '')} |")
    lines += ["", "## Outputs", "", "| name | type | |", "|---|---|---|"]
    returns = _one_line(doc.returns.description) if doc.returns else ""
    # Output artifacts are parameters of the function that are not inputs; the rest are returns.
    artifacts = set(inspect.signature(component.python_func).parameters) - set(spec.inputs)
    for arg, spec_output in (spec.outputs or {}).items():
        text = described.get(arg, "") if arg in artifacts else returns
        lines.append(f"| {arg} | {_type(spec_output.type)} | {text} |")
    return "\n".join([*lines, "", END])


def _type(kfp_type: str) -> str:
    return TYPES.get(kfp_type, kfp_type.removeprefix("system.").split("@")[0])


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def render(name: str, readme: str) -> str:
    """``readme`` with its generated part replaced (or put first, under the title)."""
    block = generated(name)
    if START in readme:
        return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)
    title, _, rest = readme.partition("\n")
    return f"{title}\n\n{block}\n{rest}"


def main() -> int:
    for name in names():
        path = COMPONENTS / name / "README.md"
        text = path.read_text()
        new = render(name, text)
        if new != text:
            path.write_text(new)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
