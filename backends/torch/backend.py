"""The torch implementation of :class:`mvd_core.interface.Backend` (CPU, CUDA).

Optimiser: ``backends/torch/optim.py``; its state crosses the interface in the framework-free
layout of ``mvd_core.weights.optim_state`` (the MindSpore backend's too: checkpoints are
interchangeable), plus the fp16 GradScaler's optional ``amp.*`` pair.

``run.precision=fp64`` builds the network, its inputs and the optimiser state in float64 (the
float64 arbiter of ``mvd parity``); parameters, checkpoints and optimiser state still cross the
interface as float32, gradients, forward taps and features come back as float64. It cannot be
combined with ``run.amp``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import torch

from mvd_core.config import Config
from mvd_core.devices import cpu_threads
from mvd_core.errors import BackendUnavailable, MvdError
from mvd_core.interface import Batch, check_batch, check_images
from mvd_core.model.spec import ParamSpec, check_state, descriptor_dim, model_spec
from mvd_core.registry import check_amp, check_precision
from mvd_core.train.distributed import DistEnv, check_backend, current
from mvd_core.weights import optim_state
from mvd_core.weights.pretrained import initial_params

from . import losses
from .convert import torch_to_canonical
from .network import MVDNet
from .optim import Optimizer

log = logging.getLogger(__name__)


def _resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                f"--device {device!r}: this torch build has no usable CUDA device "
                f"(torch {torch.__version__})"
            )
        idx = dev.index or 0
        if idx >= torch.cuda.device_count():
            raise BackendUnavailable(
                f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        return torch.device("cuda", idx)
    if dev.type != "cpu":
        raise MvdError(f"--device {device!r}: the torch backend runs on cpu, cuda, cuda:N")
    return dev


#: a strided convolution whose input is this narrow (H or W) runs in float32 under CPU bf16
#: autocast (see :func:`_guard_narrow_bf16_convs`)
_NARROW_BF16_CONV = 2


def _guard_narrow_bf16_convs(net: torch.nn.Module) -> int:
    """Work around a CPU bf16 convolution defect (torch 2.13 / oneDNN, AVX-512, measured): a
    strided 3×3 convolution on a map of width (or height) <= 2 -- e.g. layer4's first conv of
    the tiny recipe at 64×32, input 4×2 -- returns garbage in bf16 (relative error ~1, values
    up to 1e37, non-deterministic; also 1×1 maps in channels_last). Such a convolution runs in
    float32 instead (it is a few hundred MACs). Maps >= 3 wide, e.g. every layer of the real
    288×144 network, are untouched. Returns how many convolutions were wrapped."""
    wrapped = 0
    for mod in net.modules():
        if isinstance(mod, torch.nn.Conv2d) and max(mod.stride) > 1:
            inner = mod.forward

            def forward(x: torch.Tensor, _inner=inner, _mod=mod) -> torch.Tensor:
                if min(x.shape[-2:]) > _NARROW_BF16_CONV or not torch.is_autocast_enabled("cpu"):
                    return _inner(x)
                with torch.autocast("cpu", enabled=False):
                    dt = torch.get_autocast_dtype("cpu")
                    return _inner(x.float()).to(dt)

            mod.forward = forward  # type: ignore[method-assign]
            wrapped += 1
    return wrapped


# ---------------------------------------------------------------------- multi-process (torch.distributed)


def init_distributed(env: DistEnv, device: torch.device | None = None) -> int:
    """Join the job torchrun started (``init_method="env://"``: RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT); gloo on the CPU, nccl on CUDA. Idempotent within a process. Returns the
    world size."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=env.rank,
                                world_size=env.world_size)
        log.info("torch.distributed: rank %d of %d (%s)", env.rank, env.world_size, backend)
    return int(dist.get_world_size())


def _allreduce_mean_(tensors: list[torch.Tensor], world: int) -> None:
    """Average ``tensors`` in place over the ranks: one flattened all-reduce."""
    import torch.distributed as dist

    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])  # one dtype (fp32, or fp64)
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def _bn_modules(net: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _sync_bn_cpu(net: torch.nn.Module) -> int:
    """``model.sync_bn`` without ``nn.SyncBatchNorm`` (GPU-only): in train mode every BatchNorm
    takes its batch statistics from ONE differentiable collective over the ranks
    (``torch.distributed.nn.functional.all_gather``: its backward routes each rank's gradient
    back, so the input gradients are those of the joined batch) of the per-channel
    [count, mean, sum of squared deviations from the local mean], combined exactly (Chan et
    al.: M2 = Σ M2_r + n_r (μ_r − μ)²). A one-pass [sum, sum of squares, count] all-reduce was
    measured 6e-7 relative off in the running variance (fp32 cancellation in E[x²] − μ²); this
    is at fp32 rounding. Running statistics as torch (unbiased variance, ``momentum``). Eval
    mode is unchanged. Parameters keep their modules and names. Returns the layers synchronised."""
    from torch.distributed.nn.functional import all_gather

    mods = _bn_modules(net)
    for bn in mods:
        inner = bn.forward

        def forward(x: torch.Tensor, _bn=bn, _inner=inner) -> torch.Tensor:
            if not _bn.training:
                return _inner(x)
            c = x.shape[1]
            dims = [0, *range(2, x.dim())]
            xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
            n_loc = float(x.numel() // c)
            mu = xf.mean(dims)
            dev = xf - mu.view([1, c] + [1] * (x.dim() - 2))
            m2 = (dev * dev).sum(dims)
            count = torch.full((1,), n_loc, dtype=xf.dtype, device=x.device)
            parts = all_gather(torch.cat([count, mu, m2]))
            counts = torch.stack([q[0] for q in parts])
            mus = torch.stack([q[1:c + 1] for q in parts])
            n = counts.sum()
            mean = (counts[:, None] * mus).sum(0) / n
            m2_all = torch.stack([q[c + 1:] for q in parts]).sum(0)
            m2_all = m2_all + (counts[:, None] * (mus - mean) ** 2).sum(0)
            var = m2_all / n
            shape = [1, c] + [1] * (x.dim() - 2)
            y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + _bn.eps)
            if _bn.affine:
                y = y * _bn.weight.view(shape) + _bn.bias.view(shape)
            if _bn.track_running_stats:
                with torch.no_grad():
                    m = 0.1 if _bn.momentum is None else _bn.momentum
                    _bn.running_mean.mul_(1 - m).add_(mean.detach() * m)
                    _bn.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)
                    _bn.num_batches_tracked.add_(1)
            return y.to(x.dtype)

        bn.forward = forward  # type: ignore[method-assign]
    return len(mods)


class TorchBackend:
    """MVD on PyTorch. ``cfg`` is the whole resolved config (model, loss, optim, eval, run)."""

    name = "torch"

    def __init__(self, cfg: Config, num_classes: int, device: str = "cpu", seed: int = 0) -> None:
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.dist = current()  # multi-process job (mvd_core.train.distributed), or a single process
        check_backend(self.dist, "torch")
        self.device = _resolve_device(device)
        if self.dist.enabled and self.device.type == "cuda" and self.device.index in (None, 0):
            self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per local rank
            torch.cuda.set_device(self.device)  # before nccl's communicator is created
        self.seed = int(seed)
        self._dtype = self._check_precision(cfg.run.precision, cfg.run.amp)
        self._amp_dtype = self._check_amp(cfg.run.amp)
        if self.device.type == "cpu":
            threads = cpu_threads(cfg.run.threads, cfg.data.workers)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
                log.info("torch CPU threads: %d", threads)
        # The backend's own RNG stream (dropout): seeded here, swapped in around every call
        # that may draw from it, so that several backends in one process do not interfere.
        outer = self._global_rng()
        torch.manual_seed(self.seed)
        self._rng: dict[str, torch.Tensor] = self._global_rng()
        self._set_global_rng(outer)

        self.spec: dict[str, ParamSpec] = model_spec(cfg.model, self.num_classes)
        self.net = MVDNet(cfg.model, self.num_classes)
        self._tensors = self._canonical_tensors()
        self.load_state(initial_params(cfg.model, self.num_classes, self.seed))  # the contract's weights
        self.net.to(device=self.device, dtype=self._dtype)
        self._memory_format = (
            torch.channels_last if cfg.run.channels_last else torch.contiguous_format
        )
        if cfg.run.channels_last:
            self.net.to(memory_format=torch.channels_last)  # 4-d weights NHWC; others unchanged
        self._tensors = self._canonical_tensors()  # re-bind after .to(): moved storages
        if self._amp_dtype == torch.bfloat16 and self.device.type == "cpu":
            _guard_narrow_bf16_convs(self.net)
        self._world = self.dist.world_size if self.dist.enabled else 1
        self._sync_bn = bool(cfg.model.sync_bn) and self._world > 1
        if self.dist.enabled:
            init_distributed(self.dist, self.device)
            if self._sync_bn and self.device.type == "cuda":
                self.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
                self._tensors = self._canonical_tensors()
            elif self._sync_bn:
                _sync_bn_cpu(self.net)
        self._bn_buffers = [t for bn in _bn_modules(self.net)
                            for t in (bn.running_mean, bn.running_var) if t is not None]

        self.trainable = [k for k, s in self.spec.items() if s.trainable]
        #: torch.optim over the two groups, canonical state (backends/torch/optim.py)
        self.optim = Optimizer(
            cfg.optim, self.spec, {k: self._tensors[k] for k in optim_state.trainable(self.spec)}
        )
        self._opt = self.optim.torch
        self._scaler: torch.amp.GradScaler | None = None
        if self._amp_dtype == torch.float16:
            self._scaler = torch.amp.GradScaler("cuda")
        log.info(
            "torch backend: %s, %d classes, %d trainable tensors, amp=%s, %s",
            self.device,
            self.num_classes,
            len(self.trainable),
            cfg.run.amp,
            cfg.run.precision,
        )

    # ------------------------------------------------------------------ set-up helpers
    def _check_amp(self, amp: str) -> torch.dtype | None:
        """bf16 autocast on CPU and CUDA, fp16 (with a GradScaler) on CUDA only; the table and
        the reasons are :data:`mvd_core.registry.AMP`. Under autocast the network keeps its
        channel attention, its test-feature normalisation and every loss (softmax, KL,
        Sinkhorn, triplet distances) in float32 (``network._full``, ``losses._f``); BatchNorm
        keeps float32 parameters and running statistics and accumulates in float32."""
        if amp not in ("none", "bf16", "fp16"):
            raise MvdError(f"run.amp={amp!r}: expected none, bf16 or fp16")
        check_amp("torch", amp, self.device.type)
        if amp == "none":
            return None
        return torch.bfloat16 if amp == "bf16" else torch.float16

    @staticmethod
    def _check_precision(precision: str, amp: str) -> torch.dtype:
        check_precision("torch", precision)
        if precision == "fp64" and amp != "none":
            raise MvdError(
                f"run.precision=fp64 cannot be combined with run.amp={amp}: autocast would "
                f"compute in {amp} what fp64 computes in float64; use run.amp=none"
            )
        return torch.float64 if precision == "fp64" else torch.float32

    def _canonical_tensors(self) -> dict[str, torch.Tensor]:
        """Canonical name → the live parameter/buffer tensor (no num_batches_tracked)."""
        live = dict(self.net.named_parameters())
        live.update(dict(self.net.named_buffers()))
        missing = [k for k in self.spec if k not in live]
        extra = [k for k in live if k not in self.spec and not k.endswith("num_batches_tracked")]
        if missing or extra:  # a network/spec mismatch is a programming error
            raise RuntimeError(f"MVDNet vs model_spec: missing {missing[:5]}, extra {extra[:5]}")
        return {k: live[k] for k in self.spec}

    def _param_of(self) -> dict[str, torch.Tensor]:
        return {k: self._tensors[k] for k in self.trainable}

    # ------------------------------------------------------------------ batches
    def _images(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x if self._dtype == torch.float32 else x.to(self._dtype)
        if self._memory_format is torch.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_batch(batch, self.num_classes, self.cfg.loss)
        x = self._images(batch.images)
        y = torch.from_numpy(np.asarray(batch.labels, dtype=np.int64)).to(self.device, non_blocking=True)
        m = torch.from_numpy(np.asarray(batch.modality, dtype=np.int64)).to(
            self.device, non_blocking=True
        )
        return x, y, m

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._autocast():
            out = self.net(x)
        return losses.mvd_loss(out, y, m, self.cfg.loss)

    @staticmethod
    def _out(t: torch.Tensor) -> np.ndarray:
        """A result as NumPy: float32, float64 at ``run.precision=fp64`` (autocast upcast)."""
        t = t.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t.cpu().numpy()

    @staticmethod
    def _to_floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
        names = list(terms)
        values = torch.stack([terms[k].detach().double() for k in names]).cpu().tolist()
        return dict(zip(names, values, strict=True))

    def _global_rng(self) -> dict[str, torch.Tensor]:
        out = {"torch.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            out["torch.cuda"] = torch.cuda.get_rng_state(self.device)
        return out

    def _set_global_rng(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["torch.cpu"])
        if self.device.type == "cuda" and "torch.cuda" in state:
            torch.cuda.set_rng_state(state["torch.cuda"], self.device)

    @contextlib.contextmanager
    def _own_rng(self, keep: bool = True) -> Iterator[None]:
        """Run with this backend's RNG stream; keep its advance unless ``keep`` is False."""
        outer = self._global_rng()
        self._set_global_rng(self._rng)
        try:
            yield
        finally:
            if keep:
                self._rng = self._global_rng()
            self._set_global_rng(outer)

    @contextlib.contextmanager
    def _side_effect_free(self) -> Iterator[None]:
        """Restore BatchNorm running statistics and leave the RNG stream where it was."""
        buffers = {k: b.detach().clone() for k, b in self.net.named_buffers()}
        try:
            with self._own_rng(keep=False):
                yield
        finally:
            with torch.no_grad():
                for k, b in self.net.named_buffers():
                    b.copy_(buffers[k])

    # ------------------------------------------------------------------ interface
    def train_step(self, batch: Batch, lr: float) -> dict[str, float]:
        x, y, m = self._batch(batch)
        self.optim.hyper(lr)
        self.net.train()
        self._opt.zero_grad(set_to_none=True)
        with self._own_rng():
            terms = self._loss(x, y, m)
            if self._scaler is not None:
                self._scaler.scale(terms["total"]).backward()
                self._average_gradients()
                self._scaler.step(self._opt)
                self._scaler.update()
            else:
                terms["total"].backward()
                self._average_gradients()
                self._opt.step()
        if self._world > 1:
            with torch.no_grad():
                if not self._sync_bn:  # per-rank statistics: every rank keeps their mean
                    _allreduce_mean_(self._bn_buffers, self._world)
                names = list(terms)
                vec = torch.stack([terms[k].detach().to(self._dtype) for k in names])
                _allreduce_mean_([vec], self._world)  # logged losses: the rank mean
                terms = {k: vec[i] for i, k in enumerate(names)}
        return self._to_floats(terms)

    def _average_gradients(self) -> None:
        """Multi-process: every trainable gradient averaged over the ranks (one all-reduce)."""
        if self._world <= 1:
            return
        grads = []
        for p in self._param_of().values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        with torch.no_grad():
            _allreduce_mean_(grads, self._world)

    def check_replicas(self) -> None:
        """Multi-process: raise :class:`MvdError` unless every rank holds the same parameters
        and buffers (compares float64 [sum, sum of squares, index-weighted sum] per rank)."""
        if self._world <= 1:
            return
        import torch.distributed as dist

        with torch.no_grad():
            acc = torch.zeros(3, dtype=torch.float64, device=self.device)
            for i, t in enumerate(self._tensors.values()):
                d = t.detach().double()
                acc += torch.stack([d.sum(), (d * d).sum(), d.sum() * (i + 1)])
            got = [torch.zeros_like(acc) for _ in range(self._world)]
            dist.all_gather(got, acc)
        if any(not torch.equal(g, got[0]) for g in got):
            raise MvdError(
                f"distributed: the {self._world} ranks hold different parameters "
                f"(checksums {[g.tolist() for g in got]}): a rank diverged"
            )

    def forward(self, batch: Batch, train: bool) -> dict[str, np.ndarray]:
        x = self._images(batch.images)
        self.net.train(train)
        with self._own_rng(), torch.no_grad(), self._autocast():
            out = self.net(x)
        return {k: self._out(v) for k, v in out.items()}

    def loss_terms(self, batch: Batch) -> dict[str, float]:
        """Loss terms in train mode; no update -- BatchNorm running statistics and the RNG are
        restored afterwards, so this call has no side effect."""
        x, y, m = self._batch(batch)
        self.net.train()
        with self._side_effect_free(), torch.no_grad():
            terms = self._loss(x, y, m)
        return self._to_floats(terms)

    def gradients(self, batch: Batch) -> dict[str, np.ndarray]:
        """d total / d param for every trainable parameter, train mode, full precision; no
        side effect (running statistics and RNG restored, ``.grad`` untouched)."""
        x, y, m = self._batch(batch)
        self.net.train()
        params = self._param_of()
        with self._side_effect_free():
            out = self.net(x)
            total = losses.mvd_loss(out, y, m, self.cfg.loss)["total"]
            grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
        result = {}
        for (k, p), g in zip(params.items(), grads, strict=True):
            result[k] = self._out(torch.zeros_like(p) if g is None else g).copy()
        return result

    def extract_features(self, images: np.ndarray, modality: str) -> np.ndarray:
        images = check_images(images, modality)
        if images.shape[0] == 0:
            return np.zeros((0, descriptor_dim(self.cfg.model)), np.float32)
        self.net.eval()
        with torch.no_grad(), self._autocast():
            return self._out(self.net.extract(self._images(images)))

    def state(self) -> dict[str, np.ndarray]:
        return torch_to_canonical(self._tensors)

    def _load(self, params: dict[str, np.ndarray], source: str, strict: bool) -> None:
        check_state(params, self.spec, source, strict=strict)
        with torch.no_grad():
            for k, t in self._tensors.items():
                if k in params:
                    t.copy_(torch.from_numpy(np.asarray(params[k], dtype=np.float32)))

    def load_state(self, params: dict[str, np.ndarray], strict: bool = True) -> None:
        self._load(params, "load_state", strict)

    # ------------------------------------------------------------------ optimiser state
    def optimizer_state(self) -> dict[str, np.ndarray]:
        out = self.optim.state()  # mvd_core.weights.optim_state's layout
        if self._scaler is not None:  # fp16 AMP: the GradScaler (an optional key pair)
            sd = self._scaler.state_dict()
            out["amp.scale"] = np.array(sd["scale"], dtype=np.float32)
            out["amp.growth_tracker"] = np.array(sd["_growth_tracker"], dtype=np.int64)
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.optim.load_state(state, "TorchBackend.load_optimizer_state")
        if self._scaler is not None and "amp.scale" in state:
            self._scaler.load_state_dict(
                {
                    **self._scaler.state_dict(),
                    "scale": float(np.asarray(state["amp.scale"])),
                    "_growth_tracker": int(np.asarray(state["amp.growth_tracker"])),
                }
            )

    # ------------------------------------------------------------------ RNG
    def rng_state(self) -> dict[str, np.ndarray]:
        """This backend's RNG stream: "torch.cpu" (and "torch.cuda" on CUDA), uint8 arrays."""
        return {k: v.numpy().copy() for k, v in self._rng.items()}

    def load_rng_state(self, state: dict[str, np.ndarray]) -> None:
        if "torch.cpu" not in state:
            raise MvdError(
                f"rng state: expected key 'torch.cpu' (a torch checkpoint), got {sorted(state)}"
            )
        new = {"torch.cpu": torch.from_numpy(np.array(state["torch.cpu"], dtype=np.uint8))}
        if self.device.type == "cuda":
            if "torch.cuda" in state:
                new["torch.cuda"] = torch.from_numpy(np.array(state["torch.cuda"], dtype=np.uint8))
            else:
                log.warning("rng state has no 'torch.cuda' entry; the CUDA stream is kept")
                new["torch.cuda"] = self._rng["torch.cuda"]
        # validate by setting it once (torch checks the size), then restore the global stream
        outer = self._global_rng()
        try:
            self._set_global_rng(new)
        except RuntimeError as e:
            raise MvdError(f"rng state: not a torch generator state ({e})") from None
        finally:
            self._set_global_rng(outer)
        self._rng = new
