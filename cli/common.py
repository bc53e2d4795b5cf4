"""Options shared by every command, defined once, and the error edge of the CLI."""

from __future__ import annotations

import enum
import errno
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar

import typer

from mvd_core.errors import MvdError

log = logging.getLogger("mvd")


class BackendName(str, enum.Enum):
    torch = "torch"
    mindspore = "mindspore"


class MsMode(str, enum.Enum):
    graph = "graph"
    pynative = "pynative"


BackendOpt = Annotated[
    Optional[BackendName],
    typer.Option("--backend", "-b", help="Framework: torch | mindspore (default: the recipe's)."),
]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--device",
        "-d",
        help="CPU | GPU | Ascend (MindSpore names) or cpu | cuda | cuda:N (torch names); "
        "GPU and cuda are the same device.",
    ),
]
ConfigOpt = Annotated[
    Optional[str],
    typer.Option("--config", "-c", help="Recipe name (mvd-ms, mvd-pt, tiny, demo) or a YAML file."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", "-s", help="Override a config key, e.g. --set model.width=16 (repeatable)."
    ),
]
MsModeOpt = Annotated[
    Optional[MsMode],
    typer.Option("--ms-mode", help="MindSpore execution mode: graph | pynative."),
]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


#: I/O failures of the environment (not bugs): one line naming the path, exit 2
IO_ERRNOS = frozenset(
    getattr(errno, n) for n in (
        "ENOSPC", "EDQUOT", "EROFS", "ENOTDIR", "EISDIR", "EACCES", "EPERM", "EEXIST", "EFBIG",
        "ENAMETOOLONG", "ELOOP", "EIO", "EMFILE", "ENFILE", "ENOTEMPTY", "EXDEV",
    ) if hasattr(errno, n)
)


def io_error_line(e: OSError) -> str:
    """``PATH: cannot write (No space left on device)``-style line for an OSError."""
    path = e.filename if e.filename is not None else "?"
    why = e.strerror or os.strerror(e.errno or 0)
    verb = "cannot access"
    if e.errno in (errno.ENOSPC, errno.EROFS, errno.EFBIG) or getattr(errno, "EDQUOT", -1) == e.errno:
        verb = "cannot write"
    line = f"{path}: {verb} ({why})"
    if e.filename2 is not None:
        line += f" [and {e.filename2}]"
    return line.replace("\n", " ")


def cli_errors(fn: F) -> F:
    """Turn domain errors (bad input) into one line on stderr and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MvdError as e:
            raise fail(str(e)) from None
        except FileNotFoundError as e:
            raise fail(f"{e.filename}: no such file or folder") from None
        except OSError as e:
            if e.errno not in IO_ERRNOS:
                raise
            raise fail(io_error_line(e)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)


def explicit_overrides(
    sets: Optional[list[str]] = None,
    backend: Optional[BackendName] = None,
    ms_mode: Optional[MsMode] = None,
    extra: Optional[list[str]] = None,
) -> list[str]:
    """The settings a user gave explicitly, as ``section.key=value`` (flags first, then --set)."""
    overrides: list[str] = list(extra or [])
    if backend is not None:
        overrides.append(f"run.backend={backend.value}")
    if ms_mode is not None:
        overrides.append(f"run.ms_mode={ms_mode.value}")
    overrides.extend(sets or [])
    return overrides


def build_config(
    config: Optional[str],
    sets: Optional[list[str]] = None,
    backend: Optional[BackendName] = None,
    device: Optional[str] = None,
    ms_mode: Optional[MsMode] = None,
    extra: Optional[list[str]] = None,
):
    """Recipe + the common flags + `--set` overrides → a validated Config (device normalised)."""
    import dataclasses

    from mvd_core.config import apply_overrides, load_config
    from mvd_core.devices import normalize_device

    cfg = load_config(config if config is not None else "mvd-ms")
    cfg = apply_overrides(cfg, explicit_overrides(sets, backend, ms_mode, extra))
    dev = normalize_device(cfg.run.backend, device if device is not None else cfg.run.device)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=dev))
