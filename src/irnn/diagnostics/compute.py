"""The numbers behind the diagnostics, for one model on one fixed batch.

Everything here runs the network step by step in float64 (gradients over hundreds of steps
leave float32's range long before they stop being informative) through an explicit loop that
keeps every pre-activation ``z_t`` and state ``h_t`` of every layer. Speed is secondary; memory
is ``O(T * B * H)`` per layer, a few hundred MB for sequential MNIST with a batch of 100.

Definitions (``B`` sequences, ``T`` steps, ``H`` units per layer; ``L`` the task's mean loss
over the batch; ``z_t = W_ih x_t + b + W_hh h_{t-1}``, ``h_t = f(z_t)``):

``grad_norm[t]``
    ``||dL/dh_t||``, the Frobenius norm over the batch and units of the *total* derivative of
    ``L`` with respect to the state after step ``t`` (through every later step and the read-out).
    Its decay from ``t = T`` back to ``t = 1`` shows how far back the gradient reaches.
``hidden_norm[t]``
    the mean over the batch of ``||h_t||_2``: does the state explode, decay, or hold.
``preact_quantiles``
    the quantiles :data:`QUANTILES` of ``z_t`` over the batch and units, at every step.
``negative_fraction[_per_step]``
    the fraction of ``z_t < 0``: ReLU's zeroed outputs, ELU's negative (saturating) regime.
``dead_fraction``
    the fraction of units whose pre-activation is ``<= 0`` at every step of every sequence of the
    batch. For ReLU that is an output stuck at 0 for the whole sequence, across the batch: no
    gradient passes through the unit on this batch at all. For ELU it means the unit never
    leaves its negative regime. ``dead_units`` lists them.
``dead_fraction_per_sequence``
    the same, per sequence: the mean over sequences of the fraction of units that stay ``<= 0``
    for that whole sequence.
``spectral_radius``, ``singular_values``
    the largest ``|eigenvalue|`` and the :data:`TOP_SINGULAR` largest singular values of
    ``W_hh``; for ReLU and the identity init they say whether ``h`` can grow (radius > 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..models.elman_net import ElmanLayer, ElmanNet

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_SINGULAR = 10


@dataclass
class LayerTrace:
    """One recurrent layer on the batch: time-major float64 tensors ``(T, B, H)``."""

    pre: torch.Tensor
    state: torch.Tensor
    grad: torch.Tensor


def unroll(net: ElmanNet, x: torch.Tensor, offsets: Optional[List[torch.Tensor]] = None
           ) -> Tuple[torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
    """Run ``net`` on ``x`` (laid out like the model's input) in float64, one step at a time.

    Returns ``(output, pre_activations, states)``: the output laid out like the model's, and per
    layer the ``(T, B, H)`` stacks of ``z_t`` and ``h_t``. ``offsets`` (one ``(T, B, H)`` tensor per
    layer) are added to each ``h_t`` before anything uses it; at zero they change nothing, and the
    derivative of the loss with respect to them is ``dL/dh_t`` (see :func:`gradient_flow`).
    """
    w = {p: p.detach().double() for p in net.parameters()}
    if net.embedding is not None:
        seq = F.embedding(x, w[net.embedding.weight])
    elif not x.is_floating_point():  # token ids without an embedding: one-hot vectors
        seq = F.one_hot(x, net.input_size).double()
    else:
        seq = x.double()
    if net.batch_first:
        seq = seq.transpose(0, 1)  # time-major from here on
    pres, states = [], []
    for index, layer in enumerate(net.layers):
        z, h = _run_layer(layer, w, seq, None if offsets is None else offsets[index])
        pres.append(z)
        states.append(h)
        seq = h
    read = seq if net.per_step else seq[-1]
    out = read @ w[net.head.weight].t()
    if net.head.bias is not None:
        out = out + w[net.head.bias]
    if net.per_step and net.batch_first:
        out = out.transpose(0, 1)
    return out, pres, states


def _run_layer(layer: ElmanLayer, w: Dict, seq: torch.Tensor, offset: Optional[torch.Tensor]):
    drive = seq @ w[layer.weight_ih].t()
    for b in layer.biases():
        drive = drive + w[b]
    w_hh_t = w[layer.weight_hh].t()
    h = drive.new_zeros(drive.shape[1], layer.hidden_size)
    zs, hs = [], []
    for t in range(drive.shape[0]):
        z = drive[t] + h @ w_hh_t
        h = layer.activation(z)
        if offset is not None:
            h = h + offset[t]
        zs.append(z)
        hs.append(h)
    return torch.stack(zs), torch.stack(hs)


def gradient_flow(net: ElmanNet, x: torch.Tensor, y: torch.Tensor,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Tuple[float, List[LayerTrace]]:
    """The loss on the batch and, per layer, the pre-activations, states and ``dL/dh_t``.

    ``dL/dh_t`` is the gradient with respect to a zero offset added to ``h_t``: autograd then
    returns the total derivative through every later use of ``h_t``, in one backward pass,
    without retaining gradients on the model's parameters.
    """
    steps = x.shape[1] if net.batch_first else x.shape[0]
    batch = x.shape[0] if net.batch_first else x.shape[1]
    offsets = [torch.zeros(steps, batch, layer.hidden_size, dtype=torch.float64, device=x.device, requires_grad=True)
               for layer in net.layers]
    with torch.enable_grad():
        out, pres, states = unroll(net, x, offsets)
        loss = loss_fn(out, y)
        grads = torch.autograd.grad(loss, offsets)
    traces = [LayerTrace(z.detach().cpu(), h.detach().cpu(), g.cpu()) for z, h, g in zip(pres, states, grads)]
    return float(loss.detach()), traces


def layer_summary(trace: LayerTrace, layer: ElmanLayer) -> Dict:
    """Every number of one layer (see the module docstring), as plain Python for JSON."""
    pre = trace.pre
    grad_norm = trace.grad.flatten(1).norm(dim=1)
    off_whole_sequence = (pre <= 0).all(dim=0)  # (B, H)
    dead = off_whole_sequence.all(dim=0)  # (H,)
    w_hh = layer.weight_hh.detach().double().cpu()
    quantiles = np.quantile(pre.flatten(1).numpy(), QUANTILES, axis=1)  # (Q, T)
    first, last = float(grad_norm[0]), float(grad_norm[-1])
    return {
        "hidden_size": layer.hidden_size,
        "activation": layer.activation.describe(),
        "grad_norm": _floats(grad_norm),
        "grad_norm_first_over_last": _round(first / last) if last > 0 else None,
        "hidden_norm": _floats(trace.state.norm(dim=2).mean(dim=1)),
        "preact_quantiles": {"q": list(QUANTILES), "values": [_floats(row) for row in quantiles]},
        "negative_fraction_per_step": _floats((pre < 0).double().mean(dim=(1, 2))),
        "negative_fraction": _round((pre < 0).double().mean()),
        "dead_fraction": _round(dead.double().mean()),
        "dead_units": dead.nonzero().flatten().tolist(),
        "dead_fraction_per_sequence": _round(off_whole_sequence.double().mean()),
        "spectral_radius": _round(torch.linalg.eigvals(w_hh).abs().max()),
        "singular_values": _floats(torch.linalg.svdvals(w_hh)[:TOP_SINGULAR]),
    }


def _round(value) -> float:
    """Six significant digits: plenty for figures and comparisons, and small JSON files."""
    return float(f"{float(value):.6g}")


def _floats(values) -> List[float]:
    return [_round(v) for v in np.asarray(values, dtype=float).ravel()]
