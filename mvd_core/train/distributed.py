"""Multi-process training on the frameworks' own engines: who am I (rank/world from the
launcher's environment), and launching N local workers with the framework's own launcher.

Framework-free: the process group itself is created by the backend (``torch.distributed`` with
gloo on the CPU / nccl on CUDA; ``mindspore.communication`` with mccl on the CPU, nccl on GPU,
hccl on Ascend) from the environment its launcher sets:

* torch (``torchrun`` / ``python -m torch.distributed.run``): ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
* MindSpore (``msrun``, or its dynamic-cluster variables): ``MS_ROLE`` (``MS_WORKER`` |
  ``MS_SCHED``), ``MS_WORKER_NUM``, ``RANK_ID`` (msrun) or ``MS_NODE_ID``, ``MS_SCHED_HOST``,
  ``MS_SCHED_PORT``. msrun also runs the script once as the *scheduler* (``MS_ROLE=MS_SCHED``):
  that process only joins the cluster (``init()`` serves the rendezvous and exits it).

``mvd train --nproc N`` (or ``run.nproc=N``) re-runs the same command line under the
framework's launcher with N local workers (:func:`launch`); a multi-node job calls the same
``mvd train`` under ``torchrun --nnodes/--node-rank`` or ``msrun --worker_num/--node_rank``
itself (README, "Multi-process and mixed precision").

Semantics (what the driver and the backends do with a :class:`DistEnv` of world size W):

* data: every step draws ``data.num_ids × W`` distinct identities from the run's seed (one
  shared draw per step), rank r trains on identities ``r·num_ids .. (r+1)·num_ids − 1`` of it
  (disjoint within a step), with its own augmentation stream seeded by (seed, epoch, step,
  rank); steps per epoch shrink W-fold (the sampler sees W·num_ids ids per step);
* each rank computes its losses on its batch; gradients are averaged over the ranks (one
  all-reduce per step); logged losses are the rank mean;
* BatchNorm: per rank by default (the running statistics are then averaged over the ranks after
  every step, so every rank holds the same state); ``model.sync_bn=true`` computes the batch
  statistics over all ranks (torch: ``nn.SyncBatchNorm`` on CUDA, an all-reduce of per-channel
  sum / sum of squares / count on the CPU; MindSpore: an ``ops.AllReduce`` of the same sums);
* rank 0 alone writes the run folder (config, log, checkpoints, reports) and evaluates; at
  every epoch end the ranks check that they hold identical parameters;
* checkpoints stay framework-free and rank-free: resumable on any number of ranks (exact when
  the number is unchanged: the data plan depends on W).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mvd_core import registry
from mvd_core.errors import MvdError

log = logging.getLogger(__name__)

LAUNCHERS = ("none", "torchrun", "msrun")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a multi-process job (``launcher="none"``: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # none | torchrun | msrun
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    scheduler: bool = False  # the msrun scheduler process (joins the cluster, trains nothing)

    @property
    def enabled(self) -> bool:
        return self.launcher != "none"

    @property
    def is_main(self) -> bool:
        """Rank 0 (the one process that writes files); the scheduler never is."""
        return self.rank == 0 and not self.scheduler


def _int(environ: Mapping[str, str], key: str, default: int | None = None) -> int:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        if default is None:
            raise MvdError(f"${key}: expected an integer (set by the launcher), it is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise MvdError(f"${key}={raw!r}: expected an integer") from None


def from_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The :class:`DistEnv` the launcher's variables describe (single process if none)."""
    env = os.environ if environ is None else environ
    role = env.get("MS_ROLE", "")
    if role:
        if role not in ("MS_WORKER", "MS_SCHED"):
            raise MvdError(f"$MS_ROLE={role!r}: expected MS_WORKER or MS_SCHED")
        world = _int(env, "MS_WORKER_NUM")
        sched = role == "MS_SCHED"
        rank = 0 if sched else _int(env, "RANK_ID", _int(env, "MS_NODE_ID", 0))
        out = DistEnv(rank, world, _int(env, "DEVICE_ID", rank) if not sched else 0, "msrun",
                      env.get("MS_SCHED_HOST", "127.0.0.1"), _int(env, "MS_SCHED_PORT", 0), sched)
    elif "WORLD_SIZE" in env or "RANK" in env:
        world = _int(env, "WORLD_SIZE")
        rank = _int(env, "RANK")
        out = DistEnv(rank, world, _int(env, "LOCAL_RANK", rank), "torchrun",
                      env.get("MASTER_ADDR", "127.0.0.1"), _int(env, "MASTER_PORT", 0))
    else:
        return DistEnv()
    if out.world_size < 1 or not 0 <= out.rank < out.world_size:
        raise MvdError(
            f"distributed environment: rank {out.rank} of world size {out.world_size} "
            "(expected 0 <= rank < world size >= 1)"
        )
    return out


def current() -> DistEnv:
    return from_env()


def check_backend(env: DistEnv, backend: str) -> None:
    """A worker must be launched by its own framework's launcher."""
    want = registry.BACKENDS[backend].launcher if backend in registry.BACKENDS else None
    if env.enabled and want is not None and env.launcher != want:
        raise MvdError(
            f"--backend {backend}: this process was started by {env.launcher}; the {backend} "
            f"backend trains multi-process under {want} (mvd train --nproc N starts it)"
        )


# --------------------------------------------------------------------------- launching

def free_port() -> int:
    """A TCP port free on this host now (for the launcher's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mvd_script() -> Path:
    """The ``mvd`` console script of this interpreter's environment (what the workers run)."""
    cand = Path(sys.executable).with_name("mvd")
    if cand.is_file():
        return cand
    found = shutil.which("mvd")
    if found is None:
        raise MvdError("mvd train --nproc: cannot find the 'mvd' command to start the workers "
                       "(install the project: pip install -e .)")
    return Path(found)


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the workers must not relaunch)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def launch_command(
    backend: str, nproc: int, argv: Sequence[str], *, port: int, log_dir: Path,
    script: Path | None = None,
) -> list[str]:
    """The launcher command line running ``mvd <argv>`` in ``nproc`` local workers."""
    if nproc < 1:
        raise MvdError(f"--nproc {nproc}: expected at least 1")
    launcher = registry.facts(backend).launcher  # an unknown backend: one line
    script = script if script is not None else mvd_script()
    args = strip_nproc(argv)
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
                "--master-port", str(port), str(script), *args]
    if launcher == "msrun":
        msrun = Path(sys.executable).with_name("msrun")
        exe = str(msrun) if msrun.is_file() else (shutil.which("msrun") or "msrun")
        return [exe, "--worker_num", str(nproc), "--local_worker_num", str(nproc),
                "--master_addr", "127.0.0.1", "--master_port", str(port), "--log_dir",
                str(log_dir), "--join", "True", "--cluster_time_out", "300", str(script), *args]
    raise MvdError(f"--backend {backend}: no launch command for its launcher {launcher!r}")


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: this interpreter first on PATH (msrun runs ``python`` from
    PATH), one compute thread per worker unless the user set ``OMP_NUM_THREADS``."""
    env = dict(os.environ if environ is None else environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MS_ROLE", "MS_WORKER_NUM", "RANK_ID"):
        env.pop(k, None)  # never inherit a job of our own
    return env


def _tail(folder: Path, lines: int = 8) -> str:
    out = []
    for f in sorted(folder.glob("worker_*.log")):
        text = f.read_text(errors="replace").strip().splitlines()
        err = [ln for ln in text if "Error" in ln or "error:" in ln]
        if err:
            out.append(f"{f.name}: {err[-1].strip()}")
    return "; ".join(out[:lines])


def launch(backend: str, nproc: int, argv: Sequence[str], log_dir: Path) -> int:
    """Run ``mvd <argv>`` in ``nproc`` local workers under the framework's launcher and wait.
    Returns the launcher's exit status; an MvdError names the failing workers' last error."""
    if shutil.which("mvd") is None and not Path(sys.executable).with_name("mvd").is_file():
        raise MvdError("mvd train --nproc: the 'mvd' command is not installed")
    msrun = registry.facts(backend).launcher == "msrun"  # msrun logs each worker to a file
    if msrun:
        log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = launch_command(backend, nproc, argv, port=port, log_dir=log_dir)
    log.info("starting %d %s workers: %s", nproc, backend, " ".join(cmd))
    rc = subprocess.run(cmd, env=worker_env(), check=False).returncode
    if rc != 0:
        where = _tail(log_dir) if msrun else ""
        raise MvdError(
            f"mvd train --nproc {nproc}: a worker failed (exit {rc})"
            + (f": {where}" if where else "") + (f"; worker logs in {log_dir}" if msrun else "")
        )
    return rc


class NullLock:
    """The run-folder lock of a rank that writes nothing (ranks > 0)."""

    def acquire(self) -> NullLock:
        return self

    def release(self) -> None:
        pass

    def discard_if_unsaved(self) -> None:
        pass


def serve_if_scheduler(backend: str) -> None:
    """In msrun's scheduler process: join the cluster (the framework's rendezvous), then exit;
    elsewhere nothing. Call it first thing in a command that may run under msrun."""
    env = current()
    if not env.scheduler:
        return
    import importlib

    mod = importlib.import_module("mvd_backends.mindspore.backend")
    mod.init_distributed(env)
    raise SystemExit(0)
