"""Sweeps: specs are checked whole before anything runs, runs are named from their values, finished
runs are skipped and unfinished ones resumed, and a SIGKILLed sweep loses no finished epoch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irnn.cli import main
from irnn.errors import ConfigError, IrnnError, RunDirError
from irnn.sweep import list_presets, load_preset, parse_spec, run_sweep
from irnn.sweep.runner import local_shares
from irnn.train import read_metrics

# Tiny generated-data runs: no dataset needed, a couple of seconds each.
TINY = """
out = "{out}"
seeds = [0, 1]

[base]
task = "adding"
seq_len = 10
hidden = 8
epochs = 2
limit_train = 128
limit_test = 32
threads = 1
"""


def spec_from(text, tmp_path, name="spec"):
    return parse_spec(text.replace("{out}", str(tmp_path / "runs")), source=f"{name}.toml", default_name=name)


# ------------------------------------------------------------------------------------ specs
def test_runs_are_variants_times_grid_times_seeds_named_by_their_values(tmp_path):
    spec = spec_from(TINY + """
[grid]
lr = [0.001, 1e-4]

[[variants]]
model = "irnn"
act = "elu"

[[variants]]
model = "lstm"
""", tmp_path)
    runs = spec.runs()
    assert len(runs) == 2 * 2 * 2
    names = [r.name for r in runs]
    # seed-major: every setting's seed 0 before any seed 1
    assert names[:2] == ["model=irnn__act=elu__lr=0.001__seed=0", "model=irnn__act=elu__lr=0.0001__seed=0"]
    assert [r.config.seed for r in runs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert "model=lstm__lr=0.0001__seed=1" in names  # act means nothing to an LSTM: not in its name
    run = runs[-1]
    assert run.path == tmp_path / "runs" / run.name
    assert (run.config.model, run.config.lr, run.config.seed, run.config.seq_len) == ("lstm", 1e-4, 1, 10)


def test_seeds_as_a_count_and_default_out(tmp_path):
    spec = parse_spec('seeds = 3\n[base]\ntask = "adding"\n', source="x.toml", default_name="x")
    assert spec.seeds == [0, 1, 2] and spec.out == Path("runs/x")
    assert [r.name for r in spec.runs()] == ["seed=0", "seed=1", "seed=2"]


@pytest.mark.parametrize("text, message", [
    ('[base]\ntask = "adding"\nbogus = 1\n', "[base] has unknown option 'bogus'"),
    ('[base]\ntask = "adding"\n[grid]\nactt = ["elu"]\n', "unknown option 'actt' (did you mean 'act'?)"),
    ('[base]\ntask = "adding"\n[grid]\n', "[grid] is empty"),
    ('[base]\ntask = "adding"\n[grid]\nact = []\n', "[grid] act: give a non-empty list"),
    ('[base]\ntask = "adding"\n[grid]\nact = "elu"\n', "[grid] act: give a non-empty list"),
    ('[base]\ntask = "adding"\n[grid]\nact = ["elu", "elu"]\n', "act: value 'elu' is listed twice"),
    ('[base]\ntask = "adding"\nact = "relu"\n[grid]\nact = ["elu", "relu"]\n',
     "option 'act' is set in both [base] and [grid]"),
    ('[base]\ntask = "adding"\n[grid]\nmodel = ["irnn"]\n[[variants]]\nmodel = "lstm"\n',
     "option 'model' is set in both [grid] and [[variants]]"),
    ('[base]\ntask = "adding"\nhidden = "big"\n', "[base] hidden: expected an integer, got 'big'"),
    ('[base]\ntask = "adding"\nlr = true\n', "[base] lr: expected a number, got True"),
    ('[base]\ntask = "adding"\n[grid]\nhidden = [8, 1.5]\n', "[grid] hidden: expected an integer, got 1.5"),
    ('[base]\ntask = "adding"\nseed = 1\n', "sets 'seed'; list the seeds with `seeds"),
    ('seeds = 0\n[base]\ntask = "adding"\n', "seeds: a count must be at least 1"),
    ('seeds = [1, -1]\n[base]\ntask = "adding"\n', "seeds: give a count or a non-empty list"),
    ('sedes = 3\n[base]\ntask = "adding"\n', "unknown key 'sedes' (did you mean 'seeds'?)"),
    ('[base]\ntask = adding\n', "not valid TOML"),
    ('variants = []\n[base]\ntask = "adding"\n', "[[variants]] is empty"),
    ('[base]\ntask = "adding"\n[grid]\nact = ["elu", "swish"]\n', "run act=swish__seed=0: --act: unknown value 'swish'"),
    ('[base]\ntask = "adding"\n[grid]\nseq_len = [1, 10]\n', "run seq_len=1__seed=0: --seq-len must be at least 2"),
    ('[base]\ntask = "adding"\nmodel = "lstm"\n[grid]\nact = ["elu", "relu"]\n',
     "have the same settings; act only apply to model irnn"),
])
def test_bad_specs_are_refused_naming_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_spec(text, source="bad.toml", default_name="bad").runs()
    assert message in str(info.value) and str(info.value).startswith("bad.toml")


def test_set_overrides_base_but_not_swept_options(tmp_path):
    text = TINY + '[grid]\nact = ["elu", "relu"]\n'
    spec = parse_spec(text, source="s.toml", default_name="s", overrides=["epochs=5", "limit-train=64", "optimizer=adam"])
    config = spec.runs()[0].config
    assert (config.epochs, config.limit_train, config.optimizer) == (5, 64, "adam")
    with pytest.raises(ConfigError, match="option 'act' is set in both --set and \\[grid\\]"):
        parse_spec(text, source="s.toml", default_name="s", overrides=["act=tanh"])
    with pytest.raises(ConfigError, match="write OPTION=VALUE"):
        parse_spec(text, source="s.toml", default_name="s", overrides=["epochs"])


def test_a_bad_spec_starts_no_run(tmp_path):
    spec = spec_from(TINY + '[grid]\nbatch_size = [8, -1]\n', tmp_path)
    with pytest.raises(ConfigError, match="--batch-size must be a positive integer"):
        run_sweep(spec, log=lambda line: None)
    assert not (tmp_path / "runs").exists()


def test_presets_are_valid_and_cover_the_comparisons():
    presets = {spec.name: spec for spec in list_presets()}
    for name, spec in presets.items():
        assert spec.description and spec.runs(), name  # every run's config validates
    ours = ("smnist-keras", "smnist-tuned", "pmnist", "adding", "copy")
    for name in ours:
        assert len(presets[name].runs()) >= 6 and len(presets[name].seeds) >= 3, name
    keras = presets["smnist-keras"]
    assert keras.base["lr"] == 1e-6 and keras.base["batch_size"] == 32 and keras.base["clip"] == 0.0  # the example defines clip_norm but never uses it
    assert keras.grid == {"act": ["elu", "relu"], "input_init": ["normal", "glorot_normal"]}
    for name in ("smnist-tuned", "pmnist", "adding", "copy"):
        assert {r.config.model for r in presets[name].runs()} == {"irnn", "lstm", "gru", "rnn"}, name
    assert presets["adding"].grid["seq_len"] == [150, 200, 300, 400]
    assert presets["copy"].grid["seq_len"][0] == 100 and presets["copy"].grid["seq_len"][-1] == 500
    assert load_preset("adding", out="elsewhere").out == Path("elsewhere")


def test_local_shares_split_the_cores():
    assert local_shares(n_runs=10, threads=None, workers=None, cores=8) == (8, 1)
    assert local_shares(n_runs=2, threads=None, workers=None, cores=8) == (2, 4)
    assert local_shares(n_runs=10, threads=2, workers=None, cores=8) == (4, 2)
    assert local_shares(n_runs=10, threads=None, workers=3, cores=8) == (3, 2)
    assert local_shares(n_runs=1, threads=None, workers=None, cores=2) == (1, 2)


# ------------------------------------------------------------------------------------ running
def test_sweep_runs_skips_finished_refuses_changes_and_extends_on_more_epochs(tmp_path):
    spec = spec_from(TINY, tmp_path)
    lines = []
    outcomes = run_sweep(spec, workers=2, log=lines.append)
    assert sorted(o.name for o in outcomes) == ["seed=0", "seed=1"] and all(o.ok for o in outcomes)
    assert "2 to start (2 at a time, 1 thread(s) each)" in lines[0]
    runs = tmp_path / "runs"
    assert json.loads((runs / "sweep.json").read_text())["seeds"] == [0, 1]
    first = {p.name: (p / "metrics.jsonl").read_bytes() for p in runs.iterdir() if p.is_dir()}
    assert all(len(read_metrics(runs / name)) == 2 for name in first)

    lines.clear()
    assert run_sweep(spec, log=lines.append) == []
    assert "2 finished, 0 to resume, 0 to start" in lines[0]

    changed = spec_from(TINY.replace("hidden = 8", "hidden = 16"), tmp_path)
    with pytest.raises(RunDirError, match="hidden=8 there, 16 in the spec"):
        run_sweep(changed, log=lambda line: None)

    longer = parse_spec(TINY.replace("{out}", str(runs)), source="s", default_name="s", overrides=["epochs=3"])
    run_sweep(longer, workers=2, log=lines.append)
    for name, before in first.items():
        after = read_metrics(runs / name)
        assert len(after) == 3 and (runs / name / "metrics.jsonl").read_bytes().startswith(before)
        assert "resuming" in (runs / name / "train.log").read_text()


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    # lr so large that every epoch diverges; max_rollbacks 0 ends the run at the first non-finite loss
    spec = spec_from(TINY.replace("seeds = [0, 1]", "seeds = [0]") + '[grid]\nlr = [1e30, 0.001]\n', tmp_path)
    spec.base["max_rollbacks"] = 0
    lines = []
    with pytest.raises(IrnnError, match="1 of 2 runs failed \\(lr=1e\\+30__seed=0\\)"):
        run_sweep(spec, workers=2, log=lines.append)
    assert any("FAILED" in line and "non-finite" in line for line in lines)
    assert len(read_metrics(tmp_path / "runs" / "lr=0.001__seed=0")) == 2


def test_cli_dry_run_and_presets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY.replace("{out}", "runs") + '[grid]\nact = ["elu", "relu"]\n')
    assert main(["sweep", "s.toml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs in runs: 0 finished" in out and "act=relu__seed=1  [new]" in out
    assert not (tmp_path / "runs").exists()

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "smnist-keras" in out and "copy" in out
    assert main(["presets", "adding"]) == 0 and "seq_len = [150, 200, 300, 400]" in capsys.readouterr().out
    assert main(["sweep", "--preset", "adding", "--dry-run", "--out", "a"]) == 0
    assert "60 runs in a" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["sweep", "missing.toml"], "cannot read sweep spec missing.toml"),
    (["sweep"], "give a spec file or --preset NAME"),
    (["sweep", "--preset", "nope"], "unknown preset 'nope'"),
    (["sweep", "--preset", "adding", "--set", "bogus=1"], "--set bogus=1 has unknown option 'bogus'"),
    (["presets", "nope"], "unknown preset 'nope'"),
    (["report", "nowhere"], "does not exist"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


# ------------------------------------------------------------------------------------ kill and restart
KILLABLE = """
out = "runs"
seeds = [0, 1]

[base]
task = "adding"
model = "rnn"
seq_len = 100
hidden = 32
epochs = 3
batch_size = 64
limit_train = 4000
limit_test = 100
threads = 1
"""


def test_sigkilled_sweep_restarts_without_losing_a_finished_epoch(tmp_path):
    (tmp_path / "s.toml").write_text(KILLABLE)
    runs = tmp_path / "runs"
    done = lambda name: len(read_metrics(runs / name)) if (runs / name / "metrics.jsonl").exists() else 0

    sweep = subprocess.Popen([sys.executable, "-m", "irnn.cli", "sweep", "s.toml", "--workers", "1"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (done("seed=0") == 3 and done("seed=1") >= 1):
        time.sleep(0.02)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    killed_at = done("seed=1")
    assert done("seed=0") == 3 and 1 <= killed_at < 3, "not killed mid-run; make the epochs longer"

    # the worker died with the sweep: nothing trains behind the restarted one's back
    worker_pid = int((runs / "seed=1" / "train.log").read_text().split("(pid ")[1].split(",")[0])
    for _ in range(100):
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker {worker_pid} outlived the killed sweep")

    finished = runs / "seed=0" / "metrics.jsonl"
    finished_bytes, finished_mtime = finished.read_bytes(), finished.stat().st_mtime_ns
    partial = read_metrics(runs / "seed=1")

    again = subprocess.run([sys.executable, "-m", "irnn.cli", "sweep", "s.toml", "--workers", "1"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "1 finished, 1 to resume, 0 to start" in again.stdout
    # the finished run was not touched; the killed one kept its epochs and continued after them
    assert finished.read_bytes() == finished_bytes and finished.stat().st_mtime_ns == finished_mtime
    assert (runs / "seed=0" / "train.log").read_text().count("== ") == 1
    resumed = read_metrics(runs / "seed=1")
    assert resumed[:killed_at] == partial and [r["epoch"] for r in resumed] == [1, 2, 3]
    assert f"after epoch {killed_at}" in (runs / "seed=1" / "train.log").read_text()
