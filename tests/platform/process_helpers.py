"""Stopping what a test started: a process group, and the Ray processes that left it."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def kill_tree(group: int, ray_tmp: str | None = None) -> None:
    """SIGKILL the process group ``group``, then every process whose command line names
    ``ray_tmp`` (Ray's daemons detach from the group that started them; their command lines
    carry the session's temp dir, which is the test's own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    if ray_tmp is None:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if ray_tmp in command:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
