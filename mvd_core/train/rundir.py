"""Run folders: one plain tag, created only after the config and the data have been checked,
held by one process at a time, never silently replaced.

    tag = check_tag(cfg.run.tag)                    # ConfigError for "../x", "/abs", ".", ""
    ...check the config and the data...
    with RunLock(run_dir, create=True, resume=False):  # refuses a non-empty folder, locks it
        ...train: config.yaml, log.jsonl, checkpoints/...

The lock is an exclusive ``fcntl.flock`` on ``<run_dir>/.lock`` (holding the pid of its owner);
the kernel drops it when the process dies (kill -9 included), so a crashed run can be resumed at
once. A second process on the same folder fails immediately with a one-line error naming the
holder's pid. A folder the lock created and left empty (a run that failed before writing
anything) is removed again on release.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
from pathlib import Path
from types import TracebackType

from mvd_core.errors import ConfigError, RunInUse
from mvd_core.io import file_mode, is_temp_name, make_dirs, remove_stale_temps

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"

__all__ = ["LOCK_NAME", "RunLock", "check_run_dir", "check_tag", "create_run_dir", "remove_stale_temps", "run_contents"]


def check_tag(tag: str, field: str = "run.tag/--ckpt") -> str:
    """A run tag is one plain folder name: not empty, no ``/`` or ``\\``, not ``.``/``..``, no
    NUL, not starting with ``.`` (hidden) or ``-``. Returns it unchanged; ``ConfigError`` naming
    ``field`` otherwise."""
    why = None
    if not isinstance(tag, str) or tag == "":
        why = "is empty"
    elif "/" in tag or "\\" in tag:
        why = "contains a path separator"
    elif tag in (".", ".."):
        why = "is a relative folder"
    elif "\0" in tag:
        why = "contains a NUL character"
    elif tag.startswith("."):
        why = "starts with '.'"
    elif tag.startswith("-"):
        why = "starts with '-'"
    elif tag != tag.strip():
        why = "has leading or trailing spaces"
    elif len(tag.encode()) > 200:
        why = "is longer than 200 bytes"
    if why is not None:
        raise ConfigError(
            f"{field}={tag!r} {why}: expected one plain folder name (letters, digits, -_.+, "
            "no '/', '..' or absolute paths)"
        )
    return tag


def run_contents(run_dir: str | os.PathLike[str]) -> list[str]:
    """What a run folder holds, ignoring its lock file and stale temp files."""
    p = Path(run_dir)
    try:
        names = sorted(os.listdir(p))
    except FileNotFoundError:
        return []
    return [n for n in names if n != LOCK_NAME and not is_temp_name(n)]


def _holder_pid(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "?"
    return text or "?"


def check_run_dir(path: str | os.PathLike[str], *, resume: bool = False) -> None:
    """Everything :func:`create_run_dir` / :class:`RunLock` would refuse, checked up front
    without creating anything (so a run fails at once, before loading data or building a
    model): a file on the path (ENOTDIR), a read-only or unwritable place (EROFS/EACCES, as an
    ``OSError`` naming the folder), a folder held by a live process (:class:`RunInUse`), an
    existing non-empty folder unless ``resume``, a missing one if ``resume``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the run folder path is a file, expected a folder")
    if not p.is_dir():
        if resume:
            raise ConfigError(f"{p}: no such run folder to resume")
        anc = p.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(anc))
        _check_writable(anc)
        return
    _refuse_in_use(p)
    _check_writable(p)
    if not resume:
        _refuse_non_empty(p)


def _refuse_in_use(p: Path) -> None:
    held = _held_by(p / LOCK_NAME)
    if held is not None:
        raise RunInUse(f"{p}: run folder is in use by process {held} (lock {p / LOCK_NAME})")


def _refuse_non_empty(p: Path) -> None:
    contents = run_contents(p)
    if contents:
        shown = ", ".join(contents[:4]) + (" ..." if len(contents) > 4 else "")
        raise ConfigError(
            f"{p}: run folder exists and is not empty ({shown}); use --resume {p} "
            "or another run.tag/--ckpt"
        )


def _check_writable(folder: Path) -> None:
    if os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        ro = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        ro = False
    code = errno.EROFS if ro else errno.EACCES
    raise OSError(code, os.strerror(code), str(folder))


def create_run_dir(path: str | os.PathLike[str], *, resume: bool = False) -> bool:
    """Create the run folder (parents too) after the config and data were checked. Refuses a
    path that is a file, and an existing non-empty folder unless ``resume``. Returns whether the
    folder was created here (the caller's :class:`RunLock` removes it again if left empty)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the run folder path is a file, expected a folder")
    existed = p.is_dir()
    if existed and not resume:
        _refuse_in_use(p)
        _refuse_non_empty(p)
    if not existed:
        if resume:
            raise ConfigError(f"{p}: no such run folder to resume")
        make_dirs(p)
    return not existed


def _held_by(lock_path: Path) -> str | None:
    """The pid holding ``lock_path`` or None when nobody does (or it does not exist)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder_pid(lock_path)
    finally:
        os.close(fd)
    return None


class RunLock:
    """Exclusive lock on ``run_dir`` for the whole train/resume (a context manager).

    ``create=True`` first calls :func:`create_run_dir` (``resume`` passed on). On entry the
    lock is taken without waiting (:class:`RunInUse` naming the holder's pid otherwise), stale
    temp files of killed writes are removed and, unless ``resume``, the folder must be empty.
    On exit the lock file is removed, and the folder too when this lock created it and it is
    still empty (a run that failed before writing anything leaves nothing behind).
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, create: bool = False, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.lock_path = self.run_dir / LOCK_NAME
        self.create = create
        self.resume = resume
        self.created = False
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self.create:
            self.created = create_run_dir(self.run_dir, resume=self.resume)
        elif not self.run_dir.is_dir():
            raise ConfigError(f"{self.run_dir}: no such run folder")
        try:
            self._lock()
            if not self.resume:
                contents = run_contents(self.run_dir)
                if contents:
                    raise ConfigError(
                        f"{self.run_dir}: run folder exists and is not empty ({', '.join(contents[:4])}); "
                        f"use --resume {self.run_dir} or another run.tag/--ckpt"
                    )
            remove_stale_temps(self.run_dir)
        except BaseException:
            self.release()
            raise
        return self

    def _lock(self) -> None:
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, file_mode())
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(self.lock_path)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunInUse(
                        f"{self.run_dir}: run folder is in use by process "
                        f"{_holder_pid(self.lock_path)} (lock {self.lock_path})"
                    ) from None
                raise OSError(e.errno, e.strerror, str(self.lock_path)) from None
            # the previous holder may have unlinked the file between our open and flock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)  # while still holding it (see _lock)
            os.close(self._fd)
            self._fd = None
        if self.created:
            with contextlib.suppress(OSError):
                if not run_contents(self.run_dir):
                    remove_stale_temps(self.run_dir)
                    self.run_dir.rmdir()
                    log.info("removed the empty run folder %s", self.run_dir)

    def discard_if_unsaved(self, checkpoint: str = "checkpoints/last.safetensors") -> bool:
        """After a fresh run (not a resume) failed before writing ``checkpoint``: remove what it
        wrote (the folder was empty when locked, so everything in it is this run's), so a
        failed ``train`` leaves nothing behind and the same tag can be used again. Returns
        whether anything was removed."""
        if self.resume or self._fd is None or (self.run_dir / checkpoint).exists():
            return False
        removed = False
        for name in run_contents(self.run_dir):
            q = self.run_dir / name
            with contextlib.suppress(OSError):
                if q.is_dir() and not q.is_symlink():
                    shutil.rmtree(q)
                else:
                    q.unlink()
                removed = True
        if removed:
            log.info("removed the outputs of the failed run in %s", self.run_dir)
        return removed

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
