"""Style preview pictures on disk: ``<files>/previews/<profile>/<style>.png`` and a manifest per profile
saying how they were made (and whether they are noise), written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class StylePreviews:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _folder(self, profile: str) -> Path:
        if not SAFE_NAME.match(profile.lower()):
            raise ValueError(f"not a profile name: {profile!r}")
        return self.root / profile

    def path(self, profile: str, style: str) -> Path | None:
        """The preview of ``style`` on ``profile``, or None when none was rendered."""
        if not SAFE_NAME.match(style):
            return None
        path = self._folder(profile) / f"{style}.png"
        return path if path.is_file() else None

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def put(self, profile: str, style: str, png: bytes) -> Path:
        if not SAFE_NAME.match(style):
            raise ValueError(f"not a style name: {style!r}")
        target = self._folder(profile) / f"{style}.png"
        self._write(target, png)
        return target

    def manifest(self, profile: str) -> dict:
        path = self._folder(profile) / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_manifest(self, profile: str, manifest: dict) -> None:
        self._write(self._folder(profile) / "manifest.json", json.dumps(manifest, indent=1).encode())
