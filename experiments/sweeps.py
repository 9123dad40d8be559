"""Sweep presets: the paper's experiments as data (TOML), expanded into run configs x seeds.

A preset file (experiments/presets/NAME.toml, or the user's own) has these keys, all optional:

    description = "one line: which table or figure of the paper"
    named_configs = ["smac_paper"]     # Sacred named configs of every run
    seeds = 5                          # default number of seeds (0 .. seeds-1); `--seeds` overrides
    results = "results/reproduction"   # default results root of `asae sweep` (`--results` overrides)
    [params]                           # preset parameters: `--set NAME=VALUE`; used as "${NAME}" below
    map = "3s5z"
    [config]                           # config updates shared by every run
    env = { name = "smax", map_name = "${map}" }
    [grid]                             # cross product; keys are config keys ("learner.m" nests)
    "learner.m" = [1, 2, 5, 10, 20]
    [[runs]]                           # explicit variants (each crossed with the grid); a run may add
    algo = "asae"                      #   its own `named_configs` and its own `grid` (crossed with
    teams = { predator = "asae", prey = "coma" }   # the preset's, for this variant only)

A run's config = config <- runs[i] <- grid point <- `--config KEY=VALUE` overrides <- seed (dicts merge
key by key, other values replace). A string that is exactly "${NAME}" takes the parameter's value
with its type (a list-valued parameter can be a whole grid axis); inside a longer string it is
substituted as text. Every mistake is a ConfigError naming the file and the key. Every run is tagged
`preset:NAME` (config `tags`, which is not part of its run_key), so reports know which sweep ran it.
"""
from __future__ import annotations

import copy
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from validation import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
TOP_LEVEL_KEYS = ("description", "named_configs", "seeds", "results", "params", "config", "grid", "runs")
PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    description: str = ""
    named_configs: tuple[str, ...] = ()
    seeds: int = 1
    results: str | None = None  # default results root of its sweeps
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    runs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: what `experiments.api.train` gets."""

    config_updates: dict[str, Any]
    named_configs: tuple[str, ...]

    def flat(self) -> dict[str, Any]:
        return flatten(self.config_updates)


# --- small dict helpers ---------------------------------------------------------------------------
def set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    """target[a][b] = value for dotted = "a.b"; a dict value merges into an existing dict."""
    *parents, last = dotted.split(".")
    node = target
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        node[last] = merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``update`` applied (dotted keys nest, dicts merge key by key)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        set_path(out, key, value)
    return out


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_value(text: str) -> Any:
    """A command-line value: a TOML literal (3, 0.1, true, [1, 2], "x", {a = 1}) or else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(text: str, option: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*", key.strip()):
        raise ConfigError(f"{option} {text!r}: expected KEY=VALUE (e.g. {option} map=3m)")
    return key.strip(), parse_value(value.strip())


MAX_SEEDS = 1000  # seeds in one sweep (the paper uses 5); more is a typo, and expanding it would take hours


def parse_seeds(text: str) -> list[int]:
    """"5" -> 0..4; "3-6" -> 3..6; "0,4,7" -> those seeds."""
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if m and (int(m[2]) - int(m[1]) + 1 if m[2] else int(m[1])) > MAX_SEEDS:
        raise ConfigError(f"--seeds {text}: at most {MAX_SEEDS} seeds in one sweep (validating each run takes about "
                          "10 ms, and each run is hours of training)")
    try:
        if re.fullmatch(r"\d+", text):
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        if m := re.fullmatch(r"(\d+)-(\d+)", text):
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise ValueError
            return list(range(lo, hi + 1))
        seeds = [int(s) for s in text.split(",")]
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError
        return seeds
    except ValueError:
        raise ConfigError(f"--seeds {text!r} is not valid; use a count (5), a range (3-7) or a list (0,4,7)") from None


# --- finding and loading presets ------------------------------------------------------------------
def find_presets(files: Iterable[str | Path] = (), dirs: Iterable[str | Path] = ()) -> dict[str, Path]:
    """Preset name -> file: the shipped presets, then those in ``dirs``, then ``files`` (later ones win)."""
    found = {p.stem: p for p in sorted(PRESET_DIR.glob("*.toml"))}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise ConfigError(f"--preset-dir {str(d)!r} is not a directory")
        found.update({p.stem: p for p in sorted(d.glob("*.toml"))})
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise ConfigError(f"--preset-file {str(f)!r}: no such file")
        found[f.stem] = f
    return found


def locate(name: str, files: Iterable[str | Path] = (), dirs: Iterable[str | Path] = ()) -> Path:
    """The file of preset ``name`` (or ``name`` itself when it is a path to a .toml file)."""
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise ConfigError(f"preset file {name!r}: no such file")
        return Path(name)
    presets = find_presets(files, dirs)
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; valid presets are: {', '.join(sorted(presets))} "
                          "(or give your own with --preset-file FILE / --preset-dir DIR)")
    return presets[name]


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ConfigError(f"{where} = {value!r} must be {what}")
    return value


def load_preset(path: str | Path) -> Preset:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML preset (not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    where = lambda key: f"{path}: {key}"  # noqa: E731
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{where(unknown[0])}: unknown key; valid keys are: {', '.join(TOP_LEVEL_KEYS)}")
    named = _expect(data.get("named_configs", []), list, where("named_configs"), "a list of named config names")
    for i, name in enumerate(named):
        _expect(name, str, where(f"named_configs[{i}]"), "a string")
    seeds = _expect(data.get("seeds", 1), int, where("seeds"), "a positive whole number")
    if seeds < 1:
        raise ConfigError(f"{where('seeds')} = {seeds} must be a positive whole number")
    runs = _expect(data.get("runs", []), list, where("runs"), "an array of tables ([[runs]])")
    for i, run in enumerate(runs):
        _expect(run, dict, where(f"runs[{i}]"), "a table of config updates")
        _expect(run.get("named_configs", []), list, where(f"runs[{i}].named_configs"), "a list of named config names")
        _expect(run.get("grid", {}), dict, where(f"runs[{i}].grid"), "a table of KEY = [values]")
    results = data.get("results")
    if results is not None and (not isinstance(results, str) or not results.strip()):
        raise ConfigError(f"{where('results')} = {results!r} must be a directory (a non-empty string)")
    preset = Preset(
        name=path.stem, path=path,
        description=_expect(data.get("description", ""), str, where("description"), "a string"),
        named_configs=tuple(named), seeds=seeds, results=results,
        params=_expect(data.get("params", {}), dict, where("params"), "a table"),
        config=_expect(data.get("config", {}), dict, where("config"), "a table of config updates"),
        grid=_expect(data.get("grid", {}), dict, where("grid"), "a table of KEY = [values]"),
        runs=tuple(runs),
    )
    return preset


def check_algos(preset: Preset) -> None:
    """Name the key of an unknown algo before anything else runs (the registry is the only truth)."""
    import algos

    valid = set(algos.REGISTRY)

    def check(value: Any, key: str, allow_random: bool = False) -> None:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and PARAM.search(v):
                continue  # a parameter: checked once substituted (by resolve_config)
            if v not in valid and not (allow_random and v == algos.RANDOM):
                choices = sorted(valid) + ([algos.RANDOM] if allow_random else [])
                raise ConfigError(f"{preset.path}: {key}: unknown algo {v!r}; valid algos are: {', '.join(choices)}")

    tables = [("config", preset.config), ("grid", preset.grid)]
    for i, run in enumerate(preset.runs):
        tables += [(f"runs[{i}]", {k: v for k, v in run.items() if k != "grid"}), (f"runs[{i}].grid", run.get("grid", {}))]
    for name, table in tables:
        for key, value in flatten(table).items():
            if key == "algo":
                check(value, f"{name}.{key}")
            elif key.startswith("teams."):
                check(value, f"{name}.{key}", allow_random=True)


# --- expansion ------------------------------------------------------------------------------------
def _substitute(value: Any, params: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, params, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    for name in PARAM.findall(value):
        if name not in params:
            valid = ", ".join(sorted(params)) or "none"
            raise ConfigError(f"{where}: unknown parameter ${{{name}}}; the preset's parameters are: {valid}")
    whole = PARAM.fullmatch(value)
    if whole:
        return copy.deepcopy(params[whole[1]])
    return PARAM.sub(lambda m: str(params[m[1]]), value)


def preset_params(preset: Preset, overrides: Mapping[str, Any] = ()) -> dict[str, Any]:
    params = dict(preset.params)
    for name, value in dict(overrides).items():
        if name not in params:
            valid = ", ".join(sorted(params)) or "none"
            raise ConfigError(f"--set {name}: preset {preset.name!r} has no parameter {name!r}; its parameters are: {valid}")
        if isinstance(params[name], list) and isinstance(value, str):
            value = [parse_value(v.strip()) for v in value.split(",") if v.strip()]
        params[name] = value
    return params


def expand(preset: Preset, seeds: Sequence[int] | None = None, params: Mapping[str, Any] = (),
           overrides: Mapping[str, Any] = ()) -> list[RunSpec]:
    """The preset's runs, in a stable order: variants x grid points x seeds."""
    values = preset_params(preset, params)
    where = lambda key: f"{preset.path}: {key}"  # noqa: E731
    base = _substitute(preset.config, values, where("config"))
    variants = [_substitute(run, values, where(f"runs[{i}]")) for i, run in enumerate(preset.runs)] or [{}]
    axes = _axes(preset.grid, values, where("grid"))
    overrides = dict(overrides)
    if "seed" in overrides:
        raise ConfigError("--config seed=...: choose seeds with --seeds")
    seeds = list(range(preset.seeds)) if seeds is None else list(seeds)
    tag = f"preset:{preset.name}"
    specs = []
    for i, variant in enumerate(variants):
        variant = dict(variant)
        named = preset.named_configs + tuple(variant.pop("named_configs", ()))
        own = _axes(variant.pop("grid", {}), values, where(f"runs[{i}].grid"))
        grid = {**axes, **own}
        for point in itertools.product(*grid.values()):
            config = merge(base, variant)
            for key, value in zip(grid, point):
                set_path(config, key, value)
            config = merge(config, overrides)
            tags = list(config.get("tags") or [])
            config["tags"] = tags if tag in tags else [*tags, tag]
            for seed in seeds:
                specs.append(RunSpec({**config, "seed": seed}, tuple(dict.fromkeys(named))))
    return specs


def parse_only(texts: Iterable[str]) -> dict[str, list[Any]]:
    """``--only KEY=V1,V2`` (repeatable) -> {KEY: [V1, V2]}."""
    only: dict[str, list[Any]] = {}
    for text in texts:
        key, _ = parse_assignment(text, "--only")
        values = text.partition("=")[2].split(",")
        only.setdefault(key, []).extend(parse_value(v.strip()) for v in values if v.strip())
    return only


def select(specs: Sequence[RunSpec], only: Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    """The runs whose config sets every key of ``only`` to one of its values (``--only algo=qmix``): a
    part of a preset, with the same run keys as the whole. A key no run sets, or a filter no run meets,
    is a ConfigError naming what is valid."""
    flats = [spec.flat() for spec in specs]
    wanted = {key: {str(v) for v in values} for key, values in only.items()}
    for key, values in only.items():
        seen = sorted({str(f[key]) for f in flats if key in f})
        if not seen:
            raise ConfigError(f"--only {key}=...: no run of this preset sets {key}; its runs vary in: "
                              f"{', '.join(varying_keys(specs)) or 'nothing'}")
        if not wanted[key] & set(seen):
            raise ConfigError(f"--only {key}={','.join(map(str, values))}: no run has it; valid values: {', '.join(seen)}")
    return [spec for spec, flat in zip(specs, flats)
            if all(key in flat and str(flat[key]) in keep for key, keep in wanted.items())]


def _axes(grid: Mapping[str, Any], values: Mapping[str, Any], where: str) -> dict[str, list]:
    axes = {}
    for key, axis in grid.items():
        axis = _substitute(axis, values, f"{where}.{key}")
        if not isinstance(axis, list) or not axis:
            raise ConfigError(f"{where}.{key} = {axis!r} must be a non-empty list of values")
        axes[key] = axis
    return axes


def varying_keys(specs: Sequence[RunSpec]) -> list[str]:
    """The dotted config keys whose values differ between runs (what tells the runs apart), seed last."""
    flats = [s.flat() for s in specs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1 and k != "seed"]
    return varying + ["seed"]


def describe(spec: RunSpec, keys: Sequence[str]) -> dict[str, str]:
    flat = spec.flat()
    return {k: "-" if flat.get(k) is None else str(flat[k]) for k in keys}


def missing_components(preset: Preset, specs: Sequence[RunSpec]) -> list[str]:
    """Algos and envs a preset uses that are not registered (yet): listed by `asae sweep list`."""
    import algos
    import envs

    missing = set()
    for spec in specs:
        flat = spec.flat()
        for key, value in flat.items():
            if (key == "algo" or key.startswith("teams.")) and value not in algos.REGISTRY and value != algos.RANDOM:
                missing.add(f"algo {value}")
            if key == "env.name" and value not in envs.ENVS:
                missing.add(f"env {value}")
    return sorted(missing)


def resolve(preset: Preset, specs: Sequence[RunSpec],
            progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """The full resolved config of every run (with its run_key), all validated before anything starts;
    ``progress(done, total)`` is called after each run."""
    from experiments.api import resolve_config

    resolved = []  # Sacred's "Added new config entry" notices are filtered where the experiment is defined
    for i, spec in enumerate(specs):
        if progress is not None:
            progress(i, len(specs))
        try:
            resolved.append(resolve_config(spec.config_updates, spec.named_configs))
        except ConfigError as exc:
            label = " ".join(f"{k}={v}" for k, v in describe(spec, varying_keys(specs)).items())
            raise ConfigError(f"{preset.path}: run {i + 1}/{len(specs)} ({label}): {exc}") from None
    return resolved
