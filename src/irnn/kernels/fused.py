"""The fused CPU Elman recurrence: ``fused.cpp`` compiled on first use, called through ctypes.

:func:`elman_fused` has exactly the arguments and results of
:func:`irnn.kernels.reference.elman_reference`; the difference is that the whole time loop,
forward and backward, runs in compiled code:

* **Threads.** Batch rows are independent, so the batch is split into ``torch.get_num_threads()``
  contiguous, balanced slices and each OpenMP thread runs its slice through every time step on
  its own: one fork/join per kernel call, no barrier per step. Calls too small to pay for a
  thread (under ~4 MFLOP per thread) run on the calling thread.
* **Per-step GEMM.** ``h_{t-1} W_hh^T`` runs through a register-blocked micro-kernel (6 rows x 4
  vectors of accumulators with AVX-512, 4 x 3 with AVX2/SSE) against a transposed copy of
  ``W_hh`` whose rows are padded to the vector width; the activation is applied right after, on
  the same rows while they are in L1.
* **Input projection.** For ``I <= FUSE_INPUT_MAX`` (sequential MNIST has ``I = 1``) the kernel
  adds ``x_t W_ih^T + b`` itself, so no ``T x B x H`` projection is ever built. For larger ``I``
  the projection is one torch GEMM per chunk of time steps, again without a full-size buffer.
* **Memory.** Training stores only the outputs ``y`` (``T x B x H``, which the layer returns
  anyway); the activation's derivative is recomputed from ``y`` (see
  :mod:`irnn.models.activations`). Under ``torch.no_grad()`` with ``return_sequence=False`` the
  kernel keeps two ``B x H`` states and nothing per step. Training outputs come from a small
  pool of recycled buffers (:class:`_StatePool`): a fresh 40 MB block per step would cost more
  in page faults than the forward pass itself.
* **Backward.** ``d_t = (dy_t + g_t) f'(y_t)``, ``g_{t-1} = d_t W_hh`` with the same threading;
  the weight gradients ``dW_hh += d_t^T h_{t-1}``, ``dW_ih``, ``db`` are accumulated inside the
  same time loop into per-thread partials while ``d_t`` and ``h_{t-1}`` are still in cache, so no
  ``T x B x H`` buffer of ``d`` is needed either (only the ``I > FUSE_INPUT_MAX`` and
  ``weight_ih=None`` cases hand ``d`` back to torch, chunk by chunk or as ``dx`` itself).
* **Determinism.** Outputs, ``h_last`` and ``dh0`` (and ``dx`` unless ``I > FUSE_INPUT_MAX``,
  where torch computes it) are bitwise identical for any thread count; weight and bias
  gradients are bitwise reproducible for a fixed thread count.

The library is built with the system C++ compiler (``$CXX``, else ``c++``/``g++``/``clang++``)
into ``$IRNN_CACHE/kernels`` (default ``~/.cache/irnn/kernels``), keyed by a hash of the source,
the compiler and its version, the flags and the CPU, and written atomically, so concurrent
processes and machines sharing the cache are safe. If no compiler is found or the build fails,
:func:`fused_available` returns False, one warning is issued, and :func:`elman_fused` falls back
to the reference loop. ``IRNN_NO_FUSED=1`` disables the kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..models.activations import Activation
from .reference import elman_reference

__all__ = ["FUSE_INPUT_MAX", "elman_fused", "fused_available", "fused_info", "release_buffers"]

#: Largest input size whose projection ``x_t W_ih^T`` is computed inside the kernel.
FUSE_INPUT_MAX = 16
#: Projection/gradient chunks of the ``I > FUSE_INPUT_MAX`` path hold about this many bytes.
CHUNK_BYTES = 4 << 20

_SOURCE = Path(__file__).with_name("fused.cpp")
_ABI = 1  # must equal IRNN_FUSED_ABI in fused.cpp
_BASE_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-std=c++17", "-shared", "-fPIC"]
# -fopenmp first; a compiler without OpenMP (Apple clang) still gets a single-threaded kernel.
_FLAG_SETS = (_BASE_FLAGS + ["-fopenmp"], _BASE_FLAGS)

_lock = threading.Lock()
_tried = False
_lib: Optional[ctypes.CDLL] = None
_info: dict = {}
_reason: Optional[str] = None
_warned = False

# Set by every forward: how many per-step (B, H) state rows it allocated (T when the sequence
# is stored, 0 for the ping-pong no-grad path). Tests read it; it costs nothing.
last_forward_stored_steps = 0


class _BuildError(Exception):
    pass


# --------------------------------------------------------------------------- build and load


def fused_available() -> bool:
    """True if the compiled kernel is loaded (building it on the first call).

    When it cannot be (no compiler, build or load failure, ``IRNN_NO_FUSED=1``) this returns
    False and warns once per process; nothing raises.
    """
    return _load() is not None


def fused_info() -> dict:
    """What was loaded: library path, compiler, flags, vector width, OpenMP; or the reason not."""
    _load()
    return dict(_info) if _lib is not None else {"available": False, "reason": _reason}


def _load() -> Optional[ctypes.CDLL]:
    global _tried, _lib, _reason, _warned
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("IRNN_NO_FUSED", "").strip() not in ("", "0"):
                _reason = "disabled by IRNN_NO_FUSED"
            else:
                try:
                    _lib = _build_and_load()
                except _BuildError as e:
                    _reason = str(e)
                except Exception as e:  # never let a kernel problem take the program down
                    _reason = f"{type(e).__name__}: {e}"
            _tried = True
            if _lib is None and not _warned:
                _warned = True
                warnings.warn(
                    f"irnn: fused recurrence kernel unavailable ({_one_line(_reason)}); "
                    "using the slower reference loop",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _lib


def _reset() -> None:
    """Forget the loaded state (tests only): the next call tries again and may warn again."""
    global _tried, _lib, _reason, _warned, _info
    with _lock:
        _tried, _lib, _reason, _warned, _info = False, None, None, False, {}


def _one_line(text: Optional[str], limit: int = 200) -> str:
    text = " ".join((text or "unknown error").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _compiler() -> list:
    env = os.environ.get("CXX", "").strip()
    cxx = shlex.split(env) if env else None
    if not cxx:
        found = next((shutil.which(c) for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
        if found is None:
            raise _BuildError("no C++ compiler found; install g++ or set CXX")
        cxx = [found]
    if shutil.which(cxx[0]) is None:
        raise _BuildError(f"C++ compiler {cxx[0]!r} not found")
    return cxx


def _compiler_identity(cxx: list) -> str:
    try:
        r = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise _BuildError(f"cannot run {cxx[0]!r}: {e}") from None
    if r.returncode != 0:
        raise _BuildError(f"{cxx[0]!r} --version failed: {_one_line(r.stderr)}")
    return os.path.realpath(shutil.which(cxx[0]) or cxx[0]) + "\n" + r.stdout.strip()


def _cpu_signature() -> str:
    # -march=native binaries must not be shared between different CPUs: key them by the
    # CPU's feature flags as well as the architecture.
    sig = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return sig + "\n" + line.strip()
    except OSError:
        pass
    return sig + "\n" + platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("IRNN_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "irnn"
    path = base / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    # Read-only home or cache: build into a private temporary folder for this process.
    return Path(tempfile.mkdtemp(prefix="irnn-kernels-"))


def _compile(cxx: list, flags: list, out: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        cmd = [*cxx, *flags, str(_SOURCE), "-o", tmp]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise _BuildError(f"cannot run the compiler: {e}") from None
        if r.returncode != 0:
            lines = [ln for ln in (r.stderr or r.stdout).splitlines() if "error" in ln.lower()]
            raise _BuildError(f"build failed: {_one_line(lines[0] if lines else r.stderr)}")
        os.chmod(tmp, 0o755)  # mkstemp made it private; a cache entry is an ordinary library
        os.replace(tmp, out)  # atomic: a concurrent builder either sees no file or a whole one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _library_path(cache: Path, source: bytes, cxx: list, identity: str, flags: list) -> Path:
    parts = (source, " ".join(cxx).encode(), identity.encode(), " ".join(flags).encode(), _cpu_signature().encode())
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:24]
    return cache / f"fused-{digest}.so"


def _build_and_load() -> ctypes.CDLL:
    global _info
    if not _SOURCE.is_file():
        raise _BuildError(f"kernel source {_SOURCE.name} is missing from the installation")
    cxx = _compiler()
    identity = _compiler_identity(cxx)
    source = _SOURCE.read_bytes()
    cache = _cache_dir()
    errors = []
    for flags in _FLAG_SETS:
        path = _library_path(cache, source, cxx, identity, flags)
        try:
            if not path.exists():
                _compile(cxx, flags, path)
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                _compile(cxx, flags, path)  # a damaged cache entry: rebuild it once
                lib = ctypes.CDLL(str(path))
        except (_BuildError, OSError) as e:
            errors.append(str(e))
            continue
        if lib.irnn_fused_abi() != _ABI:
            errors.append("kernel library has a different ABI version")
            continue
        _declare(lib)
        _info = {
            "available": True,
            "path": str(path),
            "compiler": identity.splitlines()[1] if "\n" in identity else identity,
            "flags": " ".join(flags),
            "vector_bytes": lib.irnn_fused_vector_bytes(),
            "openmp": bool(lib.irnn_fused_has_openmp()),
        }
        return lib
    raise _BuildError(errors[0] if errors else "unknown build failure")


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, cint, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    for name in ("irnn_forward_f32", "irnn_forward_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [i64, i64, i64, i64] + [ptr] * 7 + [cint, dbl, cint]
        fn.restype = cint
    for name in ("irnn_backward_f32", "irnn_backward_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [i64] * 6 + [ptr] * 12 + [cint, dbl, cint]
        fn.restype = cint


def _p(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _check(rc: int, what: str) -> None:
    if rc == 1:
        raise RuntimeError(f"irnn fused {what}: invalid arguments (a bug in irnn, please report it)")
    if rc != 0:
        raise MemoryError(f"irnn fused {what}: out of memory for kernel scratch")


def _suffix(dtype: torch.dtype) -> str:
    return "f32" if dtype == torch.float32 else "f64"


def _chunk_steps(T: int, B: int, H: int, itemsize: int) -> int:
    return max(1, min(T, CHUNK_BYTES // max(1, B * H * itemsize)))


# --------------------------------------------------------------------------- output buffers


class _StatePool:
    """Recycles the ``(T, B, H)`` output buffers of training steps.

    Why: glibc serves blocks over 32 MB straight from ``mmap`` and unmaps them on free, so a
    fresh output per step pays a page fault per 4 KiB page plus the unmap: about 10 ms for the
    40 MB of a batch-128 sequential-MNIST step on a VM, a third of the whole step. Reusing the
    pages removes that. (Blocks up to 32 MB are recycled by glibc itself.)

    How: each buffer is a numpy array wrapped with ``torch.from_numpy``. Every torch storage
    made that way holds a reference to its array until the storage is freed, so an array whose
    reference count is back to the pool's own is used by no tensor (not the caller's output,
    not autograd's saved copy) and can be handed out again. At most ``max_arrays`` arrays are
    kept. ``IRNN_FUSED_POOL=0`` turns the pool off; :func:`release_buffers` empties it.
    """

    def __init__(self, max_arrays: int = 4):
        self.max_arrays = max_arrays
        self._arrays: list = []
        self._lock = threading.Lock()

    def _unused(self, i: int) -> bool:
        return sys.getrefcount(self._arrays[i]) <= 2  # the pool's list entry + this call's argument

    def empty(self, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= int(d)
        small = n * torch.empty((), dtype=dtype).element_size() < (1 << 20)
        if small or os.environ.get("IRNN_FUSED_POOL", "1").strip() == "0":
            return torch.empty(shape, dtype=dtype)
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        with self._lock:
            free = [i for i in range(len(self._arrays)) if self._arrays[i].dtype == np_dtype and self._unused(i)]
            fits = [i for i in free if self._arrays[i].size >= n]
            if fits:
                arr = self._arrays[min(fits, key=lambda i: self._arrays[i].size)]
            else:
                arr = np.empty(n, dtype=np_dtype)
                if len(self._arrays) < self.max_arrays:
                    self._arrays.append(arr)
                elif free:  # replace the smallest unused array
                    self._arrays[min(free, key=lambda i: self._arrays[i].size)] = arr
                else:
                    return torch.empty(shape, dtype=dtype)
            return torch.from_numpy(arr[:n]).view(shape)

    def release(self) -> None:
        with self._lock:
            self._arrays = []


_pool = _StatePool()


def release_buffers() -> None:
    """Drop the recycled output buffers (their memory is freed once no tensor uses it)."""
    _pool.release()


# --------------------------------------------------------------------------- kernel calls


def _forward(lib, x, h0, w_ih, w_hh, bias, code, param, store, pooled=False):
    """Run the recurrence; returns ``(y or None, h_last)``. All tensors contiguous.

    ``store``: keep every step's output in ``y``; ``pooled``: take ``y`` from the buffer pool.
    """
    global last_forward_stored_steps
    T, B, I = x.shape
    H = w_hh.shape[0]
    fn = getattr(lib, "irnn_forward_" + _suffix(x.dtype))
    threads = torch.get_num_threads()
    y = (_pool.empty((T, B, H), x.dtype) if pooled else x.new_empty((T, B, H))) if store else None
    last_forward_stored_steps = T if store else 0
    if w_ih is None or I <= FUSE_INPUT_MAX:
        h_last = x.new_empty((B, H))
        _check(fn(T, B, H, I, _p(x), _p(w_ih), _p(bias), _p(w_hh), _p(h0), _p(y), _p(h_last), code, param, threads),
               "forward")
        return y, h_last
    # Large input: project one chunk of steps at a time (a torch GEMM with the bias folded in)
    # and run the kernel on the projection, carrying the state between chunks.
    C = _chunk_steps(T, B, H, x.element_size())
    xp_buf = x.new_empty((C * B, H))
    h = h0
    for t0 in range(0, T, C):
        t1 = min(T, t0 + C)
        xp = xp_buf[: (t1 - t0) * B]
        x2 = x[t0:t1].reshape(-1, I)
        if bias is not None:
            torch.addmm(bias, x2, w_ih.t(), out=xp)
        else:
            torch.mm(x2, w_ih.t(), out=xp)
        h_next = x.new_empty((B, H))
        yc = y[t0:t1] if y is not None else None
        _check(fn(t1 - t0, B, H, H, _p(xp), None, None, _p(w_hh), _p(h), _p(yc), _p(h_next), code, param, threads),
               "forward")
        h = h_next
    return y, h


class _FusedElman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, bias, code, param):
        lib = _load()
        y, h_last = _forward(lib, x, h0, w_ih, w_hh, bias, code, param, store=True, pooled=True)
        ctx.set_materialize_grads(False)  # an unused output gets None, not a T x B x H zero tensor
        ctx.code, ctx.param = code, param
        ctx.save_for_backward(x, h0, w_ih, w_hh, y)
        return y, h_last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh):
        x, h0, w_ih, w_hh, y = ctx.saved_tensors
        need_x, need_h0, need_wih, need_whh, need_b = ctx.needs_input_grad[:5]
        lib = _load()
        fn = getattr(lib, "irnn_backward_" + _suffix(y.dtype))
        threads = torch.get_num_threads()
        T, B, H = y.shape
        I = x.shape[2]
        # g carries dL/dh between steps; the kernel overwrites it, ending with dL/dh0.
        g = gh.contiguous().clone() if gh is not None else y.new_zeros((B, H))
        gy = gy.contiguous() if gy is not None else None
        dw_hh = y.new_zeros((H, H)) if need_whh else None
        db = y.new_zeros((H,)) if need_b else None
        dw_ih = y.new_zeros(w_ih.shape) if (need_wih and w_ih is not None) else None
        dx = None

        def call(t0, t1, dpre=None, dx_=None, dw_ih_=None):
            _check(fn(T, B, H, I, t0, t1, _p(y), _p(h0), _p(gy), _p(x), _p(w_ih), _p(w_hh), _p(g), _p(dpre),
                      _p(dx_), _p(dw_hh), _p(dw_ih_), _p(db), ctx.code, ctx.param, threads), "backward")

        if w_ih is None:
            # x is the projection itself, so dL/dx is dL/dz: let the kernel write it there.
            dx = y.new_empty((T, B, H)) if need_x else None
            call(0, T, dpre=dx)
        elif I <= FUSE_INPUT_MAX:
            dx = x.new_empty((T, B, I)) if need_x else None
            call(0, T, dx_=dx, dw_ih_=dw_ih)
        elif need_x or need_wih:
            # Large input: the kernel hands back dL/dz one chunk at a time (latest first) and
            # torch turns each chunk into its share of dx and dW_ih.
            dx = x.new_empty((T, B, I)) if need_x else None
            C = _chunk_steps(T, B, H, y.element_size())
            buf = y.new_empty((C * B, H))
            starts = list(range(0, T, C))
            for t0 in reversed(starts):
                t1 = min(T, t0 + C)
                d = buf[: (t1 - t0) * B]
                call(t0, t1, dpre=d)
                if dw_ih is not None:
                    dw_ih.addmm_(d.t(), x[t0:t1].reshape(-1, I))
                if dx is not None:
                    torch.mm(d, w_ih, out=dx[t0:t1].view(-1, I))
        else:
            call(0, T)
        return dx, (g if need_h0 else None), dw_ih, dw_hh, db, None, None


# --------------------------------------------------------------------------- public entry


def elman_fused(
    x: torch.Tensor,
    h0: torch.Tensor,
    weight_ih: Optional[torch.Tensor],
    weight_hh: torch.Tensor,
    bias: Optional[torch.Tensor],
    activation: Activation,
    return_sequence: bool = True,
) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Same arguments, results and gradients as :func:`elman_reference`, computed by the kernel.

    Inputs may have any strides (they are made contiguous where the kernel needs it). Inputs
    the kernel does not cover (non-CPU tensors, dtypes other than float32/float64, mixed dtypes,
    activations without a kernel code) and a kernel that failed to build go to the reference
    loop instead.

    With autograd recording (grad mode on and some input requiring grad) the outputs ``y`` are
    stored for the backward pass even when ``return_sequence`` is False; otherwise, with
    ``return_sequence=False``, no per-step state is kept at all.
    """
    tensors = [t for t in (x, h0, weight_ih, weight_hh, bias) if t is not None]
    lib = None
    if (
        activation.kernel_code is not None
        and x.dtype in (torch.float32, torch.float64)
        and all(t.device.type == "cpu" and t.dtype == x.dtype for t in tensors)
    ):
        lib = _load()
    if lib is None:
        return elman_reference(x, h0, weight_ih, weight_hh, bias, activation, return_sequence)
    _check_shapes(x, h0, weight_ih, weight_hh, bias)
    code = int(activation.kernel_code)
    param = float(activation.param) if activation.param is not None else 0.0
    x, h0, weight_hh = x.contiguous(), h0.contiguous(), weight_hh.contiguous()
    weight_ih = weight_ih.contiguous() if weight_ih is not None else None
    bias = bias.contiguous() if bias is not None else None
    if x.shape[1] == 0:  # empty batch: nothing to run, keep the autograd graph connected
        return elman_reference(x, h0, weight_ih, weight_hh, bias, activation, return_sequence)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        y, h_last = _FusedElman.apply(x, h0, weight_ih, weight_hh, bias, code, param)
        return (y if return_sequence else None), h_last
    y, h_last = _forward(lib, x, h0, weight_ih, weight_hh, bias, code, param, store=return_sequence)
    return y, h_last


def _check_shapes(x, h0, w_ih, w_hh, bias) -> None:
    if x.dim() != 3 or x.shape[0] == 0:
        raise ValueError(f"elman: x must be a non-empty (T, B, I) sequence, got shape {tuple(x.shape)}")
    T, B, I = x.shape
    H = w_hh.shape[0]
    if w_hh.shape != (H, H):
        raise ValueError(f"elman: weight_hh must be square, got {tuple(w_hh.shape)}")
    if w_ih is None and I != H:
        raise ValueError(f"elman: without weight_ih, x must have size H={H} in its last dimension, got {I}")
    if w_ih is not None and w_ih.shape != (H, I):
        raise ValueError(f"elman: weight_ih must be ({H}, {I}), got {tuple(w_ih.shape)}")
    if h0.shape != (B, H):
        raise ValueError(f"elman: h0 must be ({B}, {H}), got {tuple(h0.shape)}")
    if bias is not None and bias.shape != (H,):
        raise ValueError(f"elman: bias must be ({H},), got {tuple(bias.shape)}")
