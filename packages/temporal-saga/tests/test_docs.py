"""The API reference: generated from the docstrings, one for every public name."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pdoc

PUBLIC = ["temporal_saga", "temporal_saga.effects", "temporal_saga.testing"]


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, obj in vars(module).items()
            if not n.startswith("_") and getattr(obj, "__module__", None) == module_name
        ]
    return list(names)


def test_every_public_name_says_what_it_is_for() -> None:
    undocumented = [
        f"{m}.{n}"
        for m in PUBLIC
        for n in public_names(m)
        if not isinstance(getattr(importlib.import_module(m), n), str)
        and not inspect.getdoc(getattr(importlib.import_module(m), n))
    ]
    assert undocumented == []


def test_the_reference_generates_with_every_public_name(tmp_path: Path) -> None:
    pdoc.pdoc(*PUBLIC, output_directory=tmp_path)

    for module_name in PUBLIC:
        page = (tmp_path / (module_name.replace(".", "/") + ".html")).read_text()
        missing = [n for n in public_names(module_name) if f'id="{n}"' not in page]
        assert missing == [], module_name
