"""Running a sweep: skip finished runs, resume unfinished ones, on local cores or a Ray cluster.

Every run trains through :func:`irnn.train.train` in its own run directory, so a sweep inherits
the trainer's guarantees: after each epoch the checkpoint and ``metrics.jsonl`` are written
atomically, and a resumed run continues bit-identically from its last finished epoch. Starting
the same sweep again therefore skips runs that have all their epochs, resumes the others (with
the settings saved in their ``config.json``, thread count included), and starts the rest; a
killed sweep loses at most the epochs that were in progress. Raising ``epochs`` in the spec and
starting it again extends finished runs.

Backends:

* **local** (default): one worker process per run, at most ``workers`` at a time. With no
  ``threads`` in the spec, the cores are shared out: ``workers`` defaults to
  ``min(runs to do, cores)`` and each run gets ``cores // workers`` threads, its workers pinned to
  their own cores (Linux) so runs do not fight over them. Each worker dies with the sweep (Linux),
  so a killed sweep leaves nothing running. A run's output goes to ``RUN_DIR/train.log``.
* **Ray** (``ray="auto"`` or an address): every run is a Ray task asking for ``threads`` CPUs
  (default 1) and one GPU when ``device = "cuda"``. The tasks write their run directories
  themselves, so ``out`` must be on storage every node mounts at the same path (NFS or similar);
  the driver warns if it cannot see a finished run's files. Every node needs irnn installed in
  the Python environment Ray runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import ConfigError, IrnnError, RunDirError
from ..report.runs import experiment_settings, load_run
from ..report.tables import format_value, summarize_run
from ..train.checkpoint import atomic_write_json
from ..train.config import RESUMABLE_DIFFERENCES, TrainConfig
from ..train.loop import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, read_metrics, read_run_config, train
from .spec import PlannedRun, SweepSpec, describe_spec

LOG_FILE = "train.log"
LOCK_FILE = ".lock"
POLL_SECONDS = 0.2


@dataclass
class Outcome:
    """How one run of a sweep ended."""

    name: str
    path: str
    ok: bool
    epochs: int
    message: str  # a result line, or why it failed


# ------------------------------------------------------------------------------------ one run
def run_one(config: Dict, run_dir: str) -> Outcome:
    """Train the run in ``run_dir`` to ``config["epochs"]``: start it, resume it, or do nothing if done.

    Idempotent, so a backend may call it again for a run that was interrupted. A run that is
    already there keeps its saved settings (its thread count too, for a bit-identical resume);
    only the options that may change on resume (``RESUMABLE_DIFFERENCES``: ``epochs``,
    ``data_dir``, ...) come from ``config``. Problems the user can fix raise
    :class:`~irnn.errors.IrnnError`.
    """
    wanted = TrainConfig.from_dict(config)
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    with _exclusive(path), open(path / LOG_FILE, "a", buffering=1) as log_file:
        saved = read_run_config(path)
        if saved is not None and not (path / CHECKPOINT_FILE).exists() and not read_metrics(path):
            # Killed between writing its config and its first checkpoint: nothing to keep.
            (path / CONFIG_FILE).unlink()
            (path / METRICS_FILE).unlink(missing_ok=True)
            saved = None
        if saved is not None:
            wanted = saved.replace(**{k: getattr(wanted, k) for k in RESUMABLE_DIFFERENCES})
        done = len(read_metrics(path))
        if done < wanted.epochs:
            log_file.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if saved else 'start'} "
                           f"(pid {os.getpid()}, {platform.node()})\n")
            train(wanted, path, resume=saved is not None, progress=False, log=lambda line: log_file.write(line + "\n"))
    return _outcome(path)


def _outcome(path: Path) -> Outcome:
    """Read back a finished run's result line from its files."""
    run = load_run(path)
    summary = summarize_run(run)
    m = run.metric
    if not summary["epochs"]:
        return Outcome(path.name, str(path), False, 0, "no epoch finished")
    value = format_value(m, summary[f"test_{m}_at_best_val"]) + ("%" if m == "acc" else "")
    return Outcome(path.name, str(path), True, summary["epochs"],
                   f"{summary['epochs']} epochs, test {m} {value} at the best validation epoch")


@contextlib.contextmanager
def _exclusive(path: Path):
    """Hold a lock on the run directory, so two sweeps never train the same run at once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(path / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunDirError(f"{path} is being trained by another process; wait for it or stop it") from None
        yield


# ------------------------------------------------------------------------------------ the sweep
def sweep_status(runs: List[PlannedRun]) -> Dict[str, int]:
    """Finished epochs of each run that has a directory; refuses a directory holding another run.

    Called before any run starts, so a spec that changed under existing runs is caught first.
    """
    done = {}
    for run in runs:
        saved = read_run_config(run.path)
        if saved is None:
            continue
        mine, theirs = experiment_settings(run.config.to_dict()), experiment_settings(saved.to_dict())
        diffs = [f"{k}={theirs.get(k)!r} there, {mine.get(k)!r} in the spec" for k in sorted(set(mine) | set(theirs))
                 if k not in RESUMABLE_DIFFERENCES and mine.get(k) != theirs.get(k)]
        if diffs:
            raise RunDirError(f"{run.path} holds a run with other settings ({'; '.join(diffs)}); "
                              "move it away or give the sweep another out")
        done[run.name] = len(read_metrics(run.path))
    return done


def run_sweep(spec: SweepSpec, *, workers: Optional[int] = None, ray: Optional[str] = None,
              dry_run: bool = False, log: Callable[[str], None] = print) -> List[Outcome]:
    """Run every run of ``spec`` that is not finished; return the outcomes of those it ran.

    Raises :class:`IrnnError` if the spec is bad (before anything runs) or if any run failed
    (after all the others ran).
    """
    runs = spec.runs()
    done = sweep_status(runs)
    todo = [r for r in runs if done.get(r.name, 0) < r.config.epochs]
    threads = spec.base.get("threads")
    if ray:
        threads, workers = threads or 1, None
    else:
        workers, threads = local_shares(len(todo), threads, workers, len(available_cpus()))
    resumed = sum(1 for r in todo if r.name in done)
    where = f"Ray cluster {ray}, {threads} CPU(s) per run" if ray else f"{workers} at a time, {threads} thread(s) each"
    log(f"sweep {spec.name}: {len(runs)} runs in {spec.out}: {len(runs) - len(todo)} finished, {resumed} to resume, "
        f"{len(todo) - resumed} to start ({where})")
    if dry_run:
        for r in runs:
            state = "new" if r.name not in done else f"{done[r.name]}/{r.config.epochs} epochs"
            log(f"  {r.name}  [{state}]")
        return []
    if not todo:
        return []
    spec.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec.out / "sweep.json", describe_spec(spec))
    # New runs get their thread share; resumed ones keep the count saved with them (see run_one).
    jobs = [(r, _resolved(r.config, threads)) for r in todo]
    outcomes = _run_ray(jobs, ray, log) if ray else _run_local(jobs, workers, threads, log)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise IrnnError(f"{len(failed)} of {len(outcomes)} runs failed ({', '.join(o.name for o in failed)}); "
                        f"see their {LOG_FILE}, then start the sweep again to retry them")
    return outcomes


def _resolved(config: TrainConfig, threads: int) -> Dict:
    """The config a worker gets: thread share filled in, data folder absolute (workers may cd)."""
    changes = {"threads": config.threads or threads}
    if config.data_dir:
        changes["data_dir"] = str(Path(config.data_dir).expanduser().resolve())
    return config.replace(**changes).to_dict()


def available_cpus() -> List[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def local_shares(n_runs: int, threads: Optional[int], workers: Optional[int], cores: int):
    """``(workers, threads per run)`` for the local backend: the cores shared out, none idle if avoidable."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be a positive integer (got {workers})")
    if threads:
        workers = workers or max(1, cores // threads)
    else:
        workers = workers or max(1, min(n_runs, cores))
        threads = max(1, cores // workers)
    return max(1, min(workers, n_runs)), threads


# ------------------------------------------------------------------------------------ local backend
def _run_local(jobs, workers: int, threads: int, log) -> List[Outcome]:
    """At most ``workers`` worker processes at a time, each pinned to its own ``threads`` cores."""
    cpus = available_cpus()
    pin = workers * threads <= len(cpus)
    free_slots = list(range(workers))
    pending, running, outcomes = deque(jobs), {}, []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        while pending or running:
            while pending and free_slots:
                slot = free_slots.pop(0)
                run, config = pending.popleft()
                run.path.mkdir(parents=True, exist_ok=True)
                job = {"config": config, "run_dir": str(run.path), "parent": os.getpid(),
                       "cpus": cpus[slot * threads:(slot + 1) * threads] if pin else None}
                with open(run.path / LOG_FILE, "ab") as out:
                    proc = subprocess.Popen([sys.executable, "-m", "irnn.sweep.worker", json.dumps(job)],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                running[proc] = (run, slot)
                log(f"  started {run.name}")
            time.sleep(POLL_SECONDS)
            for proc in [p for p in running if p.poll() is not None]:
                run, slot = running.pop(proc)
                free_slots.append(slot)
                free_slots.sort()
                outcome = _outcome(run.path) if proc.returncode == 0 else Outcome(
                    run.name, str(run.path), False, len(read_metrics(run.path)), _last_line(run.path / LOG_FILE))
                outcomes.append(outcome)
                _log_outcome(log, outcome, len(outcomes), len(jobs))
    finally:
        for proc in running:  # interrupted: stop the workers; their finished epochs are on disk
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return outcomes


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    return lines[-1].strip() if lines else "the worker exited without a message"


def _log_outcome(log, outcome: Outcome, k: int, n: int) -> None:
    status = outcome.message if outcome.ok else f"FAILED: {outcome.message}"
    log(f"[{k}/{n}] {outcome.name}: {status}")


# ------------------------------------------------------------------------------------ Ray backend
def _ray_task(config: Dict, run_dir: str) -> Outcome:
    """What each Ray task runs: :func:`run_one`, with user-fixable problems returned, not raised."""
    try:
        return run_one(config, run_dir)
    except IrnnError as exc:
        return Outcome(Path(run_dir).name, run_dir, False, len(read_metrics(Path(run_dir))), str(exc))


def _probe(address: str, how_to: str) -> None:
    """Fail fast on a HOST:PORT nobody listens on (Ray itself retries for minutes before giving up)."""
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); {how_to}") from None


def _run_ray(jobs, address: str, log) -> List[Outcome]:
    """One Ray task per run, each asking for its ``threads`` CPUs (and a GPU for ``device = "cuda"``)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray package: pip install 'irnn[ray]'") from None
    connected_here = not ray.is_initialized()
    if connected_here:
        how_to = "start one with `ray start --head` (see docs/experiments.md)"
        _probe(address, how_to)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except Exception as exc:  # Ray raises many types here (ConnectionError, RpcError, ValueError, ...)
            raise ConfigError(f"cannot reach a Ray cluster at {address!r} ({exc}); {how_to}") from None
    remote = ray.remote(_ray_task)
    refs = {}
    try:
        for run, config in jobs:
            gpus = 1 if config["device"] == "cuda" else 0
            ref = remote.options(num_cpus=config["threads"], num_gpus=gpus).remote(config, str(run.path.resolve()))
            refs[ref] = run
        outcomes = []
        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            run = refs.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # a crash inside the task: Ray wraps it, with its traceback
                outcome = Outcome(run.name, str(run.path), False, 0, str(exc).strip().splitlines()[-1])
            outcomes.append(outcome)
            _log_outcome(log, outcome, len(outcomes), len(jobs))
            if outcome.ok and not (run.path / METRICS_FILE).exists():
                log(f"  warning: {run.name} finished on another node, but {run.path} is not visible here; "
                    "put the sweep's out folder on storage all nodes share")
        return outcomes
    finally:
        for ref in refs:  # interrupted: cancel what is left (its finished epochs are kept)
            ray.cancel(ref, force=True)
        if connected_here:
            ray.shutdown()
