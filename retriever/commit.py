"""How a write becomes durable and current: files replaced atomically, fsync, and the one writer's
lock (writer.json says who holds it)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path

from retriever.errors import IndexLockedError

LOCK = ".lock"
WRITER = "writer.json"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb+") as f:
                os.fsync(f.fileno())
    fsync_dir(directory)


@contextlib.contextmanager
def write_lock(directory: Path, wait: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(directory / LOCK))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        holder = directory / WRITER
        who = ""
        if holder.is_file():
            with contextlib.suppress(ValueError, OSError):
                info = json.loads(holder.read_text())
                who = f" (pid {info['pid']}, since {info['since']})"
        raise IndexLockedError(f"{directory}: another process is writing to this index{who}; wait for it to "
                               f"finish, or pass --wait SECONDS") from None
    try:
        (directory / WRITER).write_text(json.dumps({"pid": os.getpid(), "since": utc_now()}))
        yield
    finally:
        with contextlib.suppress(OSError):
            (directory / WRITER).unlink()
        lock.release()
