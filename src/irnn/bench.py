"""Training-step benchmark of the recurrence engines on the sequential-MNIST shape.

One training step = forward over T steps, Linear(H, 10) + cross-entropy on the last state,
backward, RMSprop update. Engines:

* ``irnn-elu``:   :class:`irnn.IRNN` with ELU (the fused CPU kernel)
* ``irnn-relu``:  :class:`irnn.IRNN` with ReLU (the fused CPU kernel)
* ``nn-rnn-relu``: ``torch.nn.RNN(nonlinearity="relu")`` with the same weights
* ``eager-elu``:  the natural batch-first Python loop ``h = F.elu(xp[:, t] + h @ W)``

Prints one JSON object per (engine, batch) and a final ``summary`` object; ``--out FILE`` writes
the same lines to a file. Usable as a library: :func:`run_benchmark` returns the records.
See benchmarks/README.md for the FLOP formula and how memory is measured.

    irnn bench [--quick] [--out results.jsonl]      (or: python benchmarks/recurrence.py ...)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ENGINES = ("irnn-elu", "irnn-relu", "nn-rnn-relu", "eager-elu")
FAST_ENGINES = ENGINES[:3]


class EagerELU(nn.Module):
    """The loop one writes without a fused kernel: batch-first, one autograd op chain per step."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size))  # h @ weight (= W_hh^T)
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = x @ self.weight_ih.t() + self.bias
        h = x.new_zeros(x.shape[0], self.weight.shape[0])
        for t in range(x.shape[1]):
            h = F.elu(xp[:, t] + h @ self.weight)
        return h


class Classifier(nn.Module):
    """Recurrent engine + Linear(H, 10) on the final state."""

    def __init__(self, engine: str, input_size: int, hidden: int, seed: int = 0):
        super().__init__()
        import irnn

        torch.manual_seed(seed)
        self.engine = engine
        act = "elu" if "elu" in engine else "relu"
        template = irnn.IRNN(input_size, hidden, activation=act, batch_first=True)  # identity init
        if engine.startswith("irnn"):
            self.rnn = template
        elif engine == "nn-rnn-relu":
            self.rnn = nn.RNN(input_size, hidden, nonlinearity="relu", batch_first=True)
            self.rnn.load_state_dict(template.state_dict())
        elif engine == "eager-elu":
            self.rnn = EagerELU(input_size, hidden)
            with torch.no_grad():
                self.rnn.weight_ih.copy_(template.weight_ih_l0)
                self.rnn.weight.copy_(template.weight_hh_l0.t())
        else:
            raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine.startswith("irnn"):
            h = self.rnn.final_state(x)[-1]
        elif self.engine == "nn-rnn-relu":
            h = self.rnn(x)[1][-1]
        else:
            h = self.rnn(x)
        return self.head(h)


def make_step(engine: str, batch: int, seq_len: int, hidden: int, input_size: int = 1,
              seed: int = 0) -> Callable[[], float]:
    """A closure running one full training step on fixed data; returns the loss."""
    model = Classifier(engine, input_size, hidden, seed)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-6)  # tiny: keep weights near the init
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, seq_len, input_size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def step_flops(batch: int, seq_len: int, hidden: int, input_size: int = 1) -> int:
    """FLOPs of one training step's recurrence (see README): 6 T B H^2 + 4 T B H I."""
    return 6 * seq_len * batch * hidden * hidden + 4 * seq_len * batch * hidden * input_size


def measure_sgemm(n: int = 4096, repeats: int = 3) -> float:
    """Median GFLOP/s of an n x n float32 torch.mm at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def _status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _measure_memory_here(engine: str, batch: int, seq_len: int, hidden: int) -> Dict[str, object]:
    """Peak-RSS growth of ONE training step in this (fresh) process, after all set-up.

    On Linux the peak-RSS mark is reset to the current RSS first (``/proc/self/clear_refs``),
    so the growth is the step's own; elsewhere ``ru_maxrss`` is used, which can under-report
    when set-up had a higher transient peak.
    """
    step = make_step(engine, batch, seq_len, hidden)
    # Warm up everything that is not the step: thread pools, the kernel library, lazy imports.
    torch.mm(torch.randn(64, 64), torch.randn(64, 64))
    make_step(engine, 2, 3, hidden)()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM"
    except OSError:
        method = "ru_maxrss"
    if method == "VmHWM":
        base = _status_kib("VmRSS")
        step()
        peak = _status_kib("VmHWM")
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_growth_bytes": (peak - base) * 1024, "rss_method": method}


def measure_memory(engine: str, batch: int, seq_len: int, hidden: int, threads: int) -> Dict[str, int]:
    """Run :func:`_measure_memory_here` in a fresh interpreter (peak RSS is per process)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(__import__("irnn").__file__)),
                                                    env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "irnn.bench", "--_memory", engine, str(batch), str(seq_len), str(hidden),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class OtherLoad:
    """CPU time other processes used while the block ran, in cores (Linux; None elsewhere).

    The machine-wide busy time from /proc/stat minus this process's own CPU time, over the
    wall time: 0 on an idle machine, 1.0 when another process kept one core busy throughout.
    """

    def _busy_s(self) -> Optional[float]:
        try:
            with open("/proc/stat") as f:
                v = [int(t) for t in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(v[:3]) + sum(v[5:8])) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _self_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def __enter__(self):
        self.cores = None
        self._t, self._busy, self._self = time.perf_counter(), self._busy_s(), self._self_s()
        return self

    def __exit__(self, *exc):
        busy = self._busy_s()
        if busy is not None and self._busy is not None:
            wall = time.perf_counter() - self._t
            self.cores = round(max(0.0, (busy - self._busy) - (self._self_s() - self._self)) / wall, 2)


def _time_budget(step: Callable[[], float], max_repeats: int, budget_s: float = 3.0) -> List[float]:
    """At least one timed step, more (up to max_repeats) while they fit in budget_s; no warm-up.

    For the eager loop, whose steps take from a fraction of a second (batch 32) to tens of
    seconds (batch 128: ``xp[:, t]``'s backward zero-fills a full T x B x H tensor every step).
    """
    times: List[float] = []
    while not times or (len(times) < max_repeats and sum(times) + times[-1] < budget_s):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _time_rounds(steps: Dict[str, Callable[[], float]], repeats: int, warmup: int) -> Dict[str, List[float]]:
    """Interleave the engines round by round so that drifting machine load hits all alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def run_benchmark(
    batches: Sequence[int] = (32, 128),
    seq_len: int = 784,
    hidden: int = 100,
    engines: Sequence[str] = ENGINES,
    threads: Optional[int] = None,
    repeats: int = 15,
    eager_repeats: int = 3,
    quick: bool = False,
    memory: bool = True,
    memory_batch: int = 128,
    out: Optional[str] = None,
    emit: Callable[[str], None] = print,
) -> List[dict]:
    """Time the engines and return one record per (engine, batch) plus a summary record.

    Args:
        batches, seq_len, hidden: problem shape (input size is 1, float32).
        engines: subset of :data:`ENGINES`.
        threads: torch thread count (default: torch's current setting).
        repeats: timed steps per fast engine, after 2 warm-up steps (median reported).
        eager_repeats: at most this many eager steps, as many as fit in ~3 s (at least one).
        quick: fewer repeats (5, eager 1) for a fast look.
        memory: also measure the peak RSS growth of one step at ``memory_batch`` (subprocesses).
        out: also write the JSON lines to this file.
        emit: called with each JSON line as it is produced.
    """
    import irnn.kernels.fused as fused

    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    if quick:
        repeats, eager_repeats = min(repeats, 5), 1
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES)}")
    fused_ok = fused.fused_available()
    sgemm = measure_sgemm()
    records: List[dict] = []
    lines: List[str] = []

    def put(rec: dict) -> None:
        line = json.dumps(rec)
        lines.append(line)
        emit(line)

    for batch in batches:
        fast = {e: make_step(e, batch, seq_len, hidden) for e in engines if e in FAST_ENGINES}
        with OtherLoad() as load:
            times = _time_rounds(fast, repeats, warmup=2)
        if "eager-elu" in engines:
            times["eager-elu"] = _time_budget(make_step("eager-elu", batch, seq_len, hidden), eager_repeats)
        med = {e: statistics.median(ts) for e, ts in times.items()}
        flops = step_flops(batch, seq_len, hidden)
        for e in engines:
            rec = {
                "config": f"{e}/B{batch}",
                "engine": e,
                "batch": batch,
                "seq_len": seq_len,
                "hidden": hidden,
                "input": 1,
                "dtype": "float32",
                "ms_per_step": round(med[e] * 1e3, 3),
                "ms_all": [round(t * 1e3, 2) for t in times[e]],
                "seq_steps_per_s": round(batch * seq_len / med[e]),
                "implied_gflops": round(flops / med[e] / 1e9, 1),
                "sgemm_gflops": round(sgemm, 1),
                "speedup_vs_nn_rnn_relu": round(med["nn-rnn-relu"] / med[e], 2) if "nn-rnn-relu" in med else None,
                "speedup_vs_eager_elu": round(med["eager-elu"] / med[e], 2) if "eager-elu" in med else None,
                "threads": threads,
                "torch": torch.__version__,
                "fused_kernel": fused_ok if e.startswith("irnn") else None,
                # cores' worth of CPU other processes used while the fast engines were timed
                "other_load_cores": load.cores,
            }
            if memory and batch == memory_batch and e != "eager-elu":
                stored = seq_len * batch * hidden * 4  # the T x B x H float32 states training keeps
                mem = measure_memory(e, batch, seq_len, hidden, threads)
                rss = mem["rss_growth_bytes"]
                rec.update(stored_state_bytes=stored, rss_growth_bytes=rss, rss_ratio_to_stored=round(rss / stored, 3),
                           rss_method=mem["rss_method"])
            records.append(rec)
            put(rec)

    summary = {"config": "summary", "threads": threads, "torch": torch.__version__, "sgemm_gflops": round(sgemm, 1)}
    by = {(r["engine"], r["batch"]): r for r in records}
    for batch in batches:
        elu, ref = by.get(("irnn-elu", batch)), by.get(("nn-rnn-relu", batch))
        if elu and ref:
            summary[f"elu_speedup_vs_nn_rnn_B{batch}"] = elu["speedup_vs_nn_rnn_relu"]
            summary[f"target_3x_B{batch}"] = elu["speedup_vs_nn_rnn_relu"] >= 3.0
    elu128 = by.get(("irnn-elu", 128))
    if elu128:
        summary["target_100_gflops_B128"] = elu128["implied_gflops"] >= 100.0
        if "rss_ratio_to_stored" in elu128:
            summary["target_memory_2x_B128"] = elu128["rss_ratio_to_stored"] <= 2.0
    put(summary)
    records.append(summary)
    if out:
        with open(out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return records


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (shared by ``irnn bench`` and ``python -m irnn.bench``)."""
    p.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    p.add_argument("--seq-len", type=int, default=784)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--eager-repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="5 repeats, 1 eager step")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--out", default=None, help="also write the JSON lines here")
    p.add_argument("--_memory", nargs=4, metavar=("ENGINE", "B", "T", "H"), help=argparse.SUPPRESS)
    return p


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark as the parsed options say."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args._memory:
        engine, b, t, h = args._memory
        print(json.dumps(_measure_memory_here(engine, int(b), int(t), int(h))))
        return 0
    run_benchmark(args.batch, args.seq_len, args.hidden, args.engines, args.threads, args.repeats, args.eager_repeats,
                  args.quick, not args.no_memory, out=args.out)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_from_args(add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
