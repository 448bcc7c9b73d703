"""Search spaces: YAML files declaring what a study samples, validated as a whole before any trial runs.

A space file has up to three sections::

    run:                 # fixed scalars only: defaults for the run that CLI flags override
      protocol: random   # keys: dataset, protocol, sampler, pruner, metric, eval_every
    model:               # keys: every field of ModelConfig, plus the layer template depth/units/output_dim
      depth: {type: int, low: 1, high: 3}
      units: {type: int, low: 32, high: 256, log: true}   # → params units_0 … units_{depth-2}
      output_dim: {type: categorical, choices: [32, 64]}  # the last layer (output embedding size)
    train:               # keys: every field of TrainConfig
      optimizer: {type: categorical, choices: [adagrad, sgd]}
      momentum: {type: float, low: 0.5, high: 0.99, when: {optimizer: sgd}}
      epochs: 20         # a bare value (a list for list-valued fields) is fixed

An entry is a fixed value, ``{value: ..., when: ...}``, or an Optuna distribution: ``{type: float, low, high,
log?, step?}``, ``{type: int, low, high, step?, log?}`` or ``{type: categorical, choices: [...]}``. An optional
field (``num_hard_negatives``) also takes ``null``, fixed or as a choice. ``when``
maps earlier-declared params to a value or a list of values; the entry is active only when all of them match,
otherwise it is not suggested and the config keeps its default. Optuna param names are the leaf keys, so a key
may appear in one section only. List-valued choices (``layers``, ``ks``) are stored as strings like ``"64-32"``.

Every problem raises :class:`~study.errors.SearchSpaceError` with one line
``<path>: <key path>: <what is wrong>, but got <value>``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

import study
from study import names
from study.config import ModelConfig, TrainConfig, TrialConfig, field_names, field_type
from study.errors import ConfigError, SearchSpaceError

RUN_KEYS: tuple[str, ...] = ("dataset", "protocol", "sampler", "pruner", "metric", "eval_every")
TEMPLATE_KEYS: tuple[str, ...] = ("depth", "units", "output_dim")
SECTIONS: tuple[str, ...] = ("run", "model", "train")
DISTRIBUTION_TYPES: tuple[str, ...] = ("float", "int", "categorical")

#: The TFRS "Building deep retrieval models" tutorial: its three towers and the values it fixes.
TUTORIAL_LAYERS: tuple[tuple[int, ...], ...] = ((32,), (64, 32), (128, 64, 32))
TUTORIAL_VALUES: dict[str, Any] = {
    "activation": "relu",
    "body": "mlp",
    "embedding": "full",
    "embedding_dim": 32,
    "normalize": False,
    "temperature": 1.0,
    "sampling_bias_correction": False,
    "remove_accidental_hits": False,
    "num_hard_negatives": None,
    "optimizer": "adagrad",
    "learning_rate": 0.1,
    "batch_size": 2048,
}

_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "run": RUN_KEYS,
    "model": (*field_names(ModelConfig), *TEMPLATE_KEYS),
    "train": field_names(TrainConfig),
}
_DEFAULTS: dict[str, Any] = {"model": ModelConfig(), "train": TrainConfig()}
_SPEC_KEYS: dict[str | None, tuple[str, ...]] = {
    "float": ("type", "low", "high", "step", "log", "when"),
    "int": ("type", "low", "high", "step", "log", "when"),
    "categorical": ("type", "choices", "when"),
    None: ("value", "when"),
}
_RUN_ENUMS: dict[str, tuple[str, ...]] = {
    "protocol": names.PROTOCOLS,
    "sampler": names.SAMPLERS,
    "pruner": names.PRUNERS,
}
_CONFIG_SOURCE = "<search space>"
_CONFIG_PREFIX = re.compile(rf"^(?:{re.escape(_CONFIG_SOURCE)}: )?(?:model|train)\.\w+: ")


@dataclass(frozen=True)
class ParamSpec:
    """One ``model``/``train`` entry of a search space.

    Attributes:
        name: the leaf key, which is also the Optuna param name. ``units`` is the template of the params
            ``units_0``, ``units_1``, … (one per hidden layer).
        section: ``"model"`` or ``"train"``.
        distribution: what Optuna samples, or ``None`` for a fixed entry.
        value: the fixed value coerced to the config field's type (tuples for list-valued fields), or ``None``.
        when: param name → the values under which this entry is active (all must match); empty = always.
    """

    name: str
    section: str
    distribution: BaseDistribution | None = None
    value: Any = None
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space.

    Attributes:
        path: the file it was loaded from, as shown in error messages.
        entries: the ``model`` and ``train`` entries in file order (the order params are suggested in).
        run: the ``run`` section: fixed defaults for the run settings.
    """

    path: str
    entries: tuple[ParamSpec, ...]
    run: dict[str, Any] = field(default_factory=dict)

    def entry(self, name: str) -> ParamSpec | None:
        """The entry declaring ``name``, or ``None``."""
        for spec in self.entries:
            if spec.name == name:
                return spec
        return None

    @property
    def uses_template(self) -> bool:
        """Whether layers come from the ``depth``/``units``/``output_dim`` template."""
        return self.entry("depth") is not None

    def max_depth(self) -> int:
        """The largest ``depth`` the layer template can take (0 when the space does not use the template)."""
        depth = self.entry("depth")
        return _max_value(depth) if depth is not None else 0

    def fingerprint(self) -> str:
        """A 16-hex-digit digest of the normalised entries.

        It ignores whitespace, comments, key order and the file's path, and changes with any range, choice,
        fixed value or condition. The ``run`` section is not part of it: it only holds defaults the CLI may
        override, so the runner records the effective run settings itself.
        """
        payload = [
            {
                "section": spec.section,
                "name": spec.name,
                "distribution": None
                if spec.distribution is None
                else json.loads(distribution_to_json(spec.distribution)),
                "value": _jsonable(spec.value),
                "when": {k: sorted(json.dumps(_jsonable(v)) for v in vs) for k, vs in sorted(spec.when.items())},
            }
            for spec in sorted(self.entries, key=lambda s: (s.section, s.name))
        ]
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every param a trial may sample (active or not), ``units_0 … units_{max_depth-2}`` included."""
        out: dict[str, BaseDistribution] = {}
        for spec in self.entries:
            if spec.distribution is None:
                continue
            if spec.name == "units":
                for i in range(self.max_depth() - 1):
                    out[f"units_{i}"] = spec.distribution
            else:
                out[spec.name] = spec.distribution
        return out


# ----------------------------------------------------------------------------------------------------- loading


def space_dirs() -> list[Path]:
    """Where space names are looked up: ``./search_spaces`` then ``<repo root>/search_spaces``."""
    dirs = [Path("search_spaces"), Path(study.__file__).resolve().parent.parent / "search_spaces"]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


def available_spaces() -> list[str]:
    """Names of the spaces :func:`load_space` finds by name."""
    return sorted({p.stem for d in space_dirs() for p in d.glob("*.yaml")})


def resolve_space_path(name_or_path: str) -> Path:
    """The file a space name or path refers to; raises ``SearchSpaceError`` listing the names when missing.

    A NAME (no slash, no ``.yaml``/``.yml``) is looked up in :func:`space_dirs`; anything else is a path.
    """
    if _is_name(name_or_path):
        for d in space_dirs():
            candidate = d / f"{name_or_path}.yaml"
            if candidate.is_file():
                return candidate
        raise SearchSpaceError(
            f"{name_or_path}: no search space of that name{_hint(name_or_path, available_spaces())}; "
            f"available spaces are {available_spaces()} (or give a path to a .yaml file)"
        )
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise SearchSpaceError(
            f"{name_or_path}: no such file; available spaces are {available_spaces()} (or give a path to a .yaml file)"
        )
    return path


def _is_name(name_or_path: str) -> bool:
    return not any(c in name_or_path for c in "/\\") and not name_or_path.endswith((".yaml", ".yml"))


def load_space(name_or_path: str) -> SearchSpace:
    """Load and validate a whole search space.

    Args:
        name_or_path: a space name such as ``default`` (see :func:`available_spaces`) or a path to a YAML file.

    Returns:
        The validated space.

    Raises:
        SearchSpaceError: the file is missing or anything in it is invalid (one line, prefixed with the path).
    """
    path = resolve_space_path(name_or_path)
    shown = str(path) if _is_name(name_or_path) else name_or_path
    return parse_space(_read(path, shown), shown)


def parse_space(text: str, path: str = "<string>") -> SearchSpace:
    """Validate YAML text as a search space; ``path`` is only used in messages and :attr:`SearchSpace.path`."""
    return _Parser(path).parse(_yaml(text, path))


def load_config_file(path: str) -> TrialConfig:
    """Load a ``--config`` file: the search-space schema with fixed values only.

    ``when`` on fixed entries is honoured. A ``run`` section is validated; read it with ``load_space(path).run``.

    Raises:
        SearchSpaceError: the file is missing or invalid, or it declares a distribution.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise SearchSpaceError(f"{path}: no such file")
    space = _Parser(path, fixed_only=True).parse(_yaml(_read(file, path), path))
    return config_from_params(space, {})


def _read(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SearchSpaceError(f"{shown}: cannot read the file: {exc}") from None


def _yaml(text: str, path: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        raise SearchSpaceError(f"{path}: {where}: invalid YAML syntax ({detail})") from None


class _Parser:
    """Validates the parsed YAML of one file, section by section, in file order."""

    def __init__(self, path: str, *, fixed_only: bool = False) -> None:
        self.path = path
        self.fixed_only = fixed_only
        self.owner: dict[str, str] = {}  # key → the section declaring it
        self.declared: dict[str, ParamSpec] = {}  # model/train entries so far, in order
        self.file_keys: set[str] = set()  # every model/train key in the file (to tell "later" from "unknown")
        self.run: dict[str, Any] = {}

    def fail(self, key_path: str, message: str) -> NoReturn:
        raise SearchSpaceError(f"{self.path}: {key_path}: {message}")

    # ------------------------------------------------------------------------------------------- structure

    def parse(self, data: Any) -> SearchSpace:
        if data is None:
            self.fail("top level", f"must be a mapping with sections {list(SECTIONS)}, but got an empty file")
        if not isinstance(data, dict):
            self.fail("top level", f"must be a mapping with sections {list(SECTIONS)}, but got {_show(data)}")
        bodies: dict[str, dict[Any, Any]] = {}
        for section, body in data.items():
            if section not in SECTIONS:
                self.fail(
                    str(section),
                    f"unknown section{_hint(section, SECTIONS)}; valid sections are {list(SECTIONS)}",
                )
            if body is None:
                body = {}
            if not isinstance(body, dict):
                self.fail(section, f"must be a mapping of keys to entries, but got {_show(body)}")
            bodies[section] = body
            if section != "run":
                self.file_keys.update(k for k in body if isinstance(k, str))
        for section, body in bodies.items():
            for key, raw in body.items():
                self._key(section, key, raw)
        self._check_layers()
        return SearchSpace(path=self.path, entries=tuple(self.declared.values()), run=dict(self.run))

    def _key(self, section: str, key: Any, raw: Any) -> None:
        key_path = f"{section}.{key}"
        valid = _SECTION_KEYS[section]
        if not isinstance(key, str):
            self.fail(key_path, f"keys must be strings, but got {_show(key)}")
        if key not in valid:
            home = [s for s in SECTIONS if s != section and key in _SECTION_KEYS[s]]
            hint = f" (it belongs in section {home[0]!r})" if home else _hint(key, valid)
            self.fail(key_path, f"unknown key{hint}; valid keys are {list(valid)}")
        if key in self.owner:
            self.fail(
                key_path,
                f"already declared in section {self.owner[key]!r}; a name may appear in one section only, "
                f"but got it in {self.owner[key]!r} and {section!r}",
            )
        self.owner[key] = section
        if section == "run":
            self.run[key] = self._run_value(key, raw)
        else:
            self.declared[key] = self._entry(section, key, raw)

    def _run_value(self, key: str, raw: Any) -> Any:
        key_path = f"run.{key}"
        if isinstance(raw, dict | list):
            self.fail(key_path, f"must be a fixed scalar (the run section is not searched), but got {_show(raw)}")
        if key == "eval_every":
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                self.fail(key_path, f"must be an int >= 1, but got {_show(raw)}")
            return raw
        if not isinstance(raw, str) or not raw:
            self.fail(key_path, f"must be a non-empty string, but got {_show(raw)}")
        if key in _RUN_ENUMS:
            self._check_name(key_path, key, raw, _RUN_ENUMS[key])
        elif key in names.FIELDS:  # registry names, checked without importing TensorFlow
            self._check_name(key_path, key, raw, names.FIELDS[key])
        return raw

    def _entry(self, section: str, key: str, raw: Any) -> ParamSpec:
        key_path = f"{section}.{key}"
        if not isinstance(raw, dict):
            return ParamSpec(key, section, value=self._value(section, key, raw, key_path))
        if "type" in raw:
            kind = raw["type"]
            if kind not in DISTRIBUTION_TYPES:
                self.fail(
                    f"{key_path}.type",
                    f"unknown distribution type; valid types are {list(DISTRIBUTION_TYPES)}, "
                    f"but got {_show(kind)}{_hint(kind, DISTRIBUTION_TYPES)}",
                )
        elif "value" in raw:
            kind = None
        else:
            self.fail(
                key_path,
                f"an entry mapping needs 'type' (one of {list(DISTRIBUTION_TYPES)}) or 'value', "
                f"but got keys {list(raw)}",
            )
        allowed = _SPEC_KEYS[kind]
        for spec_key in raw:
            if spec_key not in allowed:
                what = f"type {kind}" if kind else "a fixed entry"
                self.fail(
                    f"{key_path}.{spec_key}",
                    f"not valid for {what}{_hint(spec_key, allowed)}; valid keys are {list(allowed)}",
                )
        when: dict[str, tuple[Any, ...]] = {}
        if "when" in raw:
            if key in TEMPLATE_KEYS:
                self.fail(
                    f"{key_path}.when",
                    "is not supported on the layer template keys (depth, units, output_dim); "
                    f"put the condition on layers instead, but got {_show(raw['when'])}",
                )
            when = self._when(key, raw["when"], f"{key_path}.when")
        if kind is None:
            return ParamSpec(
                key, section, value=self._value(section, key, raw["value"], f"{key_path}.value"), when=when
            )
        if self.fixed_only:
            self.fail(
                key_path,
                f"a --config file takes fixed values only; to search over values use `run --space FILE`, "
                f"but got a distribution (type: {kind})",
            )
        distribution = self._distribution(section, key, kind, raw, key_path)
        return ParamSpec(key, section, distribution=distribution, when=when)

    # --------------------------------------------------------------------------------------- distributions

    def _distribution(self, section: str, key: str, kind: str, raw: dict[str, Any], key_path: str) -> BaseDistribution:
        field_kind = _field_kind(section, key)
        if kind == "categorical":
            return self._categorical(section, key, raw, key_path)
        if field_kind != kind:
            alternatives = "categorical" if field_kind in ("bool", "str", "list") else f"{field_kind} or categorical"
            self.fail(
                f"{key_path}.type", f"must be {alternatives} for the {field_kind} field {key!r}, but got {kind!r}"
            )
        for bound in ("low", "high"):
            if bound not in raw:
                self.fail(f"{key_path}.{bound}", f"is required for type {kind}, but got keys {list(raw)}")
        low = self._number(raw["low"], kind, f"{key_path}.low")
        high = self._number(raw["high"], kind, f"{key_path}.high")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{key_path}.log", f"must be true or false, but got {_show(log)}")
        step = raw.get("step")
        if low >= high:
            self.fail(f"{key_path}.high", f"must be > low, but got low={low}, high={high}")
        if log and low <= 0:
            self.fail(f"{key_path}.low", f"must be > 0 when log is true, but got low={low}")
        if step is not None:
            if log:
                self.fail(f"{key_path}.step", f"cannot be combined with log: true, but got step={_show(step)}")
            step = self._number(step, kind, f"{key_path}.step")
            if step <= 0:
                self.fail(f"{key_path}.step", f"must be > 0, but got step={step}")
            if not _on_grid(high, low, step):
                self.fail(
                    f"{key_path}.high",
                    f"must be low plus a whole number of steps, but got low={low}, high={high}, step={step}",
                )
        if key in TEMPLATE_KEYS:
            if low < 1:
                self.fail(f"{key_path}.low", f"must be >= 1, but got low={low}")
        else:
            self._coerce(section, key, low, f"{key_path}.low")
            self._coerce(section, key, high, f"{key_path}.high")
        if kind == "int":
            return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
        return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))

    def _categorical(self, section: str, key: str, raw: dict[str, Any], key_path: str) -> CategoricalDistribution:
        if "choices" not in raw:
            self.fail(f"{key_path}.choices", f"is required for type categorical, but got keys {list(raw)}")
        choices = raw["choices"]
        if not isinstance(choices, list):
            self.fail(f"{key_path}.choices", f"must be a list, but got {_show(choices)}")
        if not choices:
            self.fail(f"{key_path}.choices", "must not be empty, but got []")
        out: list[Any] = []
        for i, choice in enumerate(choices):
            value = _canon(self._value(section, key, choice, f"{key_path}.choices[{i}]"))
            if any(_same(value, seen) for seen in out):
                self.fail(f"{key_path}.choices[{i}]", f"duplicate choice, but got {_show(choice)} more than once")
            out.append(value)
        return CategoricalDistribution(tuple(out))

    def _number(self, raw: Any, kind: str, key_path: str) -> int | float:
        if kind == "int":
            if isinstance(raw, bool) or not isinstance(raw, int):
                self.fail(key_path, f"must be an int for type int, but got {_show(raw)}")
            return raw
        value: Any = raw
        if isinstance(raw, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(raw)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(key_path, f"must be a finite number, but got {_show(raw)}")
        return float(value)

    # ------------------------------------------------------------------------------------------------ values

    def _value(self, section: str, key: str, raw: Any, key_path: str) -> Any:
        """A fixed value or choice, coerced to the field's type; names are checked against their registry."""
        if isinstance(raw, dict):
            self.fail(key_path, f"must be a value, but got a mapping {_show(raw)}")
        if key in TEMPLATE_KEYS:
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                self.fail(key_path, f"must be an int >= 1, but got {_show(raw)}")
            return raw
        field_kind = _field_kind(section, key)
        if field_kind == "list":
            if isinstance(raw, list) and any(isinstance(v, list | dict) for v in raw):
                self.fail(key_path, f"must be a list of ints, but got {_show(raw)}")
        elif isinstance(raw, list):
            self.fail(
                key_path,
                f"must be a single {field_kind}; to search over values use {{type: categorical, choices: [...]}}, "
                f"but got a list {_show(raw)}",
            )
        value = self._coerce(section, key, raw, key_path)
        if key in names.FIELDS:
            self._check_name(key_path, key, value, names.FIELDS[key])
        return value

    def _coerce(self, section: str, key: str, raw: Any, key_path: str) -> Any:
        try:
            config = TrialConfig.from_dict({section: {key: raw}}, source=_CONFIG_SOURCE)
        except ConfigError as exc:
            self.fail(key_path, _CONFIG_PREFIX.sub("", str(exc)))
        return getattr(getattr(config, section), key)

    def _check_name(self, key_path: str, key: str, value: Any, valid: tuple[str, ...]) -> None:
        if value not in valid:
            self.fail(
                key_path, f"unknown {key}; valid names are {list(valid)}, but got {_show(value)}{_hint(value, valid)}"
            )

    # ------------------------------------------------------------------------------------------- conditions

    def _when(self, key: str, raw: Any, key_path: str) -> dict[str, tuple[Any, ...]]:
        if not isinstance(raw, dict) or not raw:
            self.fail(key_path, f"must be a non-empty mapping of param → value or list of values, but got {_show(raw)}")
        out: dict[str, tuple[Any, ...]] = {}
        for ref, allowed in raw.items():
            ref_path = f"{key_path}.{ref}"
            if ref == "units":
                self.fail(ref_path, "units is a layer template, not a param; refer to depth instead, but got 'units'")
            if ref == key:
                self.fail(ref_path, f"must refer to another param, but got the entry itself ({key!r})")
            if ref not in self.declared:
                if ref in self.file_keys:
                    self.fail(
                        ref_path,
                        f"must refer to a param declared earlier in the file, but got {ref!r} (declared later)",
                    )
                if ref in RUN_KEYS:
                    self.fail(ref_path, f"must refer to a model/train param, but got the run setting {ref!r}")
                self.fail(
                    ref_path,
                    f"must refer to a param declared earlier; declared so far: {list(self.declared)}, "
                    f"but got {_show(ref)}{_hint(ref, list(self.declared))}",
                )
            target = self.declared[ref]
            many = isinstance(allowed, list)
            values = allowed if many else [allowed]
            if not values:
                self.fail(ref_path, "must list at least one value, but got []")
            coerced: list[Any] = []
            for i, value in enumerate(values):
                value_path = f"{ref_path}[{i}]" if many else ref_path
                canon = _canon(self._value(target.section, ref, value, value_path))
                if not _possible(target, canon):
                    self.fail(
                        value_path, f"{ref} can never take this value ({_describe(target)}), but got {_show(value)}"
                    )
                coerced.append(canon)
            out[ref] = tuple(coerced)
        return out

    # --------------------------------------------------------------------------------------------- layers

    def _check_layers(self) -> None:
        has = {key: key in self.declared for key in ("layers", *TEMPLATE_KEYS)}
        if has["layers"] and has["depth"]:
            self.fail(
                "model.depth",
                "cannot be combined with model.layers; use either layers or the depth/units/output_dim template, "
                "but got both",
            )
        if not has["depth"]:
            for key in ("units", "output_dim"):
                if has[key]:
                    self.fail(f"model.{key}", "is part of the layer template and needs model.depth, but got no depth")
            return
        if not has["output_dim"]:
            self.fail("model.output_dim", "is required with depth (it is the last layer), but got no output_dim")
        max_depth = _max_value(self.declared["depth"])
        if max_depth > 1 and not has["units"]:
            self.fail(
                "model.units",
                f"is required when depth can exceed 1 (it gives units_0 … units_{max_depth - 2}), "
                f"but got depth up to {max_depth} and no units",
            )


# ------------------------------------------------------------------------------------------------ sampling


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace) -> TrialConfig:
    """Sample a config define-by-run: entries in file order, inactive ``when`` entries not suggested.

    Args:
        trial: the trial to suggest on (an ``optuna.Trial`` or ``FrozenTrial``/``FixedTrial``).
        space: a validated space.

    Returns:
        The trial's config; unsampled fields keep their ``ModelConfig``/``TrainConfig`` defaults.
    """
    return _build(space, lambda name, distribution: _suggest_one(trial, name, distribution))


def config_from_params(space: SearchSpace, params: Mapping[str, Any]) -> TrialConfig:
    """Rebuild the config a trial of ``space`` used from its params (e.g. ``study.best_trial.params``).

    Raises:
        SearchSpaceError: an active param is missing from ``params`` or outside its distribution (the trial
            probably belongs to a study created with another space).
    """

    def pick(name: str, distribution: BaseDistribution) -> Any:
        if name not in params:
            raise SearchSpaceError(
                f"{space.path}: {name}: missing from the trial's params (was the study created with another "
                f"search space?), but got params {sorted(params)}"
            )
        value = params[name]
        reason = _outside(distribution, value)
        if reason is not None:
            raise SearchSpaceError(
                f"{space.path}: {name}: {reason} (was the study created with another search space?), "
                f"but got {_show(value)}"
            )
        return value

    return _build(space, pick)


def _suggest_one(trial: optuna.trial.BaseTrial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"unsupported distribution {distribution!r}")


def _build(space: SearchSpace, pick: Callable[[str, BaseDistribution], Any]) -> TrialConfig:
    """Walk the entries in order, taking each active value from ``pick`` or the fixed value, and build the config."""
    values: dict[str, Any] = {}
    seen: set[str] = set()
    units = space.entry("units")
    units_done = not space.uses_template
    for spec in space.entries:
        seen.add(spec.name)
        if spec.name != "units" and _active(spec.when, values):
            values[spec.name] = spec.value if spec.distribution is None else pick(spec.name, spec.distribution)
        if not units_done and "depth" in values and (units is None or "units" in seen):
            for i in range(int(values["depth"]) - 1):
                name = f"units_{i}"
                assert units is not None  # validated: units exists whenever depth can exceed 1
                values[name] = units.value if units.distribution is None else pick(name, units.distribution)
            units_done = True
    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for spec in space.entries:
        if spec.name not in TEMPLATE_KEYS and spec.name in values:
            sections[spec.section][spec.name] = values[spec.name]
    if space.uses_template:
        hidden = [values[f"units_{i}"] for i in range(int(values["depth"]) - 1)]
        sections["model"]["layers"] = [*hidden, values["output_dim"]]
    try:
        return TrialConfig.from_dict(sections, source=space.path)
    except ConfigError as exc:
        raise SearchSpaceError(str(exc)) from None


def _active(when: Mapping[str, tuple[Any, ...]], values: Mapping[str, Any]) -> bool:
    return all(ref in values and any(_same(_canon(values[ref]), v) for v in allowed) for ref, allowed in when.items())


# ------------------------------------------------------------------------------------------------ baselines


def baseline_params(space: SearchSpace) -> tuple[list[dict[str, Any]], list[str]]:
    """The TFRS tutorial's three configs as params of ``space``, for ``optuna_study.enqueue_trial``.

    The tutorial towers are ``[32]``, ``[64, 32]`` and ``[128, 64, 32]`` with the values of
    :data:`TUTORIAL_VALUES`. A config is admitted only when every value the tutorial fixes is possible in
    the space: equal to a fixed entry, in the choices, or inside ``[low, high]`` and on the step; a value the
    space does not declare (or whose entry is inactive) must equal the config default. Params the tutorial
    does not fix are left out (the sampler fills them in).

    Returns:
        ``(admitted, rejected)``: the admitted param dicts, and one reason per config not admitted,
        e.g. ``"[128, 64, 32]: depth=3 outside [1, 2]"``.
    """
    admitted: list[dict[str, Any]] = []
    rejected: list[str] = []
    for layers in TUTORIAL_LAYERS:
        params, problems = _baseline(space, layers)
        if problems:
            rejected.append(f"{list(layers)}: {'; '.join(problems)}")
        else:
            admitted.append(params)
    return admitted, rejected


def _baseline(space: SearchSpace, layers: tuple[int, ...]) -> tuple[dict[str, Any], list[str]]:
    targets: dict[str, Any] = dict(TUTORIAL_VALUES)
    if space.uses_template:
        targets.update(depth=len(layers), output_dim=layers[-1])
    else:
        targets["layers"] = _canon(layers)
    known: dict[str, Any] = {}  # params whose value is decided (fixed, tutorial, or default)
    sampled: set[str] = set()  # params the sampler will decide
    params: dict[str, Any] = {}
    problems: list[str] = []
    settled: set[str] = set()
    for spec in space.entries:
        if spec.name == "units":
            for i, width in enumerate(layers[:-1]):
                _admit(f"units_{i}", width, spec, params, problems)
            continue
        state = _when_state(spec.when, known, sampled)
        if spec.name not in targets:
            if state is True and spec.distribution is None:
                known[spec.name] = _canon(spec.value)
            elif state is not False:
                sampled.add(spec.name)
            continue
        target = targets[spec.name]
        if state is None:
            settled.add(spec.name)
            problems.append(f"{spec.name}={_fmt(target)} depends on params the tutorial leaves to the sampler")
        elif state is True:
            settled.add(spec.name)
            if _admit(spec.name, target, spec, params, problems):
                known[spec.name] = target
    for name, target in targets.items():
        if name in settled:
            continue
        section = "train" if name in _SECTION_KEYS["train"] else "model"
        default = _canon(getattr(_DEFAULTS[section], name))
        known[name] = default
        if not _same(default, target):
            problems.append(f"{name}={_fmt(target)} but the space keeps the default {name}={_fmt(default)}")
    return params, problems


def _admit(name: str, target: Any, spec: ParamSpec, params: dict[str, Any], problems: list[str]) -> bool:
    if spec.distribution is None:
        if _same(_canon(spec.value), target):
            return True
        problems.append(f"{name}={_fmt(target)} but the space fixes {name}={_fmt(_canon(spec.value))}")
        return False
    reason = _outside(spec.distribution, target)
    if reason is not None:
        problems.append(f"{name}={_fmt(target)} {reason}")
        return False
    params[name] = target
    return True


def _when_state(when: Mapping[str, tuple[Any, ...]], known: Mapping[str, Any], sampled: set[str]) -> bool | None:
    """True/False when the condition is decided by ``known`` values, None when it depends on sampled ones."""
    undecided = False
    for ref, allowed in when.items():
        if ref in known:
            if not any(_same(known[ref], v) for v in allowed):
                return False
        elif ref in sampled:
            undecided = True
        else:
            return False  # the referenced param is inactive
    return None if undecided else True


# ------------------------------------------------------------------------------------------------ helpers


def _field_kind(section: str, key: str) -> str:
    if key in TEMPLATE_KEYS:
        return "int"
    kind_of = field_type(type(_DEFAULTS[section]), key)  # an optional field (default None) gives its kind
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", tuple)):
        if issubclass(kind_of, types):
            return kind
    raise TypeError(f"unsupported config field {section}.{key}")  # pragma: no cover


def _canon(value: Any) -> Any:
    """Tuples (list-valued fields) as Optuna-friendly strings like ``"64-32"``; other values unchanged."""
    if isinstance(value, tuple | list):
        return "-".join(str(int(v)) for v in value)
    return value


def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse ``True`` with ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _max_value(spec: ParamSpec) -> int:
    distribution = spec.distribution
    if distribution is None:
        return int(spec.value)
    if isinstance(distribution, CategoricalDistribution):
        return int(max(distribution.choices))
    return int(distribution.high)


def _on_grid(value: float, low: float, step: float) -> bool:
    steps = (value - low) / step
    return abs(steps - round(steps)) <= 1e-9 * max(1.0, abs(steps))


def _outside(distribution: BaseDistribution, value: Any) -> str | None:
    """Why ``value`` is not a possible value of ``distribution``, or None when it is."""
    if isinstance(distribution, CategoricalDistribution):
        if any(_same(value, c) for c in distribution.choices):
            return None
        return f"not in choices {list(distribution.choices)}"
    assert isinstance(distribution, IntDistribution | FloatDistribution)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "is not a number"
    if isinstance(distribution, IntDistribution) and not float(value).is_integer():
        return "is not an int"
    low, high, step = distribution.low, distribution.high, distribution.step
    tolerance = 1e-12 * max(1.0, abs(low), abs(high))
    if not low - tolerance <= value <= high + tolerance:
        return f"outside [{low}, {high}]"
    if step is not None and not _on_grid(value, low, step):
        return f"not on the grid low={low}, step={step}"
    return None


def _possible(spec: ParamSpec, value: Any) -> bool:
    if spec.distribution is None:
        return _same(_canon(spec.value), value)
    return _outside(spec.distribution, value) is None


def _describe(spec: ParamSpec) -> str:
    distribution = spec.distribution
    if distribution is None:
        return f"it is fixed to {_show(_canon(spec.value))}"
    if isinstance(distribution, CategoricalDistribution):
        return f"its choices are {list(distribution.choices)}"
    assert isinstance(distribution, IntDistribution | FloatDistribution)
    return f"its range is [{distribution.low}, {distribution.high}]"


def _hint(word: Any, options: Iterable[str]) -> str:
    matches = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _fmt(value: Any) -> str:
    """A value for a reason text: ``"64-32"`` (a list-valued choice) reads ``[64, 32]``."""
    if isinstance(value, str) and re.fullmatch(r"\d+(-\d+)*", value):
        return f"[{', '.join(value.split('-'))}]"
    return str(value)


def _show(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (a YAML of nested anchors expands to megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value
