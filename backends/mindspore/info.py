"""What this machine's MindSpore offers (`mvd info`, through mvd_core.registry): version, devices."""

from __future__ import annotations

import logging
import os

import mindspore as ms

from mvd_core.registry import facts


def version() -> str:
    return str(ms.__version__)


def list_devices() -> list[str]:
    """``CPU`` and each device target of the backend table whose MindSpore plugin loads."""
    # a missing plugin is an answer here, not a warning: MindSpore's own logger says it twice
    ms_log = logging.getLogger(f"ME.mindspore.log.{os.getpid()}")
    level = ms_log.level
    ms_log.setLevel(logging.ERROR)
    devs = []
    try:
        for dev in facts("mindspore").devices:
            try:
                ok = dev.name == "CPU" or bool(ms.hal.is_available(dev.name))
            except Exception:  # noqa: BLE001 - a broken driver must not break `mvd info`
                ok = False
            if ok:
                devs.append(dev.name)
    finally:
        ms_log.setLevel(level)
    return devs
