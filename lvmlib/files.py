"""Writing files so that nothing is ever half-written: a temp file beside the target, then a rename."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(binary file object) on a temp file beside `path`, then os.replace it into place.

    Readers see the old file or the new one, never a part; a crash leaves no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; banks, checkpoints and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path, obj, *, sort_keys: bool = False) -> Path:
    """Strict JSON (no NaN), indented, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False) + "\n")
