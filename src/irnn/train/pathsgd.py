"""Path-SGD for recurrent networks (Neyshabur, Wu, Salakhutdinov & Srebro, NIPS 2016, arXiv 1605.07154).

The idea
--------
A ReLU network computes the same function after a *node-wise rescaling*: multiply everything
entering a hidden unit by ``c > 0`` and everything leaving it by ``1/c``. Plain SGD is not
invariant to that rescaling, so a badly balanced network (one huge layer, one tiny one) trains
badly although it is the same function. Path-SGD does approximate steepest descent with respect
to the *path regulariser*

    gamma(w) = sum over input->output paths p of  prod_{edges e on p} w_e^2,

which every rescaling leaves unchanged. For networks with shared weights (an RNN is its unrolled
feed-forward network with the same ``W_ih``, ``W_hh``, ``W_ho`` at every step) the update is

    w_i  <-  w_i - lr * (dL/dw_i) / kappa_i(w),        kappa_i = kappa_i^(1) + kappa_i^(2).

``kappa^(1)_i`` sums, over every occurrence ``e`` of weight ``i`` in the unrolled network, the
path regulariser's derivative with respect to ``w_e^2``; ``kappa^(2)_i`` collects the cross
terms of *two different* occurrences of weight ``i`` on one path (a recurrent weight used at
several steps of the same path).

How kappa is computed here
--------------------------
``kappa^(1)`` is one forward and one backward pass (:func:`path_scaling`): square every weight,
run the unrolled network on an all-ones input at every step with the activation replaced by the
identity, take half the sum of the outputs, and backpropagate. The gradient that lands on each
squared weight, accumulated by autograd over the time steps that share it, is its
``kappa^(1)`` -- it equals ``1/2 * sum over paths, over occurrences of the weight on the path,
of the product of the *other* squared weights`` (``tests/test_pathsgd.py`` checks this against
brute-force enumeration of every path). The pass is data-independent, so it runs on a batch of
one sequence.

Choices, and why
----------------
* **kappa^(2) is dropped.** The paper compares Path-SGD with and without ``kappa^(2)`` and
  reports that the first term alone is sufficient, while ``kappa^(2)`` needs pairs of
  occurrences on a path and is far more expensive. Dropping it does not cost invariance:
  with ``kappa^(1)`` alone the update still maps *exactly* under a node rescaling (an incoming
  weight scaled by ``c`` has its gradient scaled by ``1/c`` and its ``kappa`` by ``1/c^2``, so its
  step scales by ``c``), which is stronger than the first-order statement and is what the tests
  check.
* **Biases are edges from an always-on unit.** A bias is a weight on an edge from a constant
  input 1, so it is squared and takes part in the scaling pass like any weight: paths that start
  at a bias count in ``gamma``, biases get their own ``kappa``, and the rescaling of a hidden unit
  scales its biases with its other incoming weights (which keeps the ReLU function unchanged).
  ``nn.RNN``'s two biases ``b_ih`` and ``b_hh`` are two parallel edges.
* **The activation is the identity in the scaling pass, whatever the model uses.** With squared
  weights and all-ones inputs every pre-activation is >= 0, where ReLU *is* the identity, so for
  ReLU this is exact. For ELU, tanh and the others the same pass is used as a heuristic scaling:
  **the invariance argument holds for ReLU (positively homogeneous activations) only**; ELU is
  not homogeneous, so a rescaled ELU network is a different function to begin with.
* **Unroll length.** By default the sequence length of the first training batch the model sees
  (the task's ``T``: 784 for sequential MNIST, 28 row by row, the BPTT length of a language
  model); ``unroll`` overrides it. The initial state is zero, so no path starts there.
* **How often kappa is recomputed, and what it costs.** ``kappa`` depends on the weights, so by
  default it is recomputed before every step (``kappa_every=1``, the paper's rule). One
  recomputation is one forward+backward pass of the unrolled network on a batch of one: about
  ``1/B`` of the arithmetic of a training step of batch size ``B``, but the ``T`` sequential time
  steps still cost their per-step overhead, so for long sequences and small hidden sizes it can
  take a noticeable share of the step (``docs/pathsgd.md`` has measured numbers);
  ``kappa_every=k`` reuses it for ``k`` steps. ``kappa`` is kept in the optimizer state, so a
  resumed run continues with exactly the values it had.
* **Precision.** The scaling pass runs in float64: ``kappa`` grows like the ``T``-th power of the
  squared recurrent weights and leaves float32's range on long sequences long before float64's.
  A non-finite ``kappa`` stops training with a clear error instead of silently freezing weights.
* **Global step-size ratio.** Raw ``grad / kappa`` has no natural scale (``kappa`` ranges over
  orders of magnitude with ``T`` and the weights), so a learning rate tuned for SGD means
  nothing for it. With ``step_ratio="first"`` (default) the first step measures
  ``ratio = ||grad|| / ||grad / kappa||`` over all parameters and keeps that constant for the rest
  of training: the first Path-SGD step is as long as an SGD step of the same ``lr`` would be, and
  ``lr`` stays comparable with ``--optimizer sgd``. This is the convention of public Path-SGD
  implementations; the ratio is one global constant, so it never changes the update's
  *direction* (or its invariance), only its length. ``step_ratio=1.0`` gives the paper's raw
  update ``lr * grad / kappa``.
* **Momentum and weight decay** are optional (defaults 0, the paper's plain update). Momentum
  accumulates the normalised steps, so it keeps the invariance; weight decay ``wd * w`` is added to
  the gradient before the division and does not (it is not rescaling-invariant in any optimizer).
* A weight whose ``kappa`` is 0 (no path goes through it, e.g. the incoming weights of a unit
  whose outgoing weights are all zero) also has a zero gradient; ``kappa`` is floored at ``eps``
  so that 0/0 becomes 0.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Union

import torch
from torch import nn

from ..errors import ConfigError, TrainingDiverged
from ..kernels import elman
from ..models.activations import get_activation
from ..models.elman_net import ElmanNet, elman_net

_IDENTITY = get_activation("identity")


def path_scaling(net: ElmanNet, steps: int) -> Dict[nn.Parameter, torch.Tensor]:
    """``kappa^(1)`` of every parameter of ``net`` for an unroll of ``steps`` time steps.

    Returns a dict from each parameter to a float64 tensor of its shape.
    """
    squared = {p: p.detach().double().square().requires_grad_() for p in net.parameters()}
    with torch.enable_grad():
        (0.5 * _squared_network_output(net, squared, steps)).backward()
    return {p: u.grad if u.grad is not None else torch.zeros_like(u) for p, u in squared.items()}


def path_norm(model_or_net: Union[nn.Module, ElmanNet], steps: int) -> float:
    """The squared path norm ``gamma(w)``: the sum over all paths of the product of squared weights.

    Invariant under node-wise rescaling of hidden units (see the module docstring). Computed by
    the same pass as :func:`path_scaling`: the unrolled network with squared weights on all-ones
    inputs, identity activation, outputs summed.
    """
    net = model_or_net if isinstance(model_or_net, ElmanNet) else elman_net(model_or_net, "path_norm")
    squared = {p: p.detach().double().square() for p in net.parameters()}
    with torch.no_grad():
        return float(_squared_network_output(net, squared, steps))


def _squared_network_output(net: ElmanNet, squared: Dict[nn.Parameter, torch.Tensor], steps: int) -> torch.Tensor:
    """Sum of the outputs of the unrolled network whose weights are ``squared`` (identity activation,
    all-ones input at each of ``steps`` steps, zero initial state, batch of one)."""
    if steps < 1:
        raise ConfigError(f"the Path-SGD unroll length must be a positive integer (got {steps})")
    first = net.layers[0].weight_ih
    if net.embedding is not None:
        # All-ones over the vocabulary: every token's (squared) embedding row feeds the RNN.
        x = squared[net.embedding.weight].sum(0)
    else:
        x = torch.ones(net.input_size, dtype=torch.float64, device=first.device)
    x = x.expand(steps, 1, -1).contiguous()  # time-major (T, B=1, I)
    last = None
    for layer in net.layers:
        biases = [squared[b] for b in layer.biases()]
        h0 = torch.zeros(1, layer.hidden_size, dtype=torch.float64, device=first.device)
        x, last = elman(x, h0, squared[layer.weight_ih], squared[layer.weight_hh],
                        sum(biases) if biases else None, _IDENTITY, return_sequence=True)
    # Per-step read-out: the head sees every state; its outputs summed over time are the head
    # applied to the sum of the states, plus T copies of its bias.
    h, copies = (x.sum(0), steps) if net.per_step else (last, 1)
    out = h @ squared[net.head.weight].t()
    if net.head.bias is not None:
        out = out + copies * squared[net.head.bias]
    return out.sum()


class PathSGD(torch.optim.Optimizer):
    """Path-SGD with ``kappa^(1)`` for ``[embedding ->] IRNN/RNN -> Linear`` models.

    Args:
        model: the network being trained (its structure is read by :func:`irnn.models.elman_net.elman_net`;
            other structures are refused with a ConfigError).
        lr: learning rate; with ``step_ratio="first"`` it is on SGD's scale (see the module docstring).
        momentum: heavy-ball momentum on the normalised step (0: the paper's plain update).
        weight_decay: L2 coefficient added to the gradient before the division.
        unroll: time steps of the scaling pass; default: the length of the first batch seen.
        kappa_every: recompute ``kappa`` every this many steps (1: every step).
        step_ratio: ``"first"`` (measure ``||g|| / ||g / kappa||`` at the first step and keep it) or a
            positive number used as the ratio throughout (``1.0``: the raw update).
        eps: floor of ``kappa`` (turns the 0/0 of weights on no path into 0).
    """

    def __init__(self, model: nn.Module, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 unroll: Optional[int] = None, kappa_every: int = 1, step_ratio: Union[str, float] = "first",
                 eps: float = 1e-12):
        for name, value, ok in (("lr", lr, lr > 0), ("momentum", momentum, 0 <= momentum < 1),
                                ("weight_decay", weight_decay, weight_decay >= 0),
                                ("kappa_every", kappa_every, isinstance(kappa_every, int) and kappa_every >= 1),
                                ("unroll", unroll, unroll is None or (isinstance(unroll, int) and unroll >= 1))):
            if not ok:
                raise ConfigError(f"Path-SGD: invalid {name} {value!r}")
        if step_ratio != "first" and not (isinstance(step_ratio, (int, float)) and step_ratio > 0):
            raise ConfigError(f"Path-SGD: step_ratio must be 'first' or a positive number (got {step_ratio!r})")
        self.net = elman_net(model, "Path-SGD")
        self.unroll, self.kappa_every, self.eps = unroll, kappa_every, eps
        # 'ratio' and 'steps' live in the param group so that state_dict() carries them to a resumed run.
        ratio = None if step_ratio == "first" else float(step_ratio)
        super().__init__(self.net.parameters(), dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                                    ratio=ratio, steps=0))
        self._length_hook = None
        if unroll is None:
            # On the model, not on its recurrent layer: classifiers reach IRNN through final_state(),
            # which does not run forward hooks.
            self._length_hook = model.register_forward_pre_hook(self._record_length)

    def _record_length(self, model, args):
        """Forward pre-hook: remember the time length of the first batch, then remove itself.

        The model's input is taken to be laid out like its recurrent layer's (``batch_first``):
        ``(B, T, I)`` features, or ``(B, T)`` integer token ids.
        """
        x = args[0]
        batched = x.dim() == (3 if x.is_floating_point() else 2)
        self.unroll = int(x.shape[1] if batched and self.net.batch_first else x.shape[0])
        self._length_hook.remove()
        self._length_hook = None

    def refresh_kappa(self) -> None:
        """Recompute ``kappa`` for the current weights and store it in the optimizer state."""
        if self.unroll is None:
            raise ConfigError("Path-SGD needs an unroll length: pass unroll=, or run the model on a batch "
                              "before the first step()")
        kappa = path_scaling(self.net, self.unroll)
        for p, k in kappa.items():
            if not torch.isfinite(k).all():
                raise TrainingDiverged(
                    f"the Path-SGD scaling overflowed over an unroll of {self.unroll} steps (the squared "
                    "recurrent weights grow faster than float64 can follow); use a shorter --pathsgd-unroll "
                    "or a smaller --lr")
            self.state[p]["kappa"] = k  # float64: kappa may exceed float32's range while g / kappa does not

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        (group,) = self.param_groups
        if group["steps"] % self.kappa_every == 0 or any("kappa" not in self.state[p] for p in group["params"]):
            self.refresh_kappa()
        updates = []
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
            updates.append((p, g, (g.double() / self.state[p]["kappa"].clamp_min(self.eps)).to(p.dtype)))
        if group["ratio"] is None and updates:
            grad_norm = math.sqrt(sum(float(g.square().sum()) for _, g, _ in updates))
            step_norm = math.sqrt(sum(float(d.square().sum()) for _, _, d in updates))
            # An all-zero first gradient says nothing about scale; wait for a real one.
            if step_norm > 0:
                group["ratio"] = grad_norm / step_norm
        scale = group["lr"] * (group["ratio"] or 0.0)
        for p, _, d in updates:
            if group["momentum"]:
                buf = self.state[p].get("momentum_buffer")
                d = d.clone() if buf is None else buf.mul_(group["momentum"]).add_(d)
                self.state[p]["momentum_buffer"] = d
            p.add_(d, alpha=-scale)
        group["steps"] += 1
        return loss
