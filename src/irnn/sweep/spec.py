"""Sweep specs: a grid of training runs, times seeds, written in TOML.

A spec looks like this (every key but ``[base]`` is optional)::

    name = "adding"                  # default: the file name without .toml
    description = "IRNN vs LSTM on the adding problem"
    out = "runs/adding"              # where the run directories go; default runs/<name>
    seeds = 3                        # 3 means [0, 1, 2]; or a list, e.g. [0, 7]

    [base]                           # options every run shares: any `irnn train` option
    task = "adding"
    epochs = 20

    [grid]                           # every combination of these values ...
    seq_len = [150, 200, 300, 400]

    [[variants]]                     # ... times each of these, for options that go together
    model = "irnn"                   #     (an activation only means something for the IRNN)
    act = "relu"

    [[variants]]
    model = "lstm"

The runs are variants x grid x seeds, each in its own directory under ``out`` named from its
values of the swept options and its seed, e.g. ``model=irnn__act=relu__seq_len=150__seed=0``.
Option names are :class:`~irnn.train.TrainConfig` fields (``irnn train --help`` spells them with
``-``; here ``-`` and ``_`` both work).

A spec is checked whole before any run starts, and a mistake is refused with a message naming
the key: an unknown key or option, a value of the wrong type or out of range, an empty grid or
grid list, a repeated grid value, an option set in two places ([base], [grid], [[variants]]
or ``--set``: each option has one place), ``seed`` set anywhere but ``seeds``, and two runs
with the same settings (e.g. ``act`` swept for an LSTM, which has no activation option).
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError, IrnnError
from ..report.runs import IRNN_ONLY, experiment_settings
from ..train.config import TrainConfig, config_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SPEC_KEYS = ("name", "description", "out", "seeds", "base", "grid", "variants")
PRESET_PACKAGE = "irnn.experiments"
_FIELDS = {f.name: f for f in config_fields()}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its directory name, directory and full configuration."""

    name: str
    path: Path
    config: TrainConfig


@dataclass
class SweepSpec:
    """A parsed, checked sweep spec; :meth:`runs` expands it into its runs."""

    name: str
    description: str
    source: str  # the file or preset it came from, for messages
    out: Path
    base: Dict[str, Any]
    grid: Dict[str, List[Any]]
    variants: List[Dict[str, Any]]
    seeds: List[int]

    def swept_options(self) -> List[str]:
        """Options that vary between runs, in the order run names show them (variants first)."""
        keys = [k for variant in self.variants for k in variant]
        return list(dict.fromkeys(keys + list(self.grid)))

    def runs(self) -> List[PlannedRun]:
        """Every run, each config validated (so a bad value stops the sweep before it starts)."""
        from ..data.tasks import make_task

        swept = self.swept_options()
        planned: List[PlannedRun] = []
        seen: Dict[str, str] = {}  # settings (as JSON) -> run name, to refuse duplicates
        # Seed-major order: every setting's first seed comes before any second seed, so a sweep cut
        # short (or still running) already holds complete comparisons, one seed deep.
        settings = [{**self.base, **variant, **dict(zip(self.grid, combo))}
                    for variant in self.variants or [{}] for combo in itertools.product(*self.grid.values())]
        for seed in self.seeds:
            for values in settings:
                config = TrainConfig(**values, seed=seed)
                name = run_name(config, swept)
                try:
                    config.validate()
                    make_task(config)  # the task's own checks, e.g. a minimum --seq-len
                except IrnnError as exc:
                    raise ConfigError(f"{self.source}: run {name}: {exc}") from None
                key = json.dumps(experiment_settings(config.to_dict()), sort_keys=True)
                if key in seen:
                    irnn_only = [k for k in swept if k in IRNN_ONLY]
                    hint = (f"; {', '.join(irnn_only)} only apply to model irnn: sweep them in [[variants]] "
                            "with model = \"irnn\"" if irnn_only and config.model != "irnn" else "")
                    raise ConfigError(f"{self.source}: runs {seen[key]} and {name} have the same settings{hint}")
                if name in seen.values():
                    raise ConfigError(f"{self.source}: two runs would share the directory {name}; "
                                      "make the swept values differ in letters and digits")
                seen[key] = name
                planned.append(PlannedRun(name, self.out / name, config))
        return planned


def run_name(config: TrainConfig, swept: Sequence[str]) -> str:
    """``model=irnn__act=elu__seed=0``: the swept options' values (IRNN-only ones for IRNNs only)."""
    parts = [f"{key}={_path_safe(getattr(config, key))}" for key in swept
             if key != "seed" and (config.model == "irnn" or key not in IRNN_ONLY)]
    return "__".join(parts + [f"seed={config.seed}"])


def _path_safe(value: Any) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(value)  # exact and short: 1e-06, 0.001
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


# ---------------------------------------------------------------------------------------- loading
def load_spec(path, *, out: Optional[str] = None, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and check the spec file at ``path``; ``out`` and ``overrides`` (``"epochs=2"``) as on the CLI."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read sweep spec {path}: {exc.strerror or exc}") from None
    return parse_spec(text, source=str(path), default_name=path.stem, out=out, overrides=overrides)


def load_preset(name: str, *, out: Optional[str] = None, overrides: Sequence[str] = ()) -> SweepSpec:
    """A built-in spec from ``irnn/experiments/<name>.toml`` (see :func:`list_presets`)."""
    presets = _preset_files()
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(presets))} (see irnn presets)")
    return parse_spec(presets[name].read_text(), source=f"preset {name}", default_name=name, out=out,
                      overrides=overrides)


def preset_text(name: str) -> str:
    """The TOML text of a preset (to copy and edit)."""
    presets = _preset_files()
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(presets))}")
    return presets[name].read_text()


def list_presets() -> List[SweepSpec]:
    """Every built-in spec, sorted by name."""
    return [load_preset(name) for name in sorted(_preset_files())]


def _preset_files() -> Dict[str, Any]:
    folder = resources.files(PRESET_PACKAGE)
    return {f.name[:-len(".toml")]: f for f in folder.iterdir() if f.name.endswith(".toml")}


def parse_spec(text: str, *, source: str, default_name: str, out: Optional[str] = None,
               overrides: Sequence[str] = ()) -> SweepSpec:
    """Parse and check a spec's TOML text; raise :class:`ConfigError` naming the first bad key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}{_suggest(unknown[0], SPEC_KEYS)}; "
                          f"a spec has {', '.join(SPEC_KEYS)}")

    name = _typed(raw.get("name", default_name), str, source, "name")
    base = _options(_typed(raw.get("base", {}), dict, source, "[base]"), source, "[base]")
    grid = _options(_typed(raw.get("grid", {}), dict, source, "[grid]"), source, "[grid]", lists=True)
    if "grid" in raw and not grid:
        raise ConfigError(f"{source}: [grid] is empty; give each swept option a list of values, or drop [grid]")
    variants = _typed(raw.get("variants", []), list, source, "[[variants]]")
    if "variants" in raw and not variants:
        raise ConfigError(f"{source}: [[variants]] is empty; drop it or give at least one variant")
    variants = [_options(_typed(v, dict, source, f"[[variants]] #{i + 1}"), source, f"[[variants]] #{i + 1}")
                for i, v in enumerate(variants)]

    sets: Dict[str, Any] = {}
    for text_override in overrides:
        sets.update(_options(dict([_parse_override(text_override)]), source, f"--set {text_override}"))
    _refuse_options_in_two_places(source, {"[base]": base, "--set": sets, "[grid]": grid,
                                           "[[variants]]": {k: None for v in variants for k in v}})
    base = {**base, **sets}
    return SweepSpec(name=name, description=_typed(raw.get("description", ""), str, source, "description"),
                     source=source, out=Path(out or _typed(raw.get("out", f"runs/{name}"), str, source, "out")),
                     base=base, grid=grid, variants=variants, seeds=_seeds(raw.get("seeds", [0]), source))


def _options(table: Dict[str, Any], source: str, where: str, lists: bool = False) -> Dict[str, Any]:
    """Check a table of train options (names, types; grid lists non-empty and without repeats)."""
    checked = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name == "seed":
            raise ConfigError(f"{source}: {where} sets 'seed'; list the seeds with `seeds = [...]` (or a count)")
        if name not in _FIELDS:
            raise ConfigError(f"{source}: {where} has unknown option {key!r}{_suggest(name, _FIELDS)} "
                              "(irnn train --help lists the options)")
        if lists:
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{source}: {where} {key}: give a non-empty list of values (got {value!r})")
            for item in value:
                _check_type(name, item, source, where)
            repeats = [v for i, v in enumerate(value) if v in value[:i]]
            if repeats:
                raise ConfigError(f"{source}: {where} {key}: value {repeats[0]!r} is listed twice")
        else:
            _check_type(name, value, source, where)
        checked[name] = value
    return checked


_TYPE_CHECKS = {  # TOML has int, float, str and bool; an int is a fine float, a bool is no number
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
}


def _check_type(name: str, value: Any, source: str, where: str) -> None:
    """Refuse a value whose type does not match the option's annotation (``Optional[int]`` -> int)."""
    kind = str(_FIELDS[name].type).replace("Optional[", "").rstrip("]")
    if kind not in _TYPE_CHECKS:  # a type TOML cannot spell directly: TrainConfig.validate judges
        return
    expected, ok = _TYPE_CHECKS[kind]
    if not ok(value):
        raise ConfigError(f"{source}: {where} {name}: expected {expected}, got {value!r}")


def _refuse_options_in_two_places(source: str, places: Dict[str, Dict[str, Any]]) -> None:
    """Each option has one place; only ``--set`` may override [base] (that is what it is for)."""
    for (where_a, a), (where_b, b) in itertools.combinations(places.items(), 2):
        both = [k for k in a if k in b]
        if both and {where_a, where_b} != {"[base]", "--set"}:
            raise ConfigError(f"{source}: option {both[0]!r} is set in both {where_a} and {where_b}; "
                              "set each option in one place")


def _seeds(value: Any, source: str) -> List[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{source}: seeds: a count must be at least 1 (got {value})")
        return list(range(value))
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ConfigError(f"{source}: seeds: give a count or a non-empty list of integers >= 0 (got {value!r})")
    if len(set(value)) != len(value):
        raise ConfigError(f"{source}: seeds: a seed is listed twice ({value!r})")
    return list(value)


def _parse_override(text: str) -> Tuple[str, Any]:
    """``epochs=2`` -> ("epochs", 2): the value is read as TOML, else taken as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: write OPTION=VALUE, e.g. --set epochs=2")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _typed(value: Any, kind: type, source: str, where: str) -> Any:
    if not isinstance(value, kind):
        expected = {dict: "a table", list: "an array of tables", str: "a string"}[kind]
        raise ConfigError(f"{source}: {where} must be {expected} (got {value!r})")
    return value


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_spec(spec: SweepSpec) -> Dict[str, Any]:
    """The spec as plain data (written next to the runs as ``sweep.json``)."""
    return {"name": spec.name, "description": spec.description, "source": spec.source, "base": spec.base,
            "grid": spec.grid, "variants": spec.variants, "seeds": spec.seeds}


__all__ = ["PlannedRun", "SweepSpec", "describe_spec", "list_presets", "load_preset", "load_spec", "parse_spec",
           "preset_text", "run_name"]
