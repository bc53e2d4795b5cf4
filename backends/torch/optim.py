"""The torch backend's optimiser: ``torch.optim.Adam`` / ``torch.optim.SGD`` over the two groups
(``trunk`` lr × trunk_lr_mult, ``head`` lr × head_lr_mult; L2 weight decay added to the gradient),
its state mapped to and from the framework-free layout of :mod:`mvd_core.weights.optim_state`
(the MindSpore backend's ``optim.py`` has the same public names)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from mvd_core.config import OptimConfig
from mvd_core.errors import MvdError
from mvd_core.model.spec import ParamSpec
from mvd_core.weights import optim_state


class Optimizer:
    """``o.name`` over ``params`` (canonical name → live tensor, in
    :func:`mvd_core.weights.optim_state.trainable` order). ``torch`` is the ``torch.optim``
    instance (zero_grad, step, a GradScaler's step); :meth:`hyper` sets the learning rate."""

    def __init__(
        self, o: OptimConfig, spec: Mapping[str, ParamSpec], params: Mapping[str, torch.Tensor]
    ) -> None:
        if o.name not in optim_state.SLOTS:
            raise MvdError(f"optim.name={o.name!r}: expected {' or '.join(optim_state.SLOTS)}")
        self.kind = o.name
        self.spec = dict(spec)
        self.names: list[str] = optim_state.trainable(spec)
        if list(params) != self.names:
            raise RuntimeError("Optimizer: params must be the trainable parameters in optim_state order")
        self.params = dict(params)
        groups = []
        for group, mult in (("trunk", o.trunk_lr_mult), ("head", o.head_lr_mult)):
            names = [k for k in self.names if spec[k].group == group]
            if names:
                groups.append({"params": [params[k] for k in names], "names": names,
                               "lr": o.lr * mult, "lr_mult": mult})
        self.torch: torch.optim.Optimizer
        if o.name == "adam":
            self.torch = torch.optim.Adam(
                groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                foreach=True,  # multi-tensor kernels: far less per-parameter overhead, CPU too
            )
        else:
            self.torch = torch.optim.SGD(
                groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                weight_decay=o.weight_decay, foreach=True,
            )

    @property
    def param_groups(self) -> list[dict]:
        return self.torch.param_groups

    def hyper(self, lr: float) -> None:
        """Set this update's learning rate (× each group's multiplier)."""
        for g in self.torch.param_groups:
            g["lr"] = lr * g["lr_mult"]

    @property
    def t(self) -> int:
        """Updates taken (Adam's step; 0 before the first)."""
        steps = {int(st["step"]) for st in self.torch.state.values() if "step" in st}
        if len(steps) > 1:
            raise RuntimeError(f"Adam step counts differ between parameters: {sorted(steps)}")
        return steps.pop() if steps else 0

    def state(self) -> dict[str, np.ndarray]:
        """The canonical state (float32 whatever the network's precision)."""
        out = optim_state.zeros(self.kind, self.spec)
        src = {"m": "exp_avg", "v": "exp_avg_sq", "momentum": "momentum_buffer"}
        for k, p in self.params.items():
            st = self.torch.state.get(p, {})
            for slot in optim_state.SLOTS[self.kind]:
                t = st.get(src[slot])
                if t is not None:
                    out[optim_state.slot_key(self.kind, slot, k)] = t.detach().float().cpu().numpy().copy()
        if self.kind == "adam":
            out["adam.step"] = np.array(self.t, dtype=np.int64)
        return out

    def load_state(self, state: Mapping[str, np.ndarray], source: str) -> None:
        """Load a canonical state, checked first (one CheckpointError naming every bad key)."""
        optim_state.check(state, self.kind, self.spec, source)
        self.torch.state.clear()
        if self.kind == "adam":
            step = optim_state.step_of(state)
            if step > 0:  # at 0, torch's lazily created state is the zeros state
                for k, p in self.params.items():
                    self.torch.state[p] = {
                        "step": torch.tensor(float(step), dtype=torch.float32),
                        "exp_avg": _like(p, state[f"adam.m.{k}"]),
                        "exp_avg_sq": _like(p, state[f"adam.v.{k}"]),
                    }
        else:
            for k, p in self.params.items():
                self.torch.state[p] = {"momentum_buffer": _like(p, state[f"sgd.momentum.{k}"])}


def _like(p: torch.Tensor, a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32)).to(p.device, p.dtype)
