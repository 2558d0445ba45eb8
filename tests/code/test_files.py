"""lvmlib.files.folder_lock: one writer per output folder; a killed holder's lock is taken over."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lvmlib.errors import InputError
from lvmlib.files import FolderInUse, folder_lock

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from lvmlib.files import folder_lock
with folder_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_records_its_holder_and_refuses_a_second_taker(tmp_path):
    out = tmp_path / "new" / "folder"
    with folder_lock(out, "a build") as folder:
        assert folder == out and out.is_dir()
        info = json.loads((out / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["purpose"] == "a build" and info["command"] == sys.argv
        with pytest.raises(FolderInUse, match=rf"{out} is in use by pid {os.getpid()} .*a build.*"
                                              "wait for it to finish or stop it"):
            with folder_lock(out, "another"):
                pass
    assert (out / ".lock").exists()            # kept: unlinking would race with a waiter
    with folder_lock(out, "again"):            # released on exit
        pass
    assert issubclass(FolderInUse, InputError)


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUse, match=rf"pid {proc.pid} \(-c {tmp_path}; test holder since"):
            with folder_lock(tmp_path, "waiting"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)        # no cleanup runs: the kernel drops the flock
        proc.wait()
        proc.stdout.close()
    with folder_lock(tmp_path, "after the kill"):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_bad_input_inside_a_folder_lock_leaves_nothing_behind(tmp_path):
    from lvmlib.errors import InputError
    from lvmlib.files import folder_lock
    new = tmp_path / "a" / "b" / "bank"
    with pytest.raises(InputError):
        with folder_lock(new, "test"):
            (new / ".build").mkdir()
            (new / ".build" / "part.npy").write_bytes(b"x")
            raise InputError("bad line 3")
    assert not (tmp_path / "a").exists()          # every folder the lock created, taken back
    old = tmp_path / "old"
    old.mkdir()
    (old / "kept.txt").write_text("mine")
    with pytest.raises(InputError):
        with folder_lock(old, "test"):
            (old / "new.txt").write_text("theirs")
            raise InputError("bad key")
    assert sorted(p.name for p in old.iterdir()) == ["kept.txt"]   # the lock file and the new file gone


def test_an_internal_failure_keeps_its_work_for_a_resume(tmp_path):
    from lvmlib.files import LOCK_NAME, folder_lock
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with folder_lock(run, "test"):
            (run / "last.pt").write_bytes(b"x")
            raise RuntimeError("killed mid-epoch")
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "last.pt"]
