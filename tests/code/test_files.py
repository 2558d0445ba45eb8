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
