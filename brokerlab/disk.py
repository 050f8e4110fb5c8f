"""The disk port: what the log and the metadata journal need from a filesystem.

Two implementations with one behaviour: ``OsDisk`` (real files, real fsync) and ``MemoryDisk``
(the simulator's disk, which remembers what was fsynced and forgets the rest on ``crash()``,
i.e. power loss; a plain process kill keeps everything, as the OS page cache does).

Paths are ``/``-separated strings relative to the disk's root.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Protocol


class DiskFile(Protocol):
    """An open file: appends at the end, reads anywhere."""

    def append(self, data: bytes) -> int:
        """Append ``data``; returns the position it was written at."""
        ...

    def read(self, position: int, size: int) -> bytes: ...

    def size(self) -> int: ...

    def truncate(self, size: int) -> None: ...

    def fsync(self) -> None: ...

    def close(self) -> None: ...


class Disk(Protocol):
    def open(self, path: str) -> DiskFile:
        """Open for append and read, creating the file if missing."""
        ...

    def exists(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]: ...

    def makedirs(self, path: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def rmtree(self, path: str) -> None: ...

    def read_file(self, path: str) -> bytes: ...

    def write_file_atomic(self, path: str, data: bytes, ticket: int | None = None) -> bool:
        """Write temp -> fsync -> replace -> fsync the directory (crash-safe metadata files).

        ``ticket`` (from ``write_ticket``, taken when the content was computed) orders writes
        of one path that may run on different threads: a write whose ticket is older than the
        last one written there is dropped (returns False), so late content never lands over
        newer. Without a ticket the write takes a fresh one.
        """
        ...

    def write_ticket(self) -> int:
        """A number larger than every ticket handed out before, by this disk."""
        ...

    def write_file(self, path: str, data: bytes) -> None:
        """Write temp -> replace, no fsync: readers never see a torn file, but a power loss may
        lose it (or leave its old content) until ``fsync_path`` and a directory fsync."""
        ...

    def fsync_path(self, path: str) -> None:
        """fsync the file at ``path`` (FileNotFoundError if it is gone)."""
        ...

    def rename(self, src: str, dst: str) -> None: ...

    def fsync_dir(self, path: str) -> None: ...


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


class OsFile:
    __slots__ = ("_fd", "_size")

    def __init__(self, full_path: str) -> None:
        self._fd = os.open(full_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> int:
        position = self._size
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)
        return position

    def read(self, position: int, size: int) -> bytes:
        return os.pread(self._fd, size, position)

    def size(self) -> int:
        return self._size

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._size = size

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsDisk:
    """Real files under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        # Atomic writes may come from the event loop and from blocking jobs' threads at once:
        # one lock per path orders them, and its newest written ticket drops late ones.
        self._tickets = itertools.count(1)
        self._guard = threading.Lock()
        self._path_locks: dict[str, threading.Lock] = {}
        self._written_tickets: dict[str, int] = {}

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def open(self, path: str) -> OsFile:
        return OsFile(self._full(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(self._full(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._full(path)))
        except FileNotFoundError:
            return []

    def makedirs(self, path: str) -> None:
        os.makedirs(self._full(path), exist_ok=True)

    def remove(self, path: str) -> None:
        try:
            os.remove(self._full(path))
        except FileNotFoundError:
            pass

    def rmtree(self, path: str) -> None:
        import shutil

        shutil.rmtree(self._full(path), ignore_errors=True)

    def read_file(self, path: str) -> bytes:
        with open(self._full(path), "rb") as handle:
            return handle.read()

    def write_ticket(self) -> int:
        with self._guard:
            return next(self._tickets)

    def write_file_atomic(self, path: str, data: bytes, ticket: int | None = None) -> bool:
        if ticket is None:
            ticket = self.write_ticket()
        with self._guard:
            lock = self._path_locks.setdefault(path, threading.Lock())
        with lock:
            if ticket < self._written_tickets.get(path, 0):
                return False
            full = self._full(path)
            temp = full + ".tmp"
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, full)
            self.fsync_dir(_parent(path))
            self._written_tickets[path] = ticket
            return True

    def write_file(self, path: str, data: bytes) -> None:
        full = self._full(path)
        temp = full + ".tmp"
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, full)

    def fsync_path(self, path: str) -> None:
        fd = os.open(self._full(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.replace(self._full(src), self._full(dst))

    def fsync_dir(self, path: str) -> None:
        self.fsync_path(path)  # a directory opens read-only and fsyncs like a file


class MemoryFile:
    __slots__ = ("_disk", "_path")

    def __init__(self, disk: "MemoryDisk", path: str) -> None:
        self._disk = disk
        self._path = path

    def _data(self) -> bytearray:
        return self._disk._files[self._path]

    def append(self, data: bytes) -> int:
        buf = self._data()
        position = len(buf)
        buf += data
        return position

    def read(self, position: int, size: int) -> bytes:
        return bytes(self._data()[position : position + size])

    def size(self) -> int:
        return len(self._data())

    def truncate(self, size: int) -> None:
        del self._data()[size:]

    def fsync(self) -> None:
        self._disk._durable[self._path] = bytes(self._data())

    def close(self) -> None:
        pass


class MemoryDisk:
    """An in-memory disk for simulation and tests.

    ``crash()`` models power loss: every file returns to its last fsynced content, and a file
    never fsynced disappears. Data written but not fsynced survives a mere process kill,
    which the simulator models by rebuilding the core over the same MemoryDisk without a crash.
    """

    def __init__(self) -> None:
        self._files: dict[str, bytearray] = {}
        self._durable: dict[str, bytes] = {}
        self._dirs: set[str] = {""}
        self._tickets = 0
        self._written_tickets: dict[str, int] = {}

    def open(self, path: str) -> MemoryFile:
        if path not in self._files:
            self._files[path] = bytearray()
            self._add_dirs(_parent(path))
        return MemoryFile(self, path)

    def _add_dirs(self, path: str) -> None:
        while path and path not in self._dirs:
            self._dirs.add(path)
            path = _parent(path)

    def exists(self, path: str) -> bool:
        return path in self._files or path in self._dirs

    def listdir(self, path: str) -> list[str]:
        prefix = path + "/" if path else ""
        names = set()
        for candidate in list(self._files) + list(self._dirs):
            if candidate.startswith(prefix) and candidate != path:
                names.add(candidate[len(prefix) :].split("/", 1)[0])
        return sorted(names)

    def makedirs(self, path: str) -> None:
        self._add_dirs(path)

    def remove(self, path: str) -> None:
        self._files.pop(path, None)
        self._durable.pop(path, None)

    def rmtree(self, path: str) -> None:
        prefix = path + "/"
        for name in [f for f in self._files if f.startswith(prefix)]:
            self.remove(name)
        self._dirs = {d for d in self._dirs if d != path and not d.startswith(prefix)}

    def read_file(self, path: str) -> bytes:
        if path not in self._files:
            raise FileNotFoundError(path)
        return bytes(self._files[path])

    def write_ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def write_file_atomic(self, path: str, data: bytes, ticket: int | None = None) -> bool:
        if ticket is None:
            ticket = self.write_ticket()
        if ticket < self._written_tickets.get(path, 0):
            return False
        self._written_tickets[path] = ticket
        self._files[path] = bytearray(data)
        self._durable[path] = bytes(data)
        self._add_dirs(_parent(path))
        return True

    def write_file(self, path: str, data: bytes) -> None:
        self._files[path] = bytearray(data)  # the durable copy, if any, stays the old content
        self._add_dirs(_parent(path))

    def fsync_path(self, path: str) -> None:
        if path not in self._files:
            raise FileNotFoundError(path)
        self._durable[path] = bytes(self._files[path])

    def rename(self, src: str, dst: str) -> None:
        self._files[dst] = self._files.pop(src)
        if src in self._durable:
            self._durable[dst] = self._durable.pop(src)

    def fsync_dir(self, path: str) -> None:
        pass

    def crash(self) -> None:
        """Power loss: keep only what was fsynced."""
        self._files = {path: bytearray(data) for path, data in self._durable.items()}

    # Fault injection for tests and the lab.
    def corrupt(self, path: str, position: int, data: bytes) -> None:
        """Overwrite bytes in place (durably), e.g. a bit flip on the platter."""
        buf = self._files[path]
        buf[position : position + len(data)] = data
        self._durable[path] = bytes(buf)

    def file_bytes(self, path: str) -> bytes:
        return bytes(self._files[path])
