"""The training loop: one function, :func:`train`, for every task.

A run lives in its own directory::

    RUN_DIR/config.json     every setting, resolved values, library versions
    RUN_DIR/metrics.jsonl   one JSON object per finished epoch
    RUN_DIR/checkpoint.pt   everything needed to continue after the last finished epoch
    RUN_DIR/best.pt         model weights at the best validation score

The checkpoint is written (atomically) before ``metrics.jsonl`` is rewritten from it, so the two
always agree, and a run killed at any moment resumes from its last finished epoch to exactly the
result an uninterrupted run gets (same seed, same thread count): the checkpoint carries the
model, optimizer, schedule, data-order generator and global RNG states.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..data.tasks import Task, make_task
from ..errors import ConfigError, RunDirError, TrainingDiverged
from .checkpoint import atomic_write_bytes, atomic_write_json, load_checkpoint, save_checkpoint
from .config import RESUMABLE_DIFFERENCES, TrainConfig
from .optim import make_optimizer, make_scheduler, set_lr

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, BEST_FILE = "config.json", "metrics.jsonl", "checkpoint.pt", "best.pt"


def read_run_config(run_dir: Path) -> Optional[TrainConfig]:
    """The :class:`TrainConfig` saved in ``run_dir``, or None if there is none."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return TrainConfig.from_dict(saved["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RunDirError(f"{path} is not an irnn run config ({exc}); choose another --out") from exc


def read_metrics(run_dir: Path) -> List[Dict]:
    """The per-epoch records of a run (empty list if it has none yet)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(config: TrainConfig, out_dir, *, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> List[Dict]:
    """Train ``config`` into ``out_dir`` (or continue it with ``resume=True``); return the epoch records."""
    config.validate()
    out = Path(out_dir)
    _check_run_dir(out, config, resume)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    device = torch.device(config.device)

    torch.manual_seed(config.seed)
    task = make_task(config)
    data = task.load()
    model = task.make_model().to(device)
    optimizer = make_optimizer(config, model.parameters(), model=model)
    scheduler = make_scheduler(config, optimizer, task.higher_is_better)
    order_gen = torch.Generator().manual_seed(config.seed)
    from ..diagnostics import training_diagnostics  # late import: diagnostics read run directories

    diagnose = training_diagnostics(config, task, data, out, log)  # None without --diagnose-at
    history: List[Dict] = []
    rollbacks = 0
    best = None

    ckpt_path = out / CHECKPOINT_FILE

    def snapshot() -> Dict:
        """Everything a resumed or rolled-back run needs to continue exactly."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "order_gen": order_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "history": history, "rollbacks": rollbacks, "best": best, "config": config.to_dict()}

    def restore(state: Dict) -> None:
        """Put model, optimizer, schedule and RNGs back as a checkpoint holds them."""
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        order_gen.set_state(state["order_gen"])
        torch.set_rng_state(state["torch_rng"])

    if resume:
        state = load_checkpoint(ckpt_path)
        restore(state)
        history, rollbacks, best = state["history"], state["rollbacks"], state["best"]
        log(f"resuming {out} after epoch {len(history)}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CONFIG_FILE, _config_record(config, task, data.info, model))
        _write_metrics(out, history)
        save_checkpoint(ckpt_path, snapshot())  # the state a rollback in epoch 1 returns to

    writer = _tensorboard_writer(out) if config.tensorboard else None
    start_epoch = len(history) + 1
    if start_epoch > config.epochs:
        log(f"{out}: all {config.epochs} epochs already done")
    log(f"{task.name}: {config.model} {_model_label(config)} h={config.hidden}x{config.layers}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(data.train[0]):,} train / "
        f"{len(data.val[0]):,} val / {len(data.test[0]):,} test {task.unit}, {torch.get_num_threads()} threads")
    run_start = time.time()
    epoch = start_epoch
    while epoch <= config.epochs:
        t0 = time.time()
        stats = _train_epoch(task, model, optimizer, data.train, config, order_gen, device,
                             desc=f"epoch {epoch}/{config.epochs}", progress=progress)
        if stats is None:  # non-finite loss: go back to the last good state with a lower rate
            rollbacks += 1
            if rollbacks > config.max_rollbacks:
                raise TrainingDiverged(
                    f"loss became non-finite in epoch {epoch} again after {config.max_rollbacks} rollback(s); "
                    f"epochs 1-{epoch - 1} are kept in {out}; try a lower --lr or a tighter --clip")
            failed_lr = optimizer.param_groups[0]["lr"]
            restore(load_checkpoint(ckpt_path))
            # Start from the rate that just failed, not the checkpoint's: a second rollback to the
            # same checkpoint would otherwise replay the same batches at the same rate and fail alike.
            new_lr = set_lr(optimizer, factor=config.lr_factor * min(1.0, failed_lr / optimizer.param_groups[0]["lr"]))
            log(f"epoch {epoch}: non-finite loss; rolled back to the end of epoch {epoch - 1} "
                f"and lowered the learning rate to {new_lr:.3g} (rollback {rollbacks}/{config.max_rollbacks})")
            continue
        train_seconds = time.time() - t0
        record = {"epoch": epoch, "train_loss": stats["loss"], f"train_{task.metric}": stats["metric"]}
        for split_name, split in (("val", data.val), ("test", data.test)):
            loss, metric = evaluate(task, model, split, config.eval_batch_size, device)
            record[f"{split_name}_loss"], record[f"{split_name}_{task.metric}"] = loss, metric
        record["lr"] = optimizer.param_groups[0]["lr"]
        val_metric = record[f"val_{task.metric}"]
        scheduler.step(val_metric if math.isfinite(val_metric) else (-math.inf if task.higher_is_better else math.inf))
        record.update(grad_norm=stats["grad_norm"], grad_norm_max=stats["grad_norm_max"],
                      seconds=time.time() - t0, train_seconds=train_seconds,
                      rollbacks=rollbacks, **{f"{task.unit}_per_sec": stats["items"] / max(train_seconds, 1e-9)})
        history.append(record)
        improved = best is None or (val_metric > best if task.higher_is_better else val_metric < best)
        if improved:
            best = val_metric
            buf = _state_bytes(model)
            atomic_write_bytes(out / BEST_FILE, buf)
        if diagnose is not None:  # before the checkpoint: a run killed in between redoes both
            diagnose(epoch, model)
        save_checkpoint(ckpt_path, snapshot())
        _write_metrics(out, history)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, epoch)
            writer.flush()
        done = epoch - start_epoch + 1
        eta = (time.time() - run_start) / done * (config.epochs - epoch)
        log(_epoch_line(task, record, config.epochs, eta))
        epoch += 1
    if writer is not None:
        writer.close()
    return history


def evaluate(task: Task, model: torch.nn.Module, split, batch_size: Optional[int], device) -> tuple:
    """Mean loss and metric of ``model`` on ``split`` (no gradients, no per-step storage).

    ``batch_size`` None means the task's default (``--eval-batch-size`` left unset)."""
    batch_size = batch_size or task.default_eval_batch_size
    model.eval()
    loss_sum, metric_sum, count, items = 0.0, 0.0, 0, 0
    state = None
    with torch.no_grad():
        for x, y in task.eval_batches(split, batch_size):
            x, y = x.to(device), y.to(device)
            output, state = task.forward(model, x, state)
            n = task.batch_items(x)
            loss_sum += float(task.loss(output, y)) * n
            m, c = task.metric_sum(output, y)
            metric_sum, count, items = metric_sum + m, count + c, items + n
    return loss_sum / max(items, 1), task.metric_value(metric_sum, count)


def _train_epoch(task, model, optimizer, split, config, order_gen, device, desc, progress) -> Optional[Dict]:
    """One pass over the training split; None if the loss turned non-finite."""
    model.train()
    n_total = len(split[0])
    loss_sum, metric_sum, count, items = 0.0, 0.0, 0, 0
    norms = []
    max_norm = config.clip if config.clip > 0 else math.inf
    bar = tqdm(total=n_total, desc=desc, unit=task.unit, leave=False, disable=not progress or None, dynamic_ncols=True)
    state = None
    try:
        for x, y in task.train_batches(split, config.batch_size, order_gen):
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            output, state = task.forward(model, x, _detach(state))
            loss = task.loss(output, y)
            if not torch.isfinite(loss):
                return None
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            if not math.isfinite(norm):
                return None
            optimizer.step()
            n = task.batch_items(x)
            norms.append(norm)
            loss_sum += loss.item() * n
            m, c = task.metric_sum(output.detach(), y)
            metric_sum, count, items = metric_sum + m, count + c, items + n
            bar.update(n)
            bar.set_postfix(loss=f"{loss_sum / items:.4f}",
                            **{task.metric: task.format_metric(task.metric_value(metric_sum, count))})
    finally:
        bar.close()
    return {"loss": loss_sum / items, "metric": task.metric_value(metric_sum, count),
            "grad_norm": float(np.mean(norms)), "grad_norm_max": float(np.max(norms)), "items": items}


def _detach(state):
    """Cut the graph between batches (truncated BPTT); states may be tensors or tuples of them."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


def _check_run_dir(out: Path, config: TrainConfig, resume: bool) -> None:
    saved = read_run_config(out)
    if not resume:
        if saved is not None:
            raise RunDirError(f"{out} already holds a run; add --resume to continue it or choose another --out")
        return
    if saved is None:
        raise RunDirError(f"{out} holds no run to resume (no {CONFIG_FILE}); drop --resume to start one")
    mine, theirs = config.to_dict(), saved.to_dict()
    diffs = [f"{k}={theirs[k]!r} there, {mine[k]!r} here" for k in mine
             if k not in RESUMABLE_DIFFERENCES and mine[k] != theirs[k]]
    if diffs:
        raise RunDirError(f"{out} holds a run with other settings ({'; '.join(diffs)}); "
                          "choose another --out or resume with the same settings")


def _config_record(config: TrainConfig, task: Task, info: Dict, model) -> Dict:
    from ..kernels import resolve_backend
    from ..models.activations import get_activation

    act = get_activation(config.act, config.act_param)
    probe = torch.zeros(1, 1, 1, device=config.device)
    return {
        "config": config.to_dict(),
        "resolved": {
            "task": task.name, "metric": task.metric, "higher_is_better": task.higher_is_better,
            "thresholds": list(task.thresholds),
            "activation": act.describe(), "threads": torch.get_num_threads(),
            "recurrence_backend": resolve_backend(probe, act) if config.model == "irnn" else "torch",
            "parameters": sum(p.numel() for p in model.parameters()),
            # Where the data came from, without the home folder: run records travel between machines.
            **{k: v.replace(str(Path.home()), "~") if isinstance(v, str) else v for k, v in info.items()},
        },
        "versions": {"irnn": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        # The program's name, not its path: run records travel between machines.
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _write_metrics(out: Path, history: List[Dict]) -> None:
    atomic_write_bytes(out / METRICS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history).encode())


def _state_bytes(model) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def _tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc
    return SummaryWriter(str(out / "tensorboard"))


def _model_label(config: TrainConfig) -> str:
    return config.act if config.model == "irnn" else ""


def _epoch_line(task: Task, r: Dict, epochs: int, eta: float) -> str:
    m = task.metric
    return (f"epoch {r['epoch']}/{epochs}  loss {r['train_loss']:.4f}  train {task.format_metric(r[f'train_{m}'])}  "
            f"val {task.format_metric(r[f'val_{m}'])}  test {task.format_metric(r[f'test_{m}'])}  "
            f"lr {r['lr']:.3g}  |g| {r['grad_norm']:.3g}  {r['seconds']:.1f}s ({r[f'{task.unit}_per_sec']:.0f} {task.unit}/s)  "
            f"ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
