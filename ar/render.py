"""Fill the files under ar/templates/ (the scaffold and the shim)."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"


def render(template: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    # One pass: a value that itself holds a placeholder (a goal mentioning __METRIC__) stays verbatim.
    placeholder = re.compile("__(" + "|".join(map(re.escape, values)) + ")__")
    return placeholder.sub(lambda m: values[m.group(1)], text)
