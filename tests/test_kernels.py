"""The recurrence kernels: fused (compiled CPU) and cudnn (torch's op) against the reference loop."""

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

import irnn
from irnn.kernels import elman, fused
from irnn.kernels.cudnn import elman_cudnn
from irnn.kernels.reference import elman_reference
from irnn.models.activations import KERNEL_CODES, get_activation

SRC = str(Path(__file__).resolve().parents[1] / "src")

# (name, parameter): every kernel code, plus non-default parameters
ACTIVATIONS = [
    ("identity", None),
    ("relu", None),
    ("tanh", None),
    ("elu", None),
    ("elu", 0.5),
    ("leaky_relu", None),
    ("leaky_relu", 0.0),
    ("selu", None),
    ("softplus", None),
]
ACT_IDS = [n if p is None else f"{n}-{p}" for n, p in ACTIVATIONS]


# Tests that must also pass on a machine without a C++ compiler.
WITHOUT_KERNEL = {
    "test_cudnn_path_on_cpu_matches_reference",
    "test_disabled_by_environment_warns_once_and_layer_still_works",
    "test_missing_compiler_falls_back",
}


@pytest.fixture(autouse=True)
def kernel(request):
    if request.function.__name__ not in WITHOUT_KERNEL and not fused.fused_available():
        pytest.skip(f"fused kernel unavailable: {fused.fused_info().get('reason')}")


@contextmanager
def threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def rel_err(a, b):
    """Norm-relative difference (robust to individual entries near zero)."""
    return ((a - b).double().norm() / b.double().norm().clamp_min(1e-30)).item()


def make_inputs(T, B, I, H, *, wih=True, bias=True, dtype=torch.float32, seed=0, layout="plain"):
    """Random inputs with a contracting recurrence (so float32 error does not grow with T).

    layout "strided" hands over non-contiguous views: x as a batch-first tensor transposed, h0
    and bias as strided slices, the weights transposed copies viewed back.
    """
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x = rnd(T, B, I)
    h0 = 0.5 * rnd(B, H)
    w_ih = rnd(H, I) / I**0.5 if wih else None
    w_hh = 0.9 * rnd(H, H) / H**0.5
    b = 0.1 * rnd(H) if bias else None
    if layout == "strided":
        x = x.transpose(0, 1).contiguous().transpose(0, 1)  # batch-first storage
        h0 = torch.cat([h0, h0], 1)[:, ::2]
        w_hh = w_hh.t().contiguous().t()
        w_ih = w_ih.t().contiguous().t() if w_ih is not None else None
        b = torch.stack([b, b], 1)[:, 0] if b is not None else None
        assert not x.is_contiguous() and not h0.is_contiguous() and not w_hh.is_contiguous()
    return [t.requires_grad_() if t is not None else None for t in (x, h0, w_ih, w_hh, b)]


def run_with_grads(fn, inputs, act, loss, return_sequence=True):
    """Outputs and the gradients of every input for a fixed random loss."""
    x, h0, w_ih, w_hh, b = inputs
    y, h = fn(x, h0, w_ih, w_hh, b, act, return_sequence)
    g = torch.Generator().manual_seed(123)
    weights = lambda t: torch.randn(t.shape, generator=g, dtype=t.dtype)  # noqa: E731
    if loss == "all":  # a loss on every step and on the final state
        total = (y * weights(y)).sum() + (h * weights(h)).sum()
    else:  # classifier-style: the last state only
        total = (h * weights(h)).sum()
    present = [t for t in inputs if t is not None]
    grads = torch.autograd.grad(total, present)
    return ([y] if y is not None else []) + [h] + list(grads)


# (T, B, I, H, wih, bias, layout): fused projection (I <= 16), projection mode (I > 16),
# weight_ih None, bias None, singletons, H = 100 (7 vector tiles + masked tail), H at and just
# past the vector width, a batch that is not a multiple of the row block, strided views.
SHAPES = [
    (6, 7, 1, 13, True, True, "plain"),
    (5, 3, 40, 9, True, True, "plain"),
    (4, 5, 11, 11, False, True, "plain"),
    (5, 4, 3, 6, True, False, "plain"),
    (1, 1, 1, 1, True, True, "plain"),
    (4, 33, 2, 100, True, True, "plain"),
    (3, 9, 16, 16, True, True, "strided"),
    (3, 6, 17, 17, True, True, "strided"),
    (3, 5, 8, 8, False, False, "strided"),
]


@pytest.mark.parametrize("loss", ["all", "last"])
@pytest.mark.parametrize("name,param", ACTIVATIONS, ids=ACT_IDS)
def test_fused_matches_reference_float32(name, param, loss, monkeypatch):
    act = get_activation(name, param)
    # Small projection chunks so that the I > 16 path runs several chunks per sequence.
    monkeypatch.setattr(fused, "CHUNK_BYTES", 2 * 9 * 3 * 4)
    for T, B, I, H, wih, bias, layout in SHAPES:
        inputs = make_inputs(T, B, I, H, wih=wih, bias=bias, layout=layout)
        ours = run_with_grads(fused.elman_fused, inputs, act, loss)
        ref = run_with_grads(elman_reference, inputs, act, loss)
        assert len(ours) == len(ref)
        for k, (a, b) in enumerate(zip(ours, ref)):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert rel_err(a, b) < 1e-5, f"{(T, B, I, H, wih, bias, layout)} result {k}: {rel_err(a, b):.2e}"


@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_batch_split_across_threads(nthreads):
    # B = 7 does not divide by 2 or 3. (Big enough in T x H for the kernel to use every thread.)
    act = get_activation("elu")
    inputs = make_inputs(64, 7, 1, 128)
    with threads(nthreads):
        ours = run_with_grads(fused.elman_fused, inputs, act, "all")
    ref = run_with_grads(elman_reference, inputs, act, "all")
    for a, b in zip(ours, ref):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("name,param", ACTIVATIONS, ids=ACT_IDS)
def test_gradcheck_float64(name, param):
    act = get_activation(name, param)
    for T, B, I, H, wih in [(3, 2, 2, 3, True), (2, 3, 4, 4, False), (2, 2, 17, 3, True)]:
        inputs = make_inputs(T, B, I, H, wih=wih, dtype=torch.float64, seed=1)
        present = [t for t in inputs if t is not None]

        def f(*ts):
            it = iter(ts)
            args = [next(it) if t is not None else None for t in inputs]
            return fused.elman_fused(*args, act, True)

        assert torch.autograd.gradcheck(f, present, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_return_sequence_false_and_no_grad_match():
    act = get_activation("tanh")
    x, h0, w_ih, w_hh, b = make_inputs(8, 5, 3, 12)
    y_ref, h_ref = elman_reference(x, h0, w_ih, w_hh, b, act)
    y, h = fused.elman_fused(x, h0, w_ih, w_hh, b, act, return_sequence=False)
    assert y is None and h.requires_grad
    assert rel_err(h, h_ref) < 1e-6
    with torch.no_grad():
        y1, h1 = fused.elman_fused(x, h0, w_ih, w_hh, b, act, return_sequence=True)
        y2, h2 = fused.elman_fused(x, h0, w_ih, w_hh, b, act, return_sequence=False)
    assert rel_err(y1, y_ref) < 1e-6 and y2 is None
    assert torch.equal(h1, h2) and torch.equal(h1, h.detach())


def test_no_grad_final_state_keeps_no_sequence():
    act = get_activation("relu")
    for I, wih in [(1, True), (40, True), (12, False)]:
        x, h0, w_ih, w_hh, b = (t.detach() if t is not None else None for t in make_inputs(9, 4, I, 12, wih=wih))
        with torch.no_grad():
            _, h = fused.elman_fused(x, h0, w_ih, w_hh, b, act, return_sequence=False)
        assert fused.last_forward_stored_steps == 0
        _, h_ref = elman_reference(x, h0, w_ih, w_hh, b, act, return_sequence=False)
        assert torch.equal(h, fused.elman_fused(x, h0, w_ih, w_hh, b, act, True)[1])
        assert rel_err(h, h_ref) < 1e-5
    # ...while training always stores the outputs (the backward pass needs them)
    x.requires_grad_()
    fused.elman_fused(x, h0, w_ih, w_hh, b, act, return_sequence=False)
    assert fused.last_forward_stored_steps == 9


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux peak-RSS reset")
def test_no_grad_final_state_memory_does_not_scale_with_length():
    # T x B x H x 4 bytes = 800 MB if the states were kept; the input is only 8 MB. Measured as
    # the step's own peak-RSS growth in a fresh process; the full sequence shows the method sees it.
    code = textwrap.dedent(
        """
        import torch
        from irnn import IRNN

        def grown_mb(fn):
            open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
            status = lambda key: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
            base = status("VmRSS:")
            out = fn()
            return (status("VmHWM:") - base) // 1024, out

        torch.manual_seed(0)
        net = IRNN(1, 100, activation="elu")
        x = torch.randn(1000, 2000, 1)
        with torch.no_grad():
            net.final_state(x[:5])  # load the kernel, start the threads
            last_mb, h = grown_mb(lambda: net.final_state(x))
            full_mb, (y, _) = grown_mb(lambda: net(x))
        print(last_mb, full_mb, torch.equal(y[-1], h[-1]))
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    last_mb, full_mb, same = out.stdout.split()
    assert same == "True"
    assert int(last_mb) < 50, f"no-grad final_state grew RSS by {last_mb} MB"
    assert int(full_mb) > 700  # the method does see a stored sequence


def test_output_buffers_are_recycled_only_when_unused():
    act = get_activation("relu")
    x, h0, w_ih, w_hh, b = make_inputs(50, 64, 1, 100)  # 1.3 MB of outputs: pooled
    fused.release_buffers()
    y1, h1 = fused.elman_fused(x, h0, w_ih, w_hh, b, act)
    kept = y1.detach().clone()
    y2, h2 = fused.elman_fused(x, h0, w_ih, w_hh, b, act)  # y1 is alive: a new buffer
    assert y2.data_ptr() != y1.data_ptr() and torch.equal(y1, kept)
    ptr = y1.data_ptr()
    del y1, h1  # the last users of the first buffer (output and autograd graph)
    y3, _ = fused.elman_fused(x, h0, w_ih, w_hh, b, act)
    assert y3.data_ptr() == ptr and torch.equal(y3, kept)
    y3.sum().backward()  # a recycled buffer works under autograd like any other
    assert torch.isfinite(w_hh.grad).all()
    fused.release_buffers()


def test_deterministic_bitwise():
    act = get_activation("elu")
    inputs = make_inputs(12, 37, 1, 100)
    a = run_with_grads(fused.elman_fused, inputs, act, "all")
    b = run_with_grads(fused.elman_fused, inputs, act, "all")
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    # Per-row results (outputs, h_last, dx, dh0) do not depend on the thread count either.
    with threads(1):
        c = run_with_grads(fused.elman_fused, inputs, act, "all")
    y, h, dx, dh0 = a[0], a[1], a[2], a[3]
    assert torch.equal(y, c[0]) and torch.equal(h, c[1]) and torch.equal(dx, c[2]) and torch.equal(dh0, c[3])
    for u, v in zip(a[4:], c[4:]):  # weight/bias gradients: same up to summation order
        assert rel_err(u, v) < 1e-6


def test_nan_propagates():
    act = get_activation("relu")
    x, h0, w_ih, w_hh, b = (t.detach() for t in make_inputs(3, 2, 1, 5))
    x[1, 0, 0] = float("nan")
    y, _ = fused.elman_fused(x, h0, w_ih, w_hh, b, act, True)
    assert torch.isnan(y[1:, 0]).all() and torch.isfinite(y[:, 1]).all()


def test_unsupported_inputs_use_reference():
    gelu = get_activation("gelu")
    x, h0, w_ih, w_hh, b = (t.detach() for t in make_inputs(3, 2, 1, 5))
    y, h = fused.elman_fused(x, h0, w_ih, w_hh, b, gelu)
    torch.testing.assert_close(y, elman_reference(x, h0, w_ih, w_hh, b, gelu)[0])
    half = [t.to(torch.bfloat16) for t in (x, h0, w_ih, w_hh, b)]
    y, _ = fused.elman_fused(*half, get_activation("relu"))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="weight_hh"):
        fused.elman_fused(x, h0, w_ih, w_hh[:, :4], b, get_activation("relu"))


@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_fused_equals_reference_backend(batch_first):
    torch.manual_seed(0)
    fast = irnn.IRNN(3, 24, num_layers=3, activation="elu", batch_first=batch_first, bias_init="uniform")
    slow = irnn.IRNN(3, 24, num_layers=3, activation="elu", batch_first=batch_first, backend="reference")
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(5, 11, 3) if batch_first else torch.randn(11, 5, 3)
    h0 = 0.3 * torch.randn(3, 5, 24)
    results = []
    for net in (fast, slow):
        xi, hi = x.clone().requires_grad_(), h0.clone().requires_grad_()
        out, h_n = net(xi, hi)
        (out.square().mean() + h_n.sum()).backward()
        last = net.final_state(xi, hi)
        results.append([out, h_n, last, xi.grad, hi.grad] + [p.grad for p in net.parameters()])
    for k, (a, b) in enumerate(zip(*results)):
        assert rel_err(a, b) < 1e-5, k


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_layer_matches_nn_rnn(act):
    torch.manual_seed(0)
    ref = nn.RNN(1, 100, num_layers=2, nonlinearity=act, batch_first=True)
    ours = irnn.IRNN(1, 100, num_layers=2, activation=act, batch_first=True, bias_init="uniform")
    ours.load_state_dict(ref.state_dict())
    assert irnn.kernels.resolve_backend(torch.zeros(1), ours.activation) == "fused"
    x = torch.randn(6, 30, 1)
    results = []
    for net in (ours, ref):
        out, h_n = net(x)
        (out[:, -1].square().sum() + h_n.mean()).backward()
        results.append([out, h_n] + [p.grad for p in net.parameters()])
    for k, (a, b) in enumerate(zip(*results)):
        assert rel_err(a, b) < 1e-5, k


@pytest.mark.parametrize("name", ["relu", "tanh", "elu"])
@pytest.mark.parametrize("wih", [True, False])
def test_cudnn_path_on_cpu_matches_reference(name, wih):
    # torch._VF.rnn_relu / rnn_tanh also run on CPU, so the CUDA path's logic is checked here.
    act = get_activation(name)
    inputs = make_inputs(7, 4, 5 if wih else 6, 6, wih=wih)
    ours = run_with_grads(elman_cudnn, inputs, act, "all")
    ref = run_with_grads(elman_reference, inputs, act, "all")
    for a, b in zip(ours, ref):
        assert rel_err(a, b) < 1e-5
    x, h0, w_ih, w_hh, _ = inputs
    y, h = elman_cudnn(x, h0, w_ih, w_hh, None, act, return_sequence=False)
    assert y is None and rel_err(h, elman_reference(x, h0, w_ih, w_hh, None, act)[1]) < 1e-5


def test_dispatcher_picks_fused_for_kernel_activations():
    x = torch.zeros(2, 2, 2)
    for name in KERNEL_CODES:
        assert irnn.kernels.resolve_backend(x, get_activation(name)) == "fused"
    assert irnn.kernels.resolve_backend(x, get_activation("gelu")) == "reference"
    assert irnn.kernels.resolve_backend(x.half(), get_activation("relu")) == "reference"


def test_disabled_by_environment_warns_once_and_layer_still_works():
    code = textwrap.dedent(
        """
        import warnings, torch
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from irnn.kernels import fused
            import irnn
            first, second = fused.fused_available(), fused.fused_available()
            net = irnn.IRNN(2, 5, activation="elu")
            ref = irnn.IRNN(2, 5, activation="elu", backend="reference")
            ref.load_state_dict(net.state_dict())
            x = torch.randn(4, 3, 2)
            same = torch.equal(net(x)[0], ref(x)[0])
            net(x)[0].sum().backward()
        msgs = [str(w.message) for w in caught if "irnn" in str(w.message)]
        print(first, second, same, len(msgs))
        print(msgs[0] if msgs else "")
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC, "IRNN_NO_FUSED": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    flags, message = out.stdout.splitlines()
    assert flags == "False False True 1"
    assert message.startswith("irnn: fused recurrence kernel unavailable (disabled by IRNN_NO_FUSED)")
    assert "reference loop" in message and "\n" not in message


def test_missing_compiler_falls_back(monkeypatch, tmp_path):
    was_available = fused.fused_available()
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("IRNN_CACHE", str(tmp_path / "cache"))
    fused._reset()
    try:
        with pytest.warns(RuntimeWarning, match="unavailable .*no-such-compiler.*reference loop") as record:
            assert not fused.fused_available()
            assert not fused.fused_available()
            act = get_activation("elu")
            inputs = make_inputs(3, 2, 1, 4)
            y, h = fused.elman_fused(*inputs, act, True)  # quietly runs the reference loop
        assert len([w for w in record if "irnn" in str(w.message)]) == 1
        torch.testing.assert_close(y, elman_reference(*inputs, act)[0])
    finally:
        monkeypatch.undo()
        fused._reset()
    assert fused.fused_available() == was_available


@pytest.mark.slow
def test_damaged_cache_entry_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("IRNN_CACHE", str(tmp_path))
    cxx = fused._compiler()
    path = fused._library_path(fused._cache_dir(), fused._SOURCE.read_bytes(), cxx, fused._compiler_identity(cxx),
                               fused._FLAG_SETS[0])
    assert path.parent == tmp_path / "kernels"
    path.write_bytes(b"not a shared library")  # e.g. left by a full disk
    fused._reset()
    try:
        assert fused.fused_available()
        assert fused.fused_info()["path"] == str(path) and path.stat().st_size > 1000
        assert not list(path.parent.glob("*.tmp"))
    finally:
        monkeypatch.undo()
        fused._reset()


@pytest.mark.slow
def test_fused_matches_reference_long_sequence():
    # sequential-MNIST shape: the per-step error must not grow over hundreds of steps
    act = get_activation("elu")
    inputs = make_inputs(784, 16, 1, 100, seed=3)
    ours = run_with_grads(fused.elman_fused, inputs, act, "last", return_sequence=False)
    ref = run_with_grads(elman_reference, inputs, act, "last", return_sequence=False)
    for a, b in zip(ours, ref):
        assert rel_err(a, b) < 1e-5
