"""The one atomic writer: every file the toolkit writes goes through here.

A file is written to a temp file in its target folder (``.NAME.XXXXXXXX.tmp``, optionally
followed by a suffix a library insists on, e.g. ``.tmp.ckpt``), flushed and fsynced, given the
mode ``0o666 & ~umask`` (what ``open()`` would give it: colleagues on a shared cluster can read a
prepared cache), renamed over the target and the folder fsynced, so a reader never sees a
half-written file and a crash never leaves one under the final name.

A writer holds an exclusive ``flock`` on its temp file while it writes; :func:`remove_stale_temps`
deletes only temp files nobody holds (left by a killed writer) and is called when a run or a cache
preparation starts. On any failure the temp file is removed and the error re-raised; an
``OSError`` always names the path it was about (the CLI prints it as one line).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

#: temp names: "." + target name + "." + 8 random characters (mkstemp) + ".tmp" [+ ".ext"]
TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")

_umask: int | None = None
_umask_lock = threading.Lock()


def umask() -> int:
    """The process umask, read once (from /proc where available: reading it with ``os.umask``
    means setting it, which races with threads creating files)."""
    global _umask
    if _umask is None:
        with _umask_lock:
            if _umask is None:
                value = None
                try:
                    with open("/proc/self/status", encoding="ascii") as f:
                        for line in f:
                            if line.startswith("Umask:"):
                                value = int(line.split()[1], 8)
                                break
                except (OSError, ValueError):
                    value = None
                if value is None:  # pragma: no cover - non-Linux
                    value = os.umask(0o022)
                    os.umask(value)
                _umask = value
    return _umask


def file_mode() -> int:
    """Mode of every file written here: ``0o666 & ~umask`` (as a plain ``open()``)."""
    return 0o666 & ~umask()


def named_oserror(
    e: OSError, path: str | os.PathLike[str], tmp: str | os.PathLike[str] | None = None
) -> OSError:
    """``e`` naming ``path``: when it names no file (ENOSPC from ``write``) or only the temp
    file ``tmp`` (which is removed: the user asked for ``path``)."""
    if e.errno is None:
        return e
    if e.filename is not None and (tmp is None or os.fspath(e.filename) != os.fspath(tmp)):
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a folder (makes a rename durable); silently skipped where the platform refuses."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # EINVAL/EBADF: folders cannot be fsynced on this file system
        if e.errno not in (_errno.EINVAL, _errno.EBADF, _errno.EROFS):
            raise
    finally:
        os.close(fd)


def make_dirs(folder: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` (mode 0o777 & ~umask); an OSError names the folder."""
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(_errno.ENOTDIR, "Not a directory", str(p)) from None
    except OSError as e:
        raise named_oserror(e, p) from None
    return p


def make_temp_dir(target: str | os.PathLike[str]) -> Path:
    """A fresh folder next to ``target`` to fill and rename into place, with the mode a plain
    ``mkdir`` gives (``mkdtemp`` makes it 0700: a synthetic data set nobody else could read)."""
    target = Path(target)
    make_dirs(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(tmp, 0o777 & ~umask())
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(target)) from None
    return tmp


class StagedFile:
    """A temp file next to ``path`` (flock-marked as live) that :meth:`commit` fsyncs, chmods
    and renames into place, or :meth:`discard` removes. Several staged files can be committed
    together at the end of a multi-file job (``mvd prepare``)."""

    def __init__(self, path: str | os.PathLike[str], suffix: str = "") -> None:
        self.path = Path(path)
        make_dirs(self.path.parent)
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp" + suffix, dir=self.path.parent
            )
        except OSError as e:  # it names the random temp name: name the file asked for
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        self.tmp = Path(tmp)
        self._fd: int | None = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            self.discard()
            raise

    def open(self, mode: str = "wb", encoding: str | None = None) -> IO[Any]:
        """A file object writing the temp file (from its start); closing it keeps the lock."""
        if self._fd is None:
            raise ValueError(f"{self.path}: staged file already committed or discarded")
        f = os.fdopen(os.dup(self._fd), mode, encoding=encoding if "b" not in mode else None)
        f.seek(0)
        return f

    def reserve(self, nbytes: int) -> None:
        """Allocate ``nbytes`` now (``posix_fallocate``): a full disk fails here with ENOSPC,
        never later with SIGBUS in a memory map or half-way through a long job."""
        if self._fd is None or nbytes <= 0:
            return
        try:
            os.posix_fallocate(self._fd, 0, nbytes)
        except OSError as e:
            if e.errno in (_errno.EOPNOTSUPP, _errno.EINVAL):  # not supported here: writes tell
                return
            raise named_oserror(e, self.path) from None

    def commit(self) -> Path:
        if self._fd is None:
            raise ValueError(f"{self.path}: staged file already committed or discarded")
        try:
            os.fsync(self._fd)
            os.fchmod(self._fd, file_mode())
            # rename while still holding the lock: the temp name never exists unlocked
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as e:
            self.discard()
            raise named_oserror(e, self.path, self.tmp) from None
        os.close(self._fd)
        self._fd = None
        return self.path

    def discard(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(self, tp: Any, exc: Any, tb: Any) -> None:
        self.discard()  # a no-op after commit()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to ``path`` for a library that writes by file name (MindSpore's
    ``save_checkpoint``, ``np.savez``: ``suffix`` is the extension it would otherwise append).
    On a clean exit the file is fsynced, chmod-ed, renamed over ``path``; on error removed."""
    staged = StagedFile(path, suffix)
    try:
        yield staged.tmp
        if not staged.tmp.is_file():
            raise FileNotFoundError(_errno.ENOENT, "the writer left no file", str(staged.tmp))
        # the library may have replaced the file: finish on a fresh descriptor of the new inode
        fd = os.open(staged.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        staged.commit()
    except BaseException as e:
        staged.discard()
        if isinstance(e, OSError):
            raise named_oserror(e, staged.path, staged.tmp) from None
        raise


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Stream into ``path`` atomically: ``with atomic_writer(p) as f: np.save(f, a)``."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer: mode {mode!r} (expected 'wb' or 'w')")
    staged = StagedFile(path)
    try:
        with staged.open(mode, encoding=encoding) as f:
            yield f
            f.flush()
        staged.commit()
    except BaseException as e:
        staged.discard()
        if isinstance(e, OSError):
            raise named_oserror(e, staged.path, staged.tmp) from None
        raise


def commit_file(src: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Move a finished file a library wrote elsewhere on the same file system (a private temp
    folder: MindSpore's exporters pick their own file names) into place as the writers here do:
    fsync, mode ``0o666 & ~umask``, rename, fsync the folder. ``src`` is gone afterwards."""
    src, path = Path(src), Path(path)
    try:
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        os.replace(src, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            src.unlink()
        raise named_oserror(e, path, src) from None
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], blob: bytes) -> Path:
    """Write ``blob`` to ``path`` atomically (see the module docstring). Returns the path."""
    with atomic_writer(path, "wb") as f:
        f.write(blob)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (plus a newline) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of this module's temp file names."""
    return TEMP_RE.match(name) is not None


def remove_stale_temps(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Delete the temp files under ``folder`` that no live writer holds (a killed write's
    leftovers). Returns the removed paths. A missing folder is fine (nothing to do)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
    for dirpath, _dirs, files in walker:
        for name in files:
            if not is_temp_name(name):
                continue
            p = Path(dirpath) / name
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
            finally:
                os.close(fd)
    if removed:
        log.info("removed %d stale temp file(s) under %s", len(removed), root)
    return removed
