"""The MindSpore backend: :class:`MindSporeBackend` implements :class:`mvd_core.interface.Backend`
with the same semantics as ``mvd_backends.torch.backend.TorchBackend``.

Devices: ``"CPU"``, ``"GPU[:N]"``, ``"Ascend[:N]"`` — selected with ``mindspore.set_device``
(MindSpore allows one device target per process, fixed when its runtime first runs a kernel;
asking for another one later is a :class:`BackendUnavailable` error). Nothing else here is
device specific: the same graphs run on GPU and Ascend.

Execution modes (``cfg.run.ms_mode``). In both, a training step is TWO ``mindspore.jit``-
compiled functions, compiled once per input shape: the gradient (forward, losses, backward:
``mindspore.value_and_grad`` under ``mindspore.jit``; ``gradients()`` is this one) and the
optimiser update, with the gradients handed over between them. The modes differ in the rest:

* ``"graph"``: ``forward()``, ``loss_terms()`` and ``extract_features()`` are compiled too
  (a chunk smaller than a batch size already compiled -- the last one of an evaluation -- is
  padded to it instead of compiling another);
* ``"pynative"`` (default): they run eagerly, op by op (no compilation, any batch shape).

Speed: one fused graph of the whole step (gradient + update) was measured slower than the two
blocks and dropped (docs/mindspore.md). Both modes compute the same numbers (tested). The
process's global context stays PyNative.

Memory: every callable is built ONCE in ``__init__`` and each step only creates its input
Tensors (the lr and Adam's bias corrections travel in one hyper-parameter vector) and keeps
none; no training step launches an eager kernel, because MindSpore 2.8 leaks host memory on
every eager CPU kernel launch (SPEC §3; measurements in docs/mindspore.md,
``benchmarks/bench_memory.py``, ``tests/test_memory.py``).

Optimisers: ``backends/mindspore/optim.py`` (``torch.optim.Adam`` / ``SGD`` exactly, over flat
buffers; state in the layout of ``mvd_core.weights.optim_state``).

Dropout (VIB classifier) masks are drawn on the host from ``np.random.default_rng((seed,
draw))`` — the backend's own counter-based generator — and fed to the network, so the same
seed gives the same losses and a resumed run continues bit for bit (``rng_state``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from mvd_backends.mindspore.convert import ms_name
from mvd_backends.mindspore.losses import _MVDLoss
from mvd_backends.mindspore.network import MVDNet
from mvd_backends.mindspore.optim import Optimizer, copy_in_place
from mvd_core.config import Config
from mvd_core.devices import cpu_threads
from mvd_core.errors import BackendUnavailable, CheckpointError, MvdError
from mvd_core.interface import TAP_NAMES, Batch, check_batch, check_images
from mvd_core.model.spec import check_state, descriptor_dim, model_spec
from mvd_core.registry import check_amp, check_precision
from mvd_core.train.distributed import DistEnv, check_backend, current
from mvd_core.weights import optim_state
from mvd_core.weights.pretrained import initial_params

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------


def _set_device(device: str) -> None:
    """Select the MindSpore device (``CPU``, ``GPU[:N]``, ``Ascend[:N]``) for this process."""
    kind, _, idx = device.partition(":")
    if kind not in ("CPU", "GPU", "Ascend"):
        raise MvdError(f"--device {device!r}: expected CPU, GPU[:N] or Ascend[:N]")
    dev_id = int(idx) if idx else 0
    cur = ms.get_context("device_target")
    cur_id = ms.get_context("device_id") if kind != "CPU" else 0
    if cur == kind and (kind == "CPU" or cur_id == dev_id):
        return
    try:
        available = bool(ms.hal.is_available(kind))
    except (RuntimeError, ValueError, AttributeError):  # pragma: no cover - older/other builds
        available = True  # let set_device decide
    if not available:
        raise BackendUnavailable(
            f"--device {device!r}: this MindSpore build ({ms.__version__}) cannot use {kind} "
            f"here (no {kind} plugin or driver found); install MindSpore for {kind} or use CPU"
        )
    try:
        if kind == "CPU":
            ms.set_device("CPU")
        else:
            ms.set_device(kind, dev_id)
    except (RuntimeError, ValueError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise BackendUnavailable(
            f"--device {device!r}: MindSpore cannot switch to it in this process (currently "
            f"{cur}); MindSpore fixes the device when it first runs ({first})"
        ) from None


_THREADS_SET = False


def _configure_cpu_threads(requested: int = 0, workers: int = 0) -> int | None:
    """Set MindSpore's CPU kernel thread count once per process (before the first kernel).

    MindSpore 2.8 defaults to 25 kernel threads whatever the machine. Its thread pool hands
    kernels to workers that spin (``sched_yield``); after 5 executions of a graph the runtime
    picks its execution strategy and, on an oversubscribed CPU (25 spinning threads on 2 cores,
    plus other processes), a step of the optimiser graph went from 0.2 s to 13-20 s. The count
    is ``$MVD_MS_THREADS`` if set, else the project's policy :func:`mvd_core.devices.cpu_threads`
    (``run.threads``, ``$OMP_NUM_THREADS``, or the cores the loader's workers leave free) --
    the same number the torch backend uses. MindSpore fixes it once per process.
    """
    global _THREADS_SET
    if _THREADS_SET:
        return None
    _THREADS_SET = True
    raw = os.environ.get("MVD_MS_THREADS", "").strip()
    n = int(raw) if raw.isdigit() and int(raw) > 0 else cpu_threads(requested, workers)
    n = max(1, min(n, os.cpu_count() or n))
    try:
        ms.device_context.cpu.op_tuning.threads_num(n)
    except (RuntimeError, ValueError, AttributeError) as e:  # already set by the user: keep it
        log.debug("MindSpore CPU kernel threads not set (%s)", e)
        return None
    return n


# --------------------------------------------------------------------------------------------
# mixed precision (GPU/Ascend only: mvd_core.registry.AMP refuses it on the CPU)
# --------------------------------------------------------------------------------------------


class _Float32Out(nn.Cell):
    """The network in low precision with float32 outputs, so the losses stay float32."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)  # parameter names unchanged
        self.net = net

    def construct(self, x, masks=None):  # noqa: ANN001, ANN201
        return tuple(ops.cast(o, ms.float32) for o in self.net(x, masks))

    def extract(self, x):  # noqa: ANN001, ANN201
        return ops.cast(self.net.extract(x), ms.float32)


def _mixed_precision(net: nn.Cell, amp: str) -> tuple[nn.Cell | None, object | None]:
    """``run.amp`` as MindSpore's amp level O2 (``auto_mixed_precision``'s black-list rule,
    applied in place so the parameters stay the backend's): every cell computes in fp16/bf16
    except BatchNorm (float32 statistics); outputs and losses are float32; fp16 adds MindSpore's
    ``DynamicLossScaler`` (2^16, x2 every 1000 finite steps, /2 on overflow, update skipped).
    Not exercised by the CPU CI (refused there); ``benchmarks/gpu_check.sh`` runs it."""
    if amp == "none":
        return None, None
    dtype = ms.float16 if amp == "fp16" else ms.bfloat16
    net.to_float(dtype)
    for _, cell in net.cells_and_names():
        if isinstance(cell, (nn.BatchNorm1d, nn.BatchNorm2d)):
            cell.to_float(ms.float32)
    scaler = ms.amp.DynamicLossScaler(2.0**16, 2, 1000) if amp == "fp16" else None
    return _Float32Out(net), scaler


# --------------------------------------------------------------------------------------------
# multi-process (mindspore.communication; see mvd_core.train.distributed)
# --------------------------------------------------------------------------------------------


def init_distributed(env: DistEnv) -> int:
    """Join the msrun job (``mindspore.communication.init()``: mccl on the CPU, nccl on GPU,
    hccl on Ascend; it takes 10-20 s). In the scheduler process it serves the rendezvous.
    Returns the world size. Idempotent."""
    from mindspore import communication as comm

    global _DIST_READY
    if not _DIST_READY:
        comm.init()
        _DIST_READY = True
        if not env.scheduler:
            log.info("mindspore.communication: rank %d of %d", comm.get_rank(), comm.get_group_size())
    return int(comm.get_group_size()) if not env.scheduler else env.world_size


_DIST_READY = False


class _SyncBNMixin:
    """``model.sync_bn`` on MindSpore: in train mode the batch statistics come from one
    ``ops.AllReduce`` of the per-channel [sum, sum of squares, count] over the ranks (its bprop
    all-reduces the gradient: the input gradients are those of the joined batch); running
    statistics as torch (unbiased variance; ``self.momentum`` is torch's). ``nn.SyncBatchNorm``
    does not run on the CPU (MindSpore 2.8). Installed by swapping the cell's class
    (:func:`_sync_batchnorm`): parameters and names unchanged."""

    def construct(self, x):  # noqa: ANN001, ANN201
        if not self.training:  # as _BatchNorm's inference branch (no zero-argument super())
            rx = x.reshape(x.shape[0], x.shape[1], 1, 1) if x.ndim == 2 else x
            out = self.bn_infer(rx, self.gamma, self.beta, self.moving_mean, self.moving_variance)[0]
            return out.reshape(x.shape) if x.ndim == 2 else out
        c = x.shape[1]
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, c) if x.ndim == 2 else (1, c, 1, 1)
        n_local = x.size // c
        count = ops.fill(ms.float32, (1,), n_local)
        stats = self.sync_allreduce(ops.concat((x.sum(axes), (x * x).sum(axes), count)))
        n = stats[2 * c]
        mean = stats[:c] / n
        var = ops.relu(stats[c:2 * c] / n - mean * mean)
        y = (x - mean.reshape(shape)) * ops.rsqrt(var.reshape(shape) + self.eps)
        y = y * self.gamma.reshape(shape) + self.beta.reshape(shape)
        m = self.momentum
        mean_ = ops.stop_gradient(mean)
        var_ = ops.stop_gradient(var * n / (n - 1.0))
        ops.assign(self.moving_mean, self.moving_mean * (1.0 - m) + mean_ * m)
        ops.assign(self.moving_variance, self.moving_variance * (1.0 - m) + var_ * m)
        return y


class _SyncBatchNorm2d(_SyncBNMixin, nn.BatchNorm2d):
    pass


class _SyncBatchNorm1d(_SyncBNMixin, nn.BatchNorm1d):
    pass


def _bn_cells(net: nn.Cell) -> list[nn.Cell]:
    return [c for _, c in net.cells_and_names() if isinstance(c, (nn.BatchNorm1d, nn.BatchNorm2d))]


def _sync_batchnorm(net: nn.Cell) -> int:
    """Make every BatchNorm of ``net`` synchronise its train-mode statistics (in place)."""
    cells = _bn_cells(net)
    for cell in cells:
        cell.__class__ = _SyncBatchNorm2d if isinstance(cell, nn.BatchNorm2d) else _SyncBatchNorm1d
        cell.sync_allreduce = ops.AllReduce()
    return len(cells)


# --------------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------------


class MindSporeBackend:
    """MVD on MindSpore (CPU, GPU, Ascend); see the module doc."""

    name = "mindspore"

    def __init__(self, cfg: Config, num_classes: int, device: str = "CPU", seed: int = 0) -> None:
        dist = current()
        if dist.enabled and device in ("GPU", "Ascend"):
            device = f"{device}:{dist.local_rank}"  # msrun: one device per local worker
        _set_device(device)
        if device == "CPU":
            _configure_cpu_threads(cfg.run.threads, cfg.data.workers)
        check_precision("mindspore", cfg.run.precision)
        check_amp("mindspore", cfg.run.amp, device)  # refused on the CPU (registry.AMP)
        self.dist = current()  # multi-process job (mvd_core.train.distributed), or a single process
        check_backend(self.dist, "mindspore")
        self._world = init_distributed(self.dist) if self.dist.enabled else 1
        self._sync_bn = bool(cfg.model.sync_bn) and self._world > 1
        if cfg.run.ms_mode not in ("graph", "pynative"):
            raise MvdError(f"run.ms_mode: {cfg.run.ms_mode!r} is not one of graph, pynative")
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.device = device
        self.seed = int(seed)
        self.graph = cfg.run.ms_mode == "graph"
        ms.set_seed(self.seed)

        self.spec = model_spec(cfg.model, num_classes)
        self.net = MVDNet(cfg.model, num_classes)
        self._params: dict[str, Parameter] = {p.name: p for p in self.net.get_parameters()}
        expected = {ms_name(k): k for k in self.spec}
        missing = sorted(set(expected) - set(self._params))
        unexpected = sorted(set(self._params) - set(expected))
        if missing or unexpected:  # pragma: no cover - network and model_spec written together
            raise RuntimeError(
                f"MindSpore MVDNet vs model_spec: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        #: canonical name → MindSpore Parameter, in model_spec order
        self.param_of: dict[str, Parameter] = {k: self._params[ms_name(k)] for k in self.spec}
        for k, s in self.spec.items():
            self.param_of[k].requires_grad = s.trainable

        self.load_state(initial_params(cfg.model, self.num_classes, self.seed))  # the contract's weights
        #: BatchNorm running statistics (restored after loss_terms / gradients)
        self._bn_stats = [p for c in _bn_cells(self.net) for p in (c.moving_mean, c.moving_variance)]
        self._extract_shapes: set[int] = set()  # graph mode: the batch sizes extract compiled

        # trainable parameters, the "trunk" group first (mvd_core.weights.optim_state's order)
        self.trainable: list[str] = optim_state.trainable(self.spec)
        self.weights = ParameterTuple([self.param_of[k] for k in self.trainable])
        #: torch.optim's update over flat buffers (backends/mindspore/optim.py)
        self.opt = Optimizer(cfg.optim, self.spec, {k: self.param_of[k] for k in self.trainable})

        # traced into the compiled step in both modes (so no host read-back of the Sinkhorn stop)
        self.loss = _MVDLoss(cfg.loss)
        self.terms: tuple[str, ...] = self.loss.terms
        self.dropout = float(cfg.model.dropout)
        self._drop_draws = 0
        self._gather: Callable | None = None
        self._mean_buffers = None
        self._amp_net, self._loss_scaler = _mixed_precision(self.net, cfg.run.amp)
        if self._sync_bn:
            _sync_batchnorm(self.net)
        self._build()
        log.info(
            "MindSpore backend on %s, %s mode, %d parameters (%d trainable)",
            device, cfg.run.ms_mode, len(self.spec), len(self.trainable),
        )

    # ---------------------------------------------------------------- compiled functions
    def _build(self) -> None:
        """Create every callable once (never per step)."""
        net, loss, opt = self._amp_net or self.net, self.loss, self.opt
        scaler = self._loss_scaler  # None unless run.amp=fp16 (GPU/Ascend)

        def forward_loss(x, labels, modality, masks):
            outs = net(x, masks)
            terms = loss(outs, labels, modality)
            if scaler is not None:
                return scaler.scale(terms[-1]), terms
            return terms[-1], terms

        grad_fn = ms.value_and_grad(forward_loss, None, self.weights, has_aux=True)

        def grads_per_param(x, labels, modality, masks):
            (_, terms), grads = grad_fn(x, labels, modality, masks)
            if scaler is not None:
                grads = scaler.unscale(grads)
            return terms, grads

        # the gradients leave the block as one flat vector per group (opt.ravel): handing over
        # hundreds of tensors between the two compiled blocks cost more than the update itself
        opt.flat_grads = True

        def grads_only(x, labels, modality, masks):
            terms, grads = grads_per_param(x, labels, modality, masks)
            return terms, opt.ravel(grads)

        def forward(x, masks):
            return net(x, masks)

        def forward_eval(x):
            return net(x, None)

        def extract(x):
            return net.extract(x)

        def loss_only(x, labels, modality, masks):
            return loss(net(x, masks), labels, modality)

        # The training step, in both modes, is two compiled blocks -- the gradient (forward,
        # losses, backward) and the optimiser update -- with the gradients handed over between
        # them: eager kernel launches leak host memory in MindSpore 2.8 (module doc, "Memory"),
        # and one fused graph of both blocks was slower than the two (module doc, "Speed").
        grads_c = ms.jit(grads_only)
        opt_c = ms.jit(opt.construct)
        train_grads = grads_c
        if self._world > 1:
            # multi-process: gradients averaged over the ranks in the compiled gradient block
            # (nn.DistributedGradReducer: one all-reduce), logged losses the rank mean; with
            # per-rank BatchNorm the running statistics are averaged after the update
            reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=self._world)
            allreduce = ops.AllReduce()
            world = float(self._world)

            def grads_mean(x, labels, modality, masks):
                terms, grads = grads_per_param(x, labels, modality, masks)
                return allreduce(terms) / world, opt.ravel(reducer(grads))

            train_grads = ms.jit(grads_mean)
            buffers = ParameterTuple([p for c in _bn_cells(self.net)
                                      for p in (c.moving_mean, c.moving_variance)])

            def mean_buffers(token):
                for b in buffers:
                    ops.assign(b, allreduce(b) / world)
                return token

            self._mean_buffers: Callable | None = None if self._sync_bn else ms.jit(mean_buffers)

        def train_step(x, labels, modality, masks, hyper):
            terms, grads = train_grads(x, labels, modality, masks)
            if scaler is not None:  # fp16 (GPU/Ascend only): skip the update on an overflow
                finite = ms.amp.all_finite(grads)
                scaler.adjust(finite)
                if not bool(finite.asnumpy()):
                    opt.t -= 1  # the update did not happen
                    return terms
            token = opt_c(ms.mutable(grads), hyper)
            if self._world > 1 and self._mean_buffers is not None:
                self._mean_buffers(token)
            return terms

        self._train_fn: Callable = train_step
        self._grad_fn: Callable = grads_c
        if self.graph:
            self._fwd_train: Callable = ms.jit(forward)
            self._fwd_eval: Callable = ms.jit(forward_eval)
            self._extract: Callable = ms.jit(extract)
            self._loss_fn: Callable = ms.jit(loss_only)
        else:
            # eager loss evaluation reads the Sinkhorn stop back (same values, fewer launches)
            eager_loss = _MVDLoss(self.cfg.loss, host_stop=True)

            def loss_eager(x, labels, modality, masks):
                return eager_loss(net(x, masks), labels, modality)

            self._fwd_train = forward
            self._fwd_eval = forward_eval
            self._extract = extract
            self._loss_fn = loss_eager

    # ---------------------------------------------------------------- helpers
    def _inputs(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        return (
            Tensor(np.ascontiguousarray(batch.images, dtype=np.float32)),
            Tensor(np.ascontiguousarray(batch.labels, dtype=np.int32)),
            Tensor(np.ascontiguousarray(batch.modality, dtype=np.int32)),
        )

    def _masks(self, n: int, advance: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Four inverted-dropout masks (v_rep, i_rep, v_ms_rep, i_ms_rep), or None; with
        ``advance`` False the masks the next call will draw (the counter stays)."""
        if self.dropout <= 0.0:
            return None
        rng = np.random.default_rng((self.seed, self._drop_draws))
        self._drop_draws += int(advance)
        keep = 1.0 - self.dropout
        u = rng.random((4, n, self.cfg.model.vib_cls_hidden), dtype=np.float32)
        m = ((u < keep).astype(np.float32) / np.float32(keep)).astype(np.float32)
        # mutable: a tuple of Tensors passed to a jit function is otherwise a constant (one
        # compilation per distinct value!)
        return ms.mutable((Tensor(m[0]), Tensor(m[1]), Tensor(m[2]), Tensor(m[3])))

    def _terms_dict(self, values: Tensor) -> dict[str, float]:
        arr = values.asnumpy()
        return {k: float(arr[j]) for j, k in enumerate(self.terms)}

    # ---------------------------------------------------------------- Backend API
    def _restore_bn_stats(self, saved: list[np.ndarray]) -> None:
        """Put the BatchNorm running statistics back (a train-mode pass moved them)."""
        copy_in_place(zip(self._bn_stats, saved, strict=True))

    def train_step(self, batch: Batch, lr: float) -> dict[str, float]:
        check_batch(batch, self.num_classes, self.cfg.loss)
        x, y, s = self._inputs(batch)
        self.net.set_train(True)
        masks = self._masks(len(batch))
        out = self._train_fn(x, y, s, masks, self.opt.hyper(float(lr)))
        return self._terms_dict(out)

    def forward(self, batch: Batch, train: bool) -> dict[str, np.ndarray]:
        x, _, _ = self._inputs(batch)
        self.net.set_train(bool(train))
        outs = self._fwd_train(x, self._masks(len(batch))) if train else self._fwd_eval(x)
        return {k: o.asnumpy() for k, o in zip(TAP_NAMES, outs, strict=True)}

    def loss_terms(self, batch: Batch) -> dict[str, float]:
        """No side effect (interface rule): the next step's dropout masks, BN statistics restored."""
        check_batch(batch, self.num_classes, self.cfg.loss)
        x, y, s = self._inputs(batch)
        self.net.set_train(True)
        saved = [p.asnumpy().copy() for p in self._bn_stats]
        try:
            out = self._terms_dict(self._loss_fn(x, y, s, self._masks(len(batch), advance=False)))
        finally:
            self._restore_bn_stats(saved)
        return out

    def gradients(self, batch: Batch) -> dict[str, np.ndarray]:
        """No side effect, as :meth:`loss_terms`."""
        check_batch(batch, self.num_classes, self.cfg.loss)
        x, y, s = self._inputs(batch)
        self.net.set_train(True)
        saved = [p.asnumpy().copy() for p in self._bn_stats]
        try:
            _, flat = self._grad_fn(x, y, s, self._masks(len(batch), advance=False))
            grads = self.opt.unravel([g.asnumpy() for g in flat])
            out = {k: grads[k].astype(np.float32) for k in self.trainable}
        finally:
            self._restore_bn_stats(saved)
        return out

    def extract_features(self, images: np.ndarray, modality: str) -> np.ndarray:
        """One chunk (the caller batches). Graph mode: a chunk smaller than a batch size already
        compiled (the driver's last chunk) is padded to the smallest such size instead of
        compiling another graph (eval BatchNorm is per sample)."""
        images = check_images(images, modality)
        n = images.shape[0]
        if n == 0:
            return np.zeros((0, descriptor_dim(self.cfg.model)), np.float32)
        self.net.set_train(False)
        larger = [s for s in self._extract_shapes if s > n]
        if self.graph and larger:
            pad = min(larger) - n
            images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.float32)])
        elif self.graph:
            self._extract_shapes.add(n)
        return self._extract(Tensor(images)).asnumpy()[:n].astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {k: p.asnumpy().astype(np.float32).copy() for k, p in self.param_of.items()}

    def load_state(self, params: dict[str, np.ndarray], strict: bool = True) -> None:
        check_state(params, self.spec, "load_state", strict=strict)  # unexpected names: refused
        copy_in_place((self.param_of[k], v) for k, v in params.items())

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.opt.state()  # mvd_core.weights.optim_state's layout

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.opt.load_state(state, "MindSporeBackend.load_optimizer_state")

    def check_replicas(self) -> None:
        """Multi-process: raise :class:`MvdError` unless every rank holds the same parameters
        (float64 checksums gathered with ``ops.AllGather``)."""
        if self._world <= 1:
            return
        acc = np.zeros(3, np.float64)
        for i, p in enumerate(self.param_of.values()):
            d = p.asnumpy().astype(np.float64)
            acc += (d.sum(), (d * d).sum(), d.sum() * (i + 1))
        if self._gather is None:
            self._gather = ms.jit(ops.AllGather())
        hi = acc.astype(np.float32)
        lo = (acc - hi.astype(np.float64)).astype(np.float32)  # float32 all-gather, ~float64 exact
        got = self._gather(Tensor(np.concatenate([hi, lo]).reshape(1, 6))).asnumpy()
        if not np.all(got == got[0]):
            raise MvdError(
                f"distributed: the {self._world} ranks hold different parameters "
                f"(checksums {got.tolist()}): a rank diverged"
            )

    def rng_state(self) -> dict[str, np.ndarray]:
        """The dropout generator: masks of draw d come from default_rng((seed, d))."""
        return {
            "dropout.seed": np.array(self.seed, dtype=np.int64),
            "dropout.draws": np.array(self._drop_draws, dtype=np.int64),
        }

    def load_rng_state(self, state: dict[str, np.ndarray]) -> None:
        for k in ("dropout.seed", "dropout.draws"):
            if k not in state:
                raise CheckpointError(f"MindSporeBackend.load_rng_state: missing {k}")
        self.seed = int(np.asarray(state["dropout.seed"]))
        self._drop_draws = int(np.asarray(state["dropout.draws"]))
