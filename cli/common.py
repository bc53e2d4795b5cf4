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


@functools.cache
def choice_enum(key: str) -> type[enum.Enum]:
    """A str Enum of the config choice ``section.key``: its values are the config field's
    :class:`~mvd_core.config.Choice` (the one schema), so a new choice is a new CLI value."""
    from mvd_core.config import field_choice

    name = "".join(w.capitalize() for w in key.partition(".")[2].split("_"))
    return enum.Enum(name, [(v, v) for v in field_choice(key).values], type=str)  # type: ignore[return-value]


def choice_help(key: str, more: str = "", default: str = "the recipe's") -> str:
    """The option help of the config choice ``section.key``: its field's doc, the default,
    then ``more``."""
    from mvd_core.config import field_choice

    text = field_choice(key).doc + (f" (default: {default})" if default else "") + "."
    return f"{text} {more}" if more else text


def choice_option(key: str, *flags: str, more: str = "", default: str = "the recipe's", **kw: Any) -> Any:
    """``Annotated[Optional[<the choice's Enum>], typer.Option(*flags, help=...)]``."""
    return Annotated[Optional[choice_enum(key)],
                     typer.Option(*flags, help=choice_help(key, more, default), **kw)]


def amp_support() -> str:
    """What each backend's devices train in (the backend table): for the --amp help."""
    from mvd_core.registry import BACKENDS

    return "; ".join(f"{f.name}: " + ", ".join(f"{d.name} {'|'.join(d.amp)}" for d in f.devices)
                     for f in BACKENDS.values())


def device_help(more: str = "") -> str:
    from mvd_core.devices import accepted_devices

    return f"{accepted_devices()}; GPU and cuda are the same device" + (f" {more}" if more else "") + "."


BackendName = choice_enum("run.backend")
MsMode = choice_enum("run.ms_mode")
BackendOpt = choice_option("run.backend", "--backend", "-b")
DeviceOpt = Annotated[Optional[str], typer.Option("--device", "-d", help=device_help())]
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
MsModeOpt = choice_option("run.ms_mode", "--ms-mode")

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


def flag_settings(keys: dict[str, str], values: dict[str, Any]) -> list[Any]:
    """Typed config settings of the options given: ``keys`` maps an option's parameter name to
    the config key it sets; each value not None becomes ``Setting(key, value, "--option-name")``
    (mvd_core.config.Setting: applied as the typed value, not re-parsed)."""
    from mvd_core.config import Setting

    return [Setting(keys[k], v, "--" + k.replace("_", "-")) for k, v in values.items()
            if k in keys and v is not None]


def explicit_overrides(
    sets: Optional[list[str]] = None,
    backend: Optional[enum.Enum] = None,
    ms_mode: Optional[enum.Enum] = None,
    extra: Optional[list[Any]] = None,
) -> list[Any]:
    """The settings a user gave explicitly: typed settings of the flags first, then ``--set``
    strings (``section.key=value``)."""
    overrides: list[Any] = list(extra or [])
    overrides += flag_settings({"backend": "run.backend", "ms_mode": "run.ms_mode"},
                               {"backend": backend, "ms_mode": ms_mode})
    overrides.extend(sets or [])
    return overrides


def build_config(
    config: Optional[str],
    sets: Optional[list[str]] = None,
    backend: Optional[enum.Enum] = None,
    device: Optional[str] = None,
    ms_mode: Optional[enum.Enum] = None,
    extra: Optional[list[Any]] = None,
):
    """Recipe + the common flags + `--set` overrides → a validated Config (device normalised)."""
    import dataclasses

    from mvd_core.config import apply_overrides, load_config
    from mvd_core.devices import normalize_device

    cfg = load_config(config if config is not None else "mvd-ms")
    cfg = apply_overrides(cfg, explicit_overrides(sets, backend, ms_mode, extra))
    dev = normalize_device(cfg.run.backend, device if device is not None else cfg.run.device)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=dev))
