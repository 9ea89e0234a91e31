"""Style presets: prompt templates with a ``{prompt}`` slot and a negative prompt, read from ``templates/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STYLES_FILE = Path(__file__).resolve().parents[1] / "templates" / "styles.json"


@dataclass(frozen=True)
class Style:
    name: str
    label: str
    label_zh: str
    prompt: str
    negative: str

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The styled prompt and the user's negative joined with the style's."""
        styled = self.prompt.replace("{prompt}", prompt.strip())
        negatives = [n for n in (negative.strip(), self.negative) if n]
        return styled, ", ".join(negatives)


def load_styles(path: str | Path | None = None) -> dict[str, Style]:
    entries = json.loads(Path(path or DEFAULT_STYLES_FILE).read_text(encoding="utf-8"))
    styles = {}
    for entry in entries:
        if "{prompt}" not in entry["prompt"]:
            raise ValueError(f"style {entry['name']!r} has no {{prompt}} slot")
        styles[entry["name"]] = Style(**entry)
    return styles
