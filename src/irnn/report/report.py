"""``irnn report``: a Markdown file and a self-contained HTML page summarising runs over seeds.

For each task (a task at one sequence length is its own section) the report has

* a table, one row per setting (runs that differ only in ``seed``), of mean +- standard deviation
  over seeds: the final test metric, the test metric at the best-validation epoch (the honest
  score: the model is chosen without looking at the test set), the best test metric (optimistic:
  chosen on the test set), and epochs and wall time to reach the task's thresholds (over the
  seeds that reached them, with their count when not all did);
* learning curves, the mean over seeds with a band from the lowest to the highest seed;
* for each pair of settings that differ in exactly one option (``act=elu`` vs ``act=relu``), the
  difference of their mean honest scores with a 95% Welch t confidence interval (n/a with fewer
  than two seeds on a side);
* where two or more settings have diagnostics records, those settings compared over seeds (a table
  and a figure of dead units and gradient norm per step at each diagnosed epoch);
* the gradient-flow figures of ``irnn diagnose`` where a run has them (``RUN_DIR/diagnostics``),
  for the lowest seed of each setting (the others are in their run directories).

Figures are written as PNG files under ``DIR/figures`` for the Markdown, and embedded (base64)
in ``report.html``, which therefore stands alone. The same runs give the same ``report.md``,
byte for byte: nothing in it depends on the clock, the order of the command-line paths or the
machine (run directories are shown relative to the report folder).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .plots import plot_runs
from .runs import Run, differing_settings, experiment_settings, load_runs, run_label
from .stats import mean_std, welch_interval
from .tables import baseline_lines, default_thresholds, summarize_run

REPORT_MD, REPORT_HTML, FIGURES = "report.md", "report.html", "figures"
DIAGNOSTICS_DIR = "diagnostics"


# ------------------------------------------------------------------------------------ numbers
def format_metric(metric: str, value: float) -> str:
    """A metric value in the report: accuracy in percent (2 decimals), others to 4 significant digits."""
    return f"{100 * value:.2f}" if metric == "acc" else f"{value:.4g}"


def format_count(value: float) -> str:
    """Epochs (a mean may be fractional: one decimal) and seconds (whole)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def format_spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``mean ± std`` over seeds, each formatted by ``fmt`` (just the mean for a single seed)."""
    mean, std = mean_std(values)
    return fmt(mean) + ("" if std is None else f" ± {fmt(std)}")


@dataclass
class Setting:
    """The runs of one setting (they differ only in seed), with their per-run summaries."""

    label: str
    settings: Dict  # experiment settings, seed left out
    runs: List[Run]
    summaries: List[Dict] = field(default_factory=list)

    def values(self, key: str) -> List[float]:
        """``key`` of every run's summary that has it (not None)."""
        return [s[key] for s in self.summaries if s.get(key) is not None]


@dataclass
class Section:
    """One task (at one sequence length): its settings, metric and thresholds."""

    title: str
    slug: str
    runs: List[Run]
    settings: List[Setting]
    metric: str
    higher_is_better: bool
    thresholds: Tuple[float, ...]


def build_sections(runs: Sequence[Run]) -> List[Section]:
    """Split runs into task sections and settings, in a fixed order (task, length, label, seed)."""
    by_task: Dict[Tuple, List[Run]] = defaultdict(list)
    for run in runs:
        by_task[(run.config.get("task", "?"), _seq_len(run))].append(run)
    sections = []
    for (task, seq_len), members in sorted(by_task.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        members = sorted(members, key=lambda r: (json.dumps(experiment_settings(r.config), sort_keys=True), str(r.path)))
        keys = [k for k in differing_settings(members) if k != "seed"]
        groups: Dict[str, List[Run]] = defaultdict(list)
        for run in members:
            groups[json.dumps(_without_seed(run), sort_keys=True)].append(run)
        first = members[0]
        thresholds = tuple(default_thresholds(first))
        settings = []
        for group in groups.values():
            group.sort(key=lambda r: (r.config.get("seed", 0), str(r.path)))
            label = run_label(group[0], keys) if keys else "all runs"
            setting = Setting(label, _without_seed(group[0]), group)
            setting.summaries = [summarize_run(r, thresholds) for r in group]
            settings.append(setting)
        settings.sort(key=lambda s: s.label)
        title = task + (f" (T={seq_len})" if seq_len else "")
        sections.append(Section(title, _slug(title), members, settings, first.metric, first.higher_is_better,
                                thresholds))
    return sections


def settings_table(section: Section) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of a section's table (mean ± std over seeds)."""
    m, unit = section.metric, " (%)" if section.metric == "acc" else ""
    metric_fmt = functools.partial(format_metric, m)
    head = ["setting", "seeds", "epochs", f"best val {m}{unit}", f"final test {m}{unit}",
            f"test {m} at best val{unit}", f"best test {m}{unit}"]
    head += [f"to {format_metric(m, t)}{'%' if m == 'acc' else ''}: epochs / seconds" for t in section.thresholds]
    head.append("total time (s)")
    rows = []
    for s in section.settings:
        n = len(s.runs)
        if not s.values("epochs"):
            rows.append([s.label, str(n)] + ["-"] * (len(head) - 2))
            continue
        row = [s.label, str(n), format_spread(s.values("epochs"), format_count)]
        for key in (f"best_val_{m}", f"final_test_{m}", f"test_{m}_at_best_val", f"best_test_{m}"):
            row.append(format_spread(s.values(key), metric_fmt) if s.values(key) else "-")
        for t in section.thresholds:
            epochs, seconds = s.values(f"epochs_to_{t:g}"), s.values(f"seconds_to_{t:g}")
            if not epochs:
                row.append("not reached")
                continue
            cell = f"{format_spread(epochs, format_count)} / {format_spread(seconds, _whole)}"
            row.append(cell + (f" ({len(epochs)}/{n} seeds)" if len(epochs) < n else ""))
        row.append(format_spread(s.values("seconds"), _whole))
        rows.append(row)
    return head, rows


def one_option_pairs(section: Section) -> List[Tuple[str, Setting, Setting]]:
    """``(option, a, b)`` for every two settings that differ in exactly one option, a's value first in order."""
    pairs = []
    for i, a in enumerate(section.settings):
        for b in section.settings[i + 1:]:
            keys = sorted(set(a.settings) | set(b.settings))
            differ = [k for k in keys if a.settings.get(k, "n/a") != b.settings.get(k, "n/a")]
            if len(differ) == 1:
                key = differ[0]
                first, second = sorted((a, b), key=lambda s: json.dumps(s.settings.get(key)))
                pairs.append((key, first, second))
    return sorted(pairs, key=lambda p: (p[0], p[1].label, p[2].label))


def differences_table(section: Section) -> Tuple[List[str], List[List[str]]]:
    """Header and rows: for each one-option pair, the difference of mean honest scores with its 95% CI."""
    m = section.metric
    key = f"test_{m}_at_best_val"
    unit = " (points)" if m == "acc" else ""
    head = ["option", "a", "b", "other settings", f"a - b: test {m} at best val{unit}", "95% CI (Welch)", "seeds (a, b)"]
    rows = []
    for option, a, b in one_option_pairs(section):
        va, vb = a.values(key), b.values(key)
        others = _common_label(a, b, option)
        if not va or not vb:
            continue
        interval = welch_interval(va, vb)
        diff = mean_std(va)[0] - mean_std(vb)[0]
        ci = "n/a (needs 2+ seeds a side)" if interval is None else \
            f"[{format_metric(m, interval[1])}, {format_metric(m, interval[2])}]"
        rows.append([option, str(a.settings.get(option, "n/a")), str(b.settings.get(option, "n/a")), others,
                     format_metric(m, diff), ci, f"{len(va)}, {len(vb)}"])
    return head, rows


# ------------------------------------------------------------------------------------ the document
@dataclass
class Block:
    """One piece of the report: a heading, a paragraph, a table or a figure."""

    kind: str  # "h1", "h2", "h3", "p", "table", "figure"
    text: str = ""
    head: List[str] = field(default_factory=list)
    rows: List[List[str]] = field(default_factory=list)
    path: Optional[Path] = None  # figure file


def write_report(paths: Sequence, out_dir: Path) -> List[Path]:
    """Write ``report.md``, ``report.html`` and ``figures/`` for the runs under ``paths``; return the two files."""
    out_dir = Path(out_dir)
    runs = load_runs(paths)
    figures = out_dir / FIGURES
    if figures.exists():  # figures of runs no longer in the report must not linger
        shutil.rmtree(figures)
    figures.mkdir(parents=True)
    blocks = build_report(runs, out_dir)
    md, page = out_dir / REPORT_MD, out_dir / REPORT_HTML
    md.write_text(render_markdown(blocks, out_dir))
    page.write_text(render_html(blocks))
    return [md, page]


def build_report(runs: Sequence[Run], out_dir: Path) -> List[Block]:
    """The report's blocks; draws the figures into ``out_dir/figures``. Runs without a finished
    epoch (just started, or stopped in their first) are named, not summarised."""
    empty = sorted(str(_relative(r.path, out_dir)) for r in runs if not r.metrics)
    runs = [r for r in runs if r.metrics]
    sections = build_sections(runs)
    blocks = [Block("h1", "irnn report"), Block("p", (
        f"{len(runs)} runs, {sum(len(s.settings) for s in sections)} settings. Each row is the mean ± standard "
        "deviation (n - 1) over the seeds of one setting. *Test at best val* is the test metric at the epoch "
        "with the best validation metric, the honest score; *best test* picks the epoch on the test set and is "
        "optimistic. Thresholds: epochs and wall seconds until the test metric first reached them, over the seeds "
        "that did. Curves: mean over seeds, band from the lowest to the highest seed."))]
    if empty:
        blocks.append(Block("p", f"Left out, no finished epoch yet: {', '.join(empty)}."))
    for section in sections:
        blocks += _section_blocks(section, out_dir)
    return blocks


def _section_blocks(section: Section, out_dir: Path) -> List[Block]:
    m = section.metric
    better = "higher" if section.higher_is_better else "lower"
    baselines = [line[0].upper() + line[1:] + "." for line in baseline_lines(section.runs)]
    blocks = [Block("h2", section.title), Block("p", " ".join([f"Metric: test {m} ({better} is better)."] + baselines))]
    head, rows = settings_table(section)
    blocks.append(Block("table", head=head, rows=rows))

    blocks.append(Block("h3", "Learning curves"))
    quantities = [m] + (["loss"] if any("test_loss" in r.resolved.get("baseline", {}) for r in section.runs) else [])
    for quantity in quantities:
        path = out_dir / FIGURES / f"{section.slug}-test_{quantity}.png"
        plot_runs(section.runs, path, title=f"{section.title}: test {quantity} per epoch", metric=quantity)
        blocks.append(Block("figure", f"{section.title}: test {quantity} per epoch", path=path))

    blocks.append(Block("h3", "Differences between settings one option apart"))
    head, rows = differences_table(section)
    if rows:
        blocks.append(Block("p", f"a - b of the mean test {m} at the best validation epoch"
                                 f"{' in percentage points' if m == 'acc' else ''}; an interval that excludes 0 "
                                 "says the option made a difference at the 95% level."))
        blocks.append(Block("table", head=head, rows=rows))
    else:
        blocks.append(Block("p", "No two settings here differ in exactly one option."))
    blocks += _diagnostics_blocks(section, out_dir)
    return blocks


def _diagnostics_blocks(section: Section, out_dir: Path) -> List[Block]:
    """The settings' diagnostics compared over seeds, then the figures of the lowest seed of each
    setting that has them."""
    blocks: List[Block] = _diagnostics_comparison(section, out_dir)
    for setting in section.settings:
        run = next((r for r in setting.runs if sorted((r.path / DIAGNOSTICS_DIR).glob("*.png"))), None)
        if run is None:
            continue
        if not blocks:
            blocks.append(Block("h3", "Diagnostics"))
        rel = _relative(run.path, out_dir)
        jsons = sorted(p.name for p in (run.path / DIAGNOSTICS_DIR).glob("*.json"))
        blocks.append(Block("p", f"**{setting.label}**, seed {run.config.get('seed')} ({rel}/{DIAGNOSTICS_DIR}"
                                 + (f"; numbers in {', '.join(jsons)}" if jsons else "") + ")"))
        target = out_dir / FIGURES / DIAGNOSTICS_DIR / f"{section.slug}-{_slug(setting.label)}"
        target.mkdir(parents=True, exist_ok=True)
        for png in sorted((run.path / DIAGNOSTICS_DIR).glob("*.png")):
            shutil.copyfile(png, target / png.name)
            blocks.append(Block("figure", f"{setting.label}: {png.stem.replace('_', ' ')}", path=target / png.name))
    return blocks


def _diagnostics_comparison(section: Section, out_dir: Path) -> List[Block]:
    """Where two or more settings have diagnostics records: a figure of their gradient norms per
    step and dead units over the diagnosed epochs, and a table of the per-epoch numbers over seeds.
    Only seeds with records count; only epochs every one of them has are compared."""
    from ..diagnostics.figures import settings_figure
    from ..diagnostics.runs import load_epoch_records

    groups = {}
    for setting in section.settings:
        seeds = [records for records in (load_epoch_records(r.path / DIAGNOSTICS_DIR) for r in setting.runs) if records]
        if seeds:
            groups[setting.label] = seeds
    epochs = sorted(set.intersection(*({r["epoch"] for r in seed} for seeds in groups.values() for seed in seeds))) \
        if groups else []
    if len(groups) < 2 or not epochs:
        return []
    path = out_dir / FIGURES / DIAGNOSTICS_DIR / f"{section.slug}-compared.png"
    settings_figure(groups, path, f"{section.title}: gradient flow and dead units, settings compared")
    rows = []
    for label, seeds in groups.items():
        for epoch in epochs:
            layers = [next(r for r in seed if r["epoch"] == epoch)["layers"][-1] for seed in seeds]
            rows.append([label, str(epoch), str(len(seeds)),
                         format_spread([100 * x["dead_fraction"] for x in layers], lambda v: f"{v:.0f}"),
                         format_spread([x["grad_norm_first_over_last"] for x in layers], lambda v: f"{v:.3g}"),
                         format_spread([x["spectral_radius"] for x in layers], lambda v: f"{v:.3f}")])
    head = ["setting", "epoch", "seeds", "dead units (%)", "‖dL/dh_1‖ / ‖dL/dh_T‖", "spectral radius of W_hh"]
    return [Block("h3", "Diagnostics"),
            Block("p", "Top recurrent layer, on the fixed validation batch of `irnn diagnose`, mean ± std over "
                       "seeds. A dead unit is never positive on any step of any sequence of the batch (it gets "
                       "no gradient); the gradient ratio compares how strongly the loss reaches the first step "
                       "with the last (near 1: the gradient spans the sequence; far below: it vanishes)."),
            Block("table", head=head, rows=rows),
            Block("figure", f"{section.title}: gradient flow and dead units, settings compared", path=path)]


# ------------------------------------------------------------------------------------ rendering
def render_markdown(blocks: Sequence[Block], out_dir: Path) -> str:
    """The report as Markdown; figures are linked by their path relative to ``out_dir``."""
    lines: List[str] = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            lines += ["#" * int(block.kind[1]) + " " + block.text, ""]
        elif block.kind == "p":
            lines += [block.text, ""]
        elif block.kind == "table":
            lines.append("| " + " | ".join(block.head) + " |")
            lines.append("|" + "---|" * len(block.head))
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in block.rows]
            lines.append("")
        elif block.kind == "figure":
            lines += [f"![{block.text}]({_relative(block.path, out_dir)})", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}img{max-width:100%;display:block;margin:1em 0}
figure{margin:0}figcaption{color:#666;font-size:0.85em}"""


def render_html(blocks: Sequence[Block]) -> str:
    """The report as one HTML page with every figure embedded (base64 PNG)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>irnn report</title>',
             f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            parts.append(f"<{block.kind}>{html.escape(block.text)}</{block.kind}>")
        elif block.kind == "p":
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif block.kind == "table":
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.head)
                         + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            parts.append("</tbody></table>")
        elif block.kind == "figure":
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(f'<figure><img alt="{html.escape(block.text)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escape a paragraph and turn its Markdown emphasis (**bold**, *italic*) into HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


# ------------------------------------------------------------------------------------ helpers
def _whole(seconds: float) -> str:
    return f"{seconds:.0f}"


def _seq_len(run: Run) -> Optional[int]:
    return run.resolved.get("seq_len", run.config.get("seq_len"))


def _without_seed(run: Run) -> Dict:
    return {k: v for k, v in experiment_settings(run.config).items() if k != "seed"}


def _common_label(a: Setting, b: Setting, option: str) -> str:
    """What the two settings share, among the options that vary in their section (``model=irnn``)."""
    label = " ".join(part for part in a.label.split(" ") if not part.startswith(f"{option}="))
    return label or "-"


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "runs"
