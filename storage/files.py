"""Content-addressed file store: ``<root>/<sha[:2]>/<sha[2:4]>/<sha>.<ext>``, written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

MIME_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    # The exports of a layered product picture.
    "application/json": "json",
    "image/vnd.adobe.photoshop": "psd",
    "application/zip": "zip",
    # LoRA weights, trained here or uploaded.
    "application/vnd.safetensors": "safetensors",
}


class FileStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str, extension: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        if not extension.isalnum():
            raise ValueError(f"not a file extension: {extension!r}")
        return self.root / digest[:2] / digest[2:4] / f"{digest}.{extension}"

    def put(self, data: bytes, extension: str) -> str:
        """Store bytes and return their sha256. A crash mid-write never leaves a partial file under the name."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest, extension)
        try:
            # Stored already: made fresh again, so `python app.py check --fix` gives the row now coming for
            # it the same grace period as a new file's (the file may have been an orphan until now).
            os.utime(target)
            return digest
        except FileNotFoundError:
            pass
        except OSError:  # not ours to touch (a read-only or foreign share): stored all the same
            if target.is_file():
                return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def size(self, digest: str) -> int:
        """Bytes the content with this hash takes, whatever its extension (0 when it is not stored)."""
        folder = self.path(digest, "x").parent
        return sum(p.stat().st_size for p in folder.glob(f"{digest}.*"))

    def exists(self, digest: str, extension: str) -> bool:
        return self.path(digest, extension).is_file()

    def delete(self, digest: str, extension: str) -> None:
        self.path(digest, extension).unlink(missing_ok=True)
