"""The import rules of ARCHITECTURE.md, checked with ``ast``.

- ``brokerlab`` imports nothing of ours; ``node``, ``controller`` and ``client`` never import each
  other; ``lab`` never imports ``cli``; nothing imports ``cli``.
- Only modules in an ``rpc/`` folder import ``grpc`` or generated ``*_pb2_grpc`` modules.
- Cores are pure: outside the adapters listed below, no module reaches for sockets, threads,
  asyncio, the clock, global randomness, uuid4 or the OS.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"brokerlab", "node", "controller", "client", "lab", "cli"}
MAY_IMPORT = {
    "brokerlab": {"brokerlab"},
    "node": {"brokerlab", "node"},
    "controller": {"brokerlab", "controller"},
    "client": {"brokerlab", "client"},
    "lab": {"brokerlab", "node", "controller", "client", "lab"},
    "cli": OURS,
}
IMPURE = {"socket", "asyncio", "threading", "time", "random", "uuid", "os", "grpc", "subprocess",
          "signal", "selectors", "concurrent", "shutil", "multiprocessing", "datetime"}
# Adapters: the only modules of the core packages allowed to do I/O, each for one reason.
ADAPTERS = {
    "brokerlab/driver.py": "the asyncio driver that runs a core in a real process",
    "brokerlab/disk.py": "OsDisk, the real implementation of the disk port",
    "brokerlab/process_main.py": "the main() of python -m node|controller: flags, logfmt, asyncio.run, exit codes",
    "client/producer/producer.py": "the asyncio Producer facade around the sans-IO accumulator/sender",
    "client/consumer/consumer.py": "the asyncio Consumer facade around the sans-IO fetch core",
    "client/consumer/group_runner.py": "the asyncio side of consumer groups (heartbeat timer, poll-path callbacks)",
    "client/admin.py": "the asyncio Admin facade",
    "client/group_admin.py": "the asyncio consumer group admin calls behind Admin",
    "client/sync.py": "blocking facades: an event loop in a background thread",
}
CORE_PACKAGES = ("brokerlab", "node", "controller", "client")


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "/v1/" not in p.as_posix())


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def in_rpc_folder(path: Path) -> bool:
    return "rpc" in path.relative_to(ROOT).parts[:-1]


@pytest.mark.parametrize("package", sorted(OURS))
def test_packages_import_only_what_they_may(package: str) -> None:
    problems = []
    for path in python_files(package):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in OURS and top not in MAY_IMPORT[package]:
                problems.append(f"{relative(path)} imports {name}")
    assert not problems, "\n".join(problems)


def test_only_rpc_modules_import_grpc() -> None:
    problems = []
    for package in OURS:
        for path in python_files(package):
            for name in imported_modules(path):
                uses_grpc = name.split(".")[0] in {"grpc", "grpc_health", "grpc_reflection"}
                if (uses_grpc or name.endswith("_pb2_grpc")) and not in_rpc_folder(path):
                    problems.append(f"{relative(path)} imports {name}")
    assert not problems, "\n".join(problems)


def test_cores_do_no_io() -> None:
    problems = []
    for package in CORE_PACKAGES:
        for path in python_files(package):
            rel = relative(path)
            if rel in ADAPTERS or in_rpc_folder(path) or path.name == "__main__.py":
                continue
            for name in imported_modules(path):
                if name.split(".")[0] in IMPURE:
                    problems.append(f"{rel} imports {name}")
    assert not problems, "\n".join(problems)


def test_adapter_list_is_current() -> None:
    missing = [name for name in ADAPTERS if not (ROOT / name).exists()]
    assert not missing, f"ADAPTERS names files that no longer exist: {missing}"
