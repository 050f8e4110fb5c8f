"""lab/processes.py: liveness (zombies count as gone), identity by argument, log tails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.processes import pid_alive, runs_command, tail, wait_until

LINUX = Path("/proc").is_dir()


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_an_unreaped_child_is_not_alive_and_identity_is_by_exact_argument(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(30)", str(tmp_path / "broker-10")])
    try:
        assert pid_alive(sleeper.pid)
        assert runs_command(sleeper.pid, str(tmp_path / "broker-10"))
        assert not runs_command(sleeper.pid, str(tmp_path / "broker-1"))  # a prefix is not a match
    finally:
        sleeper.kill()
    # Killed but not yet reaped: a zombie, which must count as gone.
    assert wait_until(lambda: not pid_alive(sleeper.pid), timeout_s=5)
    sleeper.wait()
    assert not pid_alive(None) and not pid_alive(0)


def test_tail_returns_the_last_non_empty_lines(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text("".join(f"line {i}\n\n" for i in range(10)))
    assert tail(log, 3) == ["line 7", "line 8", "line 9"]
    assert tail(tmp_path / "missing.log") == []
