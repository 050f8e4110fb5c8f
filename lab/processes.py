"""Detached node processes: start one with its output in a log file, check it, stop it.

Nodes run in their own session (``start_new_session=True``) so they outlive the ``brokerlab``
command that started them and never see the terminal's Ctrl-C; their process group id equals
their pid, which lets us signal the whole group. A pid read back from a state file is only
signalled after checking that the process still runs the command we started (pids get reused).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def brokerlab_command() -> list[str]:
    """How to run the ``brokerlab`` CLI from this interpreter: its venv's script, one on PATH, or
    ``python -m cli.main`` (a checkout without the package installed)."""
    script = Path(sys.executable).with_name("brokerlab")
    if script.exists():
        return [str(script)]
    found = shutil.which("brokerlab")
    return [found] if found else [sys.executable, "-m", "cli.main"]

def spawn(command: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` detached, stdin closed, stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _proc_stat_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat (``R``, ``S``, ``Z``...), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    # The command name is in parentheses and may contain spaces; the state follows the last ')'.
    return text.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int | None) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    if not pid or pid <= 0:
        return False
    if Path("/proc").is_dir():
        state = _proc_stat_state(pid)
        return state is not None and state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runs_command(pid: int, argument: str) -> bool:
    """Whether process ``pid`` has ``argument`` (its data directory) as one of its arguments.

    Where /proc is missing we cannot tell and trust the state file.
    """
    if not Path("/proc").is_dir():
        return pid_alive(pid)
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(argument) in arguments


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(interval_s)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def terminate(
    pid: int,
    popen: subprocess.Popen | None = None,
    timeout_s: float = 10.0,
    kill_timeout_s: float = 5.0,
    sig: int = signal.SIGTERM,
) -> bool:
    """Send ``sig`` to the process group, wait up to ``timeout_s``, then SIGKILL.

    Returns True if the process ended within the first deadline (a clean stop).
    """
    def gone() -> bool:
        if popen is not None:
            return popen.poll() is not None
        return not pid_alive(pid)

    if gone():
        return True
    _signal_group(pid, sig)
    if wait_until(gone, timeout_s):
        return True
    _signal_group(pid, signal.SIGKILL)
    wait_until(gone, kill_timeout_s)
    return False


def tail(path: Path, lines: int = 5) -> list[str]:
    """The last lines of a log file (for error messages when a node dies at start-up)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


PYTHON = sys.executable
