"""Writing files so that nothing is ever half-written (a temp file beside the target, then a rename),
and one lock per output folder so that two processes never write into the same one."""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .errors import InputError

LOCK_NAME = ".lock"


class FolderInUse(InputError):
    """Another process holds the folder's lock (a build or run writing into it)."""


def check_writable(folder: str | os.PathLike, what: str = "folder") -> Path:
    """Create `folder` if needed and prove a file can be written there, or raise InputError naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:    # a path under a file, a read-only folder, no space...
        raise InputError(f"{what} {folder}: cannot create or write it ({e.strerror or e}); choose another") from None
    return folder


@contextlib.contextmanager
def undone_on_bad_input(folder: str | os.PathLike):
    """A block that fails on bad input (InputError) takes back what it added under `folder`: the folders it
    created and every new path in a folder that was there (a lock file too). Any other failure keeps its
    work, for a resume. Files it changed are not restored: writes go through atomic_write, after the checks."""
    folder, created, above = Path(folder), None, Path(folder).absolute()
    while not above.exists() and above != above.parent:    # created: the outermost folder this block would add
        above, created = above.parent, above
    before = set(folder.rglob("*")) if created is None and folder.is_dir() else set()
    try:
        yield
    except InputError:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        else:
            for path in sorted(set(folder.rglob("*")) - before, key=lambda q: len(q.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, purpose: str, what: str = "folder"):
    """Hold `folder/.lock` (flock, so a dead holder's lock is free) for the block, or raise FolderInUse.
    The file stays (unlinking races with waiters) and names its holder; stale temp files are removed.
    Bad input inside the block leaves nothing new behind (undone_on_bad_input)."""
    with undone_on_bad_input(folder):
        folder = check_writable(folder, what)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+", encoding="utf-8") as f:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = json.loads(f.read())
                except ValueError:      # the holder has not written it yet
                    holder = {}
                raise FolderInUse(f"{folder} is in use by pid {holder.get('pid', '?')} "
                                  f"({' '.join(holder.get('command') or ['?'])}; {holder.get('purpose', '?')} "
                                  f"since {holder.get('started', '?')}): wait for it to finish or stop it") from None
            f.truncate(0)
            f.write(json.dumps({"pid": os.getpid(), "command": sys.argv, "purpose": purpose,
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
            f.flush()
            for stale in folder.glob("**/.*.tmp"):
                stale.unlink(missing_ok=True)
            yield folder          # closing the file releases the lock


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(binary file) on a temp file beside `path`, then os.replace it into place."""
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


def to_jsonable(obj, *, where: str = "value"):
    """numpy/torch values, tuples and paths -> plain JSON, non-finite floats -> null (strict JSON has no NaN);
    anything else is a TypeError naming `where` it sits."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where}: key {bad[0]!r} is not a string")
        return {k: to_jsonable(v, where=f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, where=f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "detach"):                      # torch tensor, possibly requiring grad
        obj = obj.detach().cpu()
    if hasattr(obj, "tolist") and callable(obj.tolist):   # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist(), where=where)
    raise TypeError(f"{where}: value of type {type(obj).__name__} is not JSON-able")


# the repository (lvmlib's parent folder): committed outputs name paths relative to it
REPO_ROOT = Path(__file__).resolve().parents[1]


def portable(value):
    """Every string in `value` with absolute paths made relative (repo: data/x, beside it: ../shared/x,
    home: ~/x), so committed outputs hold no machine paths."""
    if isinstance(value, Mapping):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if not isinstance(value, str):
        return value
    for base, short in ((REPO_ROOT, ""), (REPO_ROOT.parent, "../"), (Path.home(), "~/")):
        if len(base.parts) > 1:
            value = re.sub(rf"(?<![\w.~/-]){re.escape(str(base))}(/|(?![\w.-]))",
                           lambda m, s=short: s if m.group(1) else (s.rstrip("/") or "."), value)
    return value
