"""Turning validation errors into the one line a user reads."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


def field_path(loc: Sequence[int | str]) -> str:
    """('items', 0, 'price') -> 'items[0].price'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line naming the first bad field and why; ``source`` says where it came from."""
    errors = err.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"{source}: not valid JSON: {first['ctx']['error']}"
    message = first["msg"].removeprefix("Value error, ")
    path = field_path(first["loc"])
    line = f"{source}: {path}: {message}" if path else f"{source}: {message}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line
