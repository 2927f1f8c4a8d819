"""The one configuration system of every recipe (train, train_segmentation, search, extract, deploy, convert).

A recipe's settings are dataclasses that inherit `ConfigMixin`:

- `Config.from_yaml(path, overrides)` reads one YAML file of `key: value` pairs (`load_yaml_mapping`) and applies
  command-line overrides on top; `Config.from_dict(values)` builds from a mapping. Both check every key (an unknown
  key fails with the closest valid one: "did you mean 'max_steps'?") and coerce every value to its field's type
  (`coerce_value`: ints for floats, `"1e-5"` for a float since YAML reads it as a string, integral floats and
  numpy integers for ints, nested dataclasses from mappings); a value of another type fails naming the key.
- `parse_overrides(["--max_steps", "20", "--ema_decay=null"])` turns `--key value` pairs into a mapping (values
  parsed as YAML, so `--crop_scale [0.5,1.0]` and `--ema_decay null` work); dotted keys (`--data.batch_size 8`)
  reach a nested section; with a dataclass, a boolean key without a value is `true` and a list key takes several
  values (`--names a0 a1`).
- `parse_command_line(argv, options_cls, config_cls)` is what a recipe's `parse_args` calls: `--help` prints every
  key (`config_help`, generated from the dataclasses: a field's `metadata["help"]` or the comment on its line in
  the source), `--config FILE` names the YAML file, and every other `--key value` goes to the recipe's options or
  to its config.
- The environment variable `NASVIT_STEP_SCALE` (a factor in (0, 1]) scales a config's counts of steps, epochs and
  repeats (its class's `STEP_KEYS`) when it is loaded from a YAML file and a command line (`from_yaml`), so every
  documented command runs in seconds as written (the docs test sets it); unset, nothing changes.

- `check_field_ranges(config)` is the one range check of every config dataclass: each class declares
  `FIELD_RANGES = {"learning_rate": "(0, inf)", "seed": "[0, 4294967295]", ...}` (interval notation), its
  `__post_init__` calls it first, and every float field must be finite (NaN and inf are refused) whether declared or
  not. `--help` shows each declared range.

The dataclasses are the one place that documents every key: the comment on a field's line is its help text and a
`# ---- title` comment line starts a section of `--help`. A config may inherit keys from a base config (the training
recipes share `nasvit_hf.training.config.TrainingRunConfig`): they keep their help and section, and
`recipe_defaults` gives the derived config its own defaults without declaring a key twice.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import difflib
import inspect
import io
import json
import logging
import math
import numbers
import os
import re
import sys
import textwrap
import tokenize
import types
import typing
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .utils.extras import MissingExtraError

__all__ = [
    "ConfigError",
    "ConfigMixin",
    "STEP_SCALE_VARIABLE",
    "closest_key",
    "RecipeError",
    "coerce_value",
    "config_help",
    "exit_on_user_error",
    "run_recipe",
    "undo_if_the_recipe_fails",
    "field_help",
    "scale_step_counts",
    "load_yaml_mapping",
    "parse_command_line",
    "parse_overrides",
    "build_dataclass",
    "check_field_ranges",
    "checked_hints",
    "recipe_defaults",
    "recipe_keys",
    "register_recipe_keys",
    "parse_range",
    "set_dotted",
    "step_scale",
]

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or command line that cannot be used as given; the message says what to change."""


# ----------------------------------------------------------------------------------------------------------------------
# Loading and overriding
# ----------------------------------------------------------------------------------------------------------------------
def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The `key: value` mapping of a YAML config file, with clear errors for a missing file or another shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist (see recipes/configs/).")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of key: value pairs.")
    return loaded


def parse_overrides(
    arguments: list[str],
    flag_keys: typing.Iterable[str] = (),
    list_keys: typing.Iterable[str] = (),
    known_keys: typing.Iterable[str] | None = None,
) -> dict[str, Any]:
    """`["--max_steps", "20", "--ema_decay=null"]` → {"max_steps": 20, "ema_decay": None} (values parsed as YAML).

    Keys in `flag_keys` (booleans) may stand alone (`--overwrite` = true); keys in `list_keys` take every value up to
    the next `--key` (`--names a0 a1`). Dashes in keys become underscores."""
    flag_keys, list_keys = set(flag_keys), set(list_keys)
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(arguments):
        token = arguments[index]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}: settings are written --key value.")
        key, equals, raw = token[2:].partition("=")
        key = key.replace("-", "_")
        if equals:
            overrides[key] = _parse_value(raw)
            index += 1
            continue
        values = []
        while index + 1 < len(arguments) and not arguments[index + 1].startswith("--"):
            values.append(arguments[index + 1])
            index += 1
            if key not in list_keys:
                break
        index += 1
        if not values:
            if key in flag_keys:
                overrides[key] = True
                continue
            if known_keys is not None and key.split(".")[0] not in set(known_keys):
                raise ConfigError(_unknown_keys_message([key], sorted(known_keys), "the command line", "this recipe"))
            raise ConfigError(f"override --{key} needs a value (e.g. --{key} 10).")
        if key in list_keys and (len(values) > 1 or not values[0].lstrip().startswith("[")):
            overrides[key] = [_parse_value(value) for value in values]
        else:
            overrides[key] = _parse_value(values[0])
    return overrides


def _parse_value(raw: str) -> Any:
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    """`set_dotted(d, "data.batch_size", 8)` sets `d["data"]["batch_size"]` (creating the section)."""
    *sections, last = key.split(".")
    target = values
    for section in sections:
        if target.get(section) is None:
            target[section] = {}
        if not isinstance(target[section], dict):
            raise ConfigError(f"--{key}: {section!r} is not a section of keys (it holds {target[section]!r}).")
        target = target[section]
    target[last] = value


def closest_key(key: str, names: typing.Iterable[str]) -> str | None:
    """The valid key closest to a misspelt one, or None when nothing is close."""
    names = list(names)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    prefixed = [name for name in names if name.startswith(key)]  # an abbreviation: --trust for --trust_checkpoint
    return prefixed[0] if len(prefixed) == 1 else None


def _unknown_keys_message(unknown: list[str], names: list[str], source: str, owner: str) -> str:
    hints = []
    for key in unknown:
        close = closest_key(key, names)
        hints.append(f"{key!r}" + (f" (did you mean {close!r}?)" if close else ""))
    return f"{source} has unknown keys: {', '.join(hints)}. Valid keys are the fields of {owner} (--help lists them)."


# ----------------------------------------------------------------------------------------------------------------------
# Type coercion
# ----------------------------------------------------------------------------------------------------------------------
def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


# YAML 1.1 (PyYAML) reads a float written with an exponent but no dot ("1e-5", "3E4") as a string: such strings are
# floats. Other strings are not numbers: a quoted "300" in a YAML file is refused like any other type error.
_YAML_MISREAD_FLOAT = re.compile(r"^[+-]?(\d+)(\.\d*)?[eE][+-]?\d+$")


def coerce_value(key: str, value: Any, annotation: Any, source: str = "config") -> Any:
    """`value` checked against a field annotation and converted where that is lossless; a ConfigError names the key.

    float: ints, numpy numbers and exponent strings such as "1e-5" (YAML reads an exponent without a dot as a
    string; other strings are refused); int: integral floats and numpy integers; bool: only true/false (no truthy
    strings); str; list (elements coerced when the annotation says `list[int]`); dict; a nested dataclass from a
    mapping; `A | B` tries each in turn."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{source}: {key} cannot be null.")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(key, value, option, source)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        allowed = " or ".join(_type_name(option) for option in options if option is not type(None))
        raise ConfigError(f"{source}: {key} must be of type {allowed}, got {value!r}.")
    if value is None:
        raise ConfigError(f"{source}: {key} cannot be null.")
    base = origin or annotation
    if dataclasses.is_dataclass(base):
        if isinstance(value, base):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping of {base.__name__} keys, got {value!r}.")
        return build_dataclass(base, value, f"{source} [{key}]")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _YAML_MISREAD_FLOAT.match(value.strip()):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif base is list:
        if isinstance(value, (list, tuple)):
            (element,) = typing.get_args(annotation) or (Any,)
            return [coerce_value(f"{key}[{i}]", item, element, source) for i, item in enumerate(value)]
    elif base is dict:
        if isinstance(value, dict):
            return dict(value)
    elif isinstance(base, type) and isinstance(value, base):
        return value
    hint = " (quote it: YAML reads yes/no/on/off as booleans)" if base is str and isinstance(value, bool) else ""
    raise ConfigError(f"{source}: {key} must be of type {_type_name(base)}, got {value!r}{hint}.")


def build_dataclass(cls: type, values: dict[str, Any], source: str) -> Any:
    """`cls(**values)` after checking the keys (closest-key hints, required keys) and coercing each value."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source} must be a mapping of key: value pairs, got {type(values).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in values if key not in fields]
    if unknown:
        raise ConfigError(_unknown_keys_message(unknown, list(fields), source, cls.__name__))
    missing = [
        name
        for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required keys {', '.join('--' + name for name in missing)}.")
    hints = typing.get_type_hints(cls)
    clean, failures = {}, []
    for key, value in values.items():
        try:
            clean[key] = coerce_value(key, value, hints[key], source)
        except ConfigError as error:
            if _is_nested(hints[key]):
                raise
            clean[key], failures = value, [*failures, error]
    try:
        built = cls(**clean)
    except ConfigError:
        raise
    except ValueError as error:  # the class's own check, which may say more about a value of the wrong type
        raise ConfigError(f"{source}: {error}") from None
    except TypeError as error:
        if failures:
            raise failures[0] from None
        if "__init__()" not in str(error):
            raise
        raise ConfigError(f"{source}: {error}") from None
    except Exception:
        if failures:  # the class's checks stumbled on a value of the wrong type (AttributeError, ...): name the value
            raise failures[0] from None
        raise
    if failures:
        raise failures[0]
    return built


# ----------------------------------------------------------------------------------------------------------------------
# Ranges: one check for every config dataclass
# ----------------------------------------------------------------------------------------------------------------------
_RANGE = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])$")


@cache
def parse_range(spec: str) -> tuple[float, float, bool, bool]:
    """`"[0, 1)"` -> (0.0, 1.0, True, False): the bounds and whether each is included (`inf` / `-inf` allowed)."""
    match = _RANGE.match(spec.strip())
    if match is None:
        raise ValueError(f"range {spec!r} is not interval notation such as '[0, 1)' or '(0, inf)'.")
    low, high = float(match.group(2)), float(match.group(3))
    return low, high, match.group(1) == "[", match.group(4) == "]"


def in_range(value: float, spec: str) -> bool:
    low, high, low_closed, high_closed = parse_range(spec)
    above = value >= low if low_closed else value > low
    below = value <= high if high_closed else value < high
    return above and below


def check_field_ranges(config: Any) -> None:
    """Refuse a number outside its field's declared range (`FIELD_RANGES` of the config's class: {field: "[low,
    high)"}; `None` passes only where the field's annotation allows it) and any non-finite float field. A ValueError
    names the key (with the class's `CONFIG_SECTION`, e.g. `latency.num_threads`), the value and the range. Call it first in
    `__post_init__`."""
    cls = type(config)
    section = getattr(cls, "CONFIG_SECTION", "")
    prefix = f"{section}." if section else ""
    ranges = getattr(cls, "FIELD_RANGES", {})
    for f in dataclasses.fields(config):
        value, spec = getattr(config, f.name, None), ranges.get(f.name)
        if spec is not None and value is None and not _annotation_allows_none(cls, f.name):
            kind = "int" if _annotation_is_int(cls, f.name) else "float"
            raise ValueError(f"{prefix}{f.name} must be of type {kind} in {spec}, got None.")
        if spec is not None and value is not None:  # a declared number: built in Python, nothing coerced it
            kind = "int" if _annotation_is_int(cls, f.name) else "float"
            integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or (kind == "int" and not integral):
                raise ValueError(f"{prefix}{f.name} must be of type {kind} in {spec}, got {value!r}.")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{prefix}{f.name} must be a finite number, got {value!r}.")
        if spec is not None and not in_range(value, spec):
            raise ValueError(f"{prefix}{f.name} must be in {spec}, got {value!r}.")


@cache
def _annotation_is_int(cls: type, name: str) -> bool:
    annotation = typing.get_type_hints(cls)[name]
    options = (
        set(typing.get_args(annotation))
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else {annotation}
    )
    return int in options and float not in options


@cache
def _annotation_allows_none(cls: type, name: str) -> bool:
    annotation = typing.get_type_hints(cls)[name]
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _is_nested(annotation: Any) -> bool:
    """True when an annotation holds dataclasses (a section or a list of entries): those are built, not checked."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    for option in (annotation, *options):
        base = typing.get_origin(option) or option
        if dataclasses.is_dataclass(base):
            return True
        if base is list and any(dataclasses.is_dataclass(arg) for arg in typing.get_args(option)):
            return True
    return False


# ----------------------------------------------------------------------------------------------------------------------
# Documentation of every key
# ----------------------------------------------------------------------------------------------------------------------
@cache
def _class_comments(cls: type) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """({field: the comment on its line (+ continuation comment lines)}, {field: section title}, the section titles
    in order) of the fields `cls` itself declares, from its source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}, {}, []
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    tree = ast.parse(source).body[0]
    helps: dict[str, str] = {}
    sections: dict[str, str] = {}
    titles = [comment.strip("- ").strip() for _, comment in sorted(comments.items()) if comment.startswith("----")]
    section = ""
    previous_end = tree.lineno
    for node in getattr(tree, "body", []):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            previous_end = getattr(node, "end_lineno", previous_end)
            continue
        for line in range(previous_end, node.lineno):
            if comments.get(line, "").startswith("----"):
                section = comments[line].strip("- ").strip()
        name = node.target.id
        sections[name] = section
        text = [comments[node.end_lineno]] if node.end_lineno in comments else []
        line = node.end_lineno + 1
        while line in comments and lines[line - 1].strip().startswith("#") and not comments[line].startswith("----"):
            if not text:
                break  # a comment block above the next field belongs to that field's section, not to this one
            text.append(comments[line])
            line += 1
        helps[name] = " ".join(text)
        previous_end = node.end_lineno + 1
    return helps, sections, titles


@cache
def _source_comments(cls: type) -> tuple[dict[str, str], dict[str, str]]:
    """({field: help comment}, {field: section title}) of every field of `cls`, its base configs' too: a field's
    section is where it is declared first; its help, the most derived non-empty comment."""
    helps: dict[str, str] = {}
    sections: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        own_helps, own_sections, _ = _class_comments(klass)
        helps.update({name: text for name, text in own_helps.items() if text})
        for name, section in own_sections.items():
            sections.setdefault(name, section)
    return helps, sections


def field_help(cls: type) -> dict[str, str]:
    """{field name: help text}: `metadata["help"]` where given, else the comment on the field's line."""
    comments, _ = _source_comments(cls)
    return {f.name: f.metadata.get("help", comments.get(f.name, "")) for f in dataclasses.fields(cls)}


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return json.dumps(f.default, default=str)
    if f.default_factory is not dataclasses.MISSING:
        return json.dumps(f.default_factory(), default=str)
    return "required"


def _help_lines(cls: type, prefix: str = "") -> list[str]:
    """One line per key, grouped by section: in the order the config's own source names its sections, then any
    section only a base config has (a base's keys join the derived config's section of the same title)."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    _, sections = _source_comments(cls)
    init_fields = [f for f in dataclasses.fields(cls) if f.init]
    order = list(dict.fromkeys([*_class_comments(cls)[2], *(sections.get(f.name, "") for f in init_fields)]))
    init_fields.sort(key=lambda f: order.index(sections.get(f.name, "")))  # stable: field order within a section
    lines: list[str] = []
    current = None
    for f in init_fields:
        section = sections.get(f.name, "")
        if section and section != current:
            lines.append(f"  # {section}")
            current = section
        annotation = hints[f.name]
        nested = annotation if dataclasses.is_dataclass(annotation) else None
        name = f"{prefix}{f.name}"
        if nested is not None:
            lines.append(f"  --{name}.KEY  section [{f.name}]{': ' + helps[f.name] if helps[f.name] else ''}")
            lines += _help_lines(nested, prefix=f"{name}.")
            continue
        kind = str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__
        spec = getattr(cls, "FIELD_RANGES", {}).get(f.name)
        head = f"  --{name} ({kind}{', in ' + spec if spec else ''}, default {_default_text(f)})"
        lines.append(head + (f"  {helps[f.name]}" if helps[f.name] else ""))
    return lines


def config_help(cls: type, title: str | None = None) -> str:
    """Every key of a config dataclass with its type, default and help text (nested sections as dotted keys)."""
    header = title or f"{cls.__name__} keys (in the YAML file or as --key value):"
    return "\n".join([header, *_help_lines(cls)])


# ----------------------------------------------------------------------------------------------------------------------
# Scaling step counts down: every documented command as written, in seconds (NASVIT_STEP_SCALE)
# ----------------------------------------------------------------------------------------------------------------------
STEP_SCALE_VARIABLE = "NASVIT_STEP_SCALE"


def step_scale() -> float:
    """The factor `NASVIT_STEP_SCALE` sets (1.0 when unset or empty); anything but a number in (0, 1] is refused."""
    raw = os.environ.get(STEP_SCALE_VARIABLE, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not 0.0 < scale <= 1.0:
        raise ConfigError(f"{STEP_SCALE_VARIABLE}={raw!r} must be a number in (0, 1] (e.g. 0.05), or unset.")
    return scale


def _scaled_count(value: Any, scale: float, minimum: float, annotation: Any) -> Any:
    """`value * scale` (rounded up for an int field), never below `minimum` and never above `value` itself."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= minimum:
        return value
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    if float in (annotation, *options):
        return max(float(minimum), round(float(value) * scale, 6))
    return max(int(minimum), math.ceil(value * scale))


def _dotted_value(values: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of `key` in a mapping that holds it as written (`"latency.repeats"`) or nested."""
    if key in values:
        return True, values[key]
    section, _, rest = key.partition(".")
    if rest and isinstance(values.get(section), dict):
        return _dotted_value(values[section], rest)
    return False, None


def _field_of(cls: type, key: str) -> tuple[Any, Any] | None:
    """(annotation, default) of a dotted field of a config dataclass (nested sections through their defaults)."""
    name, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    if name not in fields:
        return None
    f = fields[name]
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = dataclasses.MISSING
    annotation = typing.get_type_hints(cls)[name]
    if not rest:
        return annotation, default
    return _field_of(annotation, rest) if dataclasses.is_dataclass(annotation) else None


def scale_step_counts(values: dict[str, Any], cls: type, defaults: bool = True) -> dict[str, Any]:
    """`values` (a YAML mapping, or command-line keys) with each of `cls.STEP_KEYS` ({dotted key: smallest value})
    multiplied by `NASVIT_STEP_SCALE`; with `defaults`, keys the mapping lacks are scaled from `cls`'s defaults. The
    same object when the variable is unset. Logs what it changed, so a scaled run never passes for a full one."""
    scale = step_scale()
    step_keys = getattr(cls, "STEP_KEYS", {})
    if scale == 1.0 or not step_keys:
        return values
    values = copy.deepcopy(values)
    changed = []
    for key, minimum in step_keys.items():
        field_info = _field_of(cls, key)
        annotation, default = field_info if field_info is not None else (Any, dataclasses.MISSING)
        found, value = _dotted_value(values, key)
        if not found and (not defaults or default is dataclasses.MISSING):
            continue
        value = value if found else default
        scaled = _scaled_count(value, scale, minimum, annotation)
        if scaled != value:
            if key in values:
                values[key] = scaled
            else:
                set_dotted(values, key, scaled)
            changed.append(f"{key} {value} -> {scaled}")
    if changed:
        logger.warning(
            "%s=%g scales the %s's step counts: %s", STEP_SCALE_VARIABLE, scale, cls.__name__, ", ".join(changed)
        )
    return values


# ----------------------------------------------------------------------------------------------------------------------
# The mixin every recipe config inherits
# ----------------------------------------------------------------------------------------------------------------------
class ConfigMixin:
    """`from_dict`, `from_yaml`, `to_dict`, `field_names` and `help` for a config dataclass."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    # {old key: new key} of keys renamed since a release: still read, with a FutureWarning naming the new key. A key of
    # a section is dotted (`"latency.table12_rounds": "latency.b_vs_a_rounds"`; the section keeps its name).
    RENAMED_KEYS: typing.ClassVar[dict[str, str]] = {}
    # {dotted key: smallest value} of the counts of steps, epochs and repeats that NASVIT_STEP_SCALE scales when a
    # config is loaded from its YAML file and command line (`from_yaml`; a run's recorded config is never rescaled).
    STEP_KEYS: typing.ClassVar[dict[str, float]] = {}
    # {field: "[low, high)"}: the range of each number key (`check_field_ranges`, which __post_init__ runs).
    FIELD_RANGES: typing.ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        check_field_ranges(self)  # a subclass with its own __post_init__ calls it first

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config"):
        return build_dataclass(cls, cls.rename_keys(values, source), source)

    @classmethod
    def rename_keys(cls, values: dict[str, Any], source: str = "config") -> dict[str, Any]:
        """`values` with the old names of `RENAMED_KEYS` replaced by the new ones (a FutureWarning each). A dotted
        name is found both as a flat key (a command-line override, `latency.table12_rounds`) and inside its section
        (a YAML file's `latency: {table12_rounds: 3}`)."""
        if not isinstance(values, dict):
            return values
        for old, new in cls.RENAMED_KEYS.items():
            values = _rename_key(values, old, new, source)
            section, _, leaf = old.rpartition(".")
            if section and isinstance(values.get(section), dict):
                renamed = _rename_key(values[section], leaf, new.rpartition(".")[2], source, f"{section}.")
                if renamed is not values[section]:
                    values = {**values, section: renamed}
        return values

    @classmethod
    def accepted_keys(cls) -> list[str]:
        """The top-level keys a config file may hold (the fields, their old names, any a subclass translates)."""
        return [*cls.field_names(), *cls.RENAMED_KEYS]

    @classmethod
    def check_keys(cls, values: dict[str, Any], source: str = "command-line overrides") -> None:
        """Unknown (top-level) keys fail with the closest valid key; dotted keys are checked by their section."""
        names = cls.accepted_keys()
        unknown = [key for key in values if key.split(".")[0] not in names]
        if unknown:
            raise ConfigError(_unknown_keys_message(unknown, names, source, cls.__name__))

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None):
        """The YAML file's values with `overrides` on top; errors name the file or the command line."""
        values: dict[str, Any] = {}
        if path is not None:
            loaded = cls.rename_keys(load_yaml_mapping(path), f"config file {str(path)!r}")
            cls.from_dict(loaded, source=f"config file {str(path)!r}")  # report the file's own errors by name
            values.update(loaded)
        if overrides:
            cls.check_keys(overrides)
            overrides = cls.rename_keys(overrides, "command-line overrides")
            merged = _merge(values, overrides)
            cls.from_dict(merged, source="command-line overrides")
            values = merged
        return cls.from_dict(scale_step_counts(values, cls))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> str:
        return config_help(cls)


def _rename_key(values: dict[str, Any], old: str, new: str, source: str, prefix: str = "") -> dict[str, Any]:
    """`values` with key `old` renamed `new` (a FutureWarning), or `values` itself when it does not hold `old`."""
    if old not in values:
        return values
    if new in values and values[new] != values[old]:
        raise ConfigError(
            f"{source} sets both {prefix + old!r} (the old name) and {prefix + new!r}; keep only {prefix + new!r}."
        )
    warnings.warn(
        f"{source}: key {prefix + old!r} is deprecated, it is now {prefix + new!r}.", FutureWarning, stacklevel=4
    )
    values = dict(values)
    values[new] = values.pop(old)
    return values


def recipe_defaults(**defaults: Any) -> typing.Callable[[type], type]:
    """Class decorator, written under `@dataclass`: this config's own defaults for keys a base config declares.

    The key stays declared once, in the base (its type, `--help` text, section, range and resume rule); only its
    default is this config's. `@dataclass` keeps the key at the base's position.

        @dataclass
        @recipe_defaults(learning_rate=1e-3, output_dir="outputs/segmentation_digits")
        class SegmentationTrainingConfig(TrainingRunConfig): ...
    """

    def apply(cls: type) -> type:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name, value in defaults.items():
            base = next((b for b in cls.__mro__[1:] if name in getattr(b, "__dataclass_fields__", {})), None)
            if base is None or name in annotations:
                raise TypeError(f"recipe_defaults: {cls.__name__} has no base config declaring {name!r} to default.")
            annotations[name] = typing.get_type_hints(base)[name]
            mutable = isinstance(value, (list, dict, set))
            default = dataclasses.field(default_factory=lambda v=value: copy.deepcopy(v)) if mutable else value
            setattr(cls, name, default)
        cls.__annotations__ = annotations
        return cls

    return apply


def _merge(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(values)
    for key, value in overrides.items():
        set_dotted(merged, key, value)
    return merged


# ----------------------------------------------------------------------------------------------------------------------
# A recipe's command line
# ----------------------------------------------------------------------------------------------------------------------
def _flag_and_list_keys(*classes: type | None) -> tuple[set[str], set[str]]:
    flags, lists = set(), set()
    for cls in classes:
        if cls is None:
            continue
        for name, annotation in typing.get_type_hints(cls).items():
            options = set(typing.get_args(annotation)) | {typing.get_origin(annotation) or annotation}
            if bool in options:
                flags.add(name)
            if list in options or any(typing.get_origin(o) is list for o in options):
                lists.add(name)
    return flags, lists


def _string_keys(*classes: type | None) -> set[str]:
    keys = set()
    for cls in classes:
        if cls is None:
            continue
        for name, annotation in typing.get_type_hints(cls).items():
            union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
            if annotation is str or (union and set(typing.get_args(annotation)) <= {str, type(None)}):
                keys.add(name)
    return keys


def _raw_value(argv: list[str], key: str) -> str:
    for index, token in enumerate(argv):
        name, equals, raw = token[2:].partition("=")
        if token.startswith("--") and name.replace("-", "_") == key:
            return raw if equals else argv[index + 1]
    raise KeyError(key)


def parse_command_line(
    argv: list[str] | None,
    options_cls: type | None,
    config_cls: type | None = None,
    description: str = "",
    default_config: str | Path | None = None,
):
    """Parse a recipe's command line: `--help`, `--config FILE` and `--key value` settings.

    `options_cls` holds the recipe's own settings (paths, names, flags). With `config_cls`, every other key is an
    override of that config and `(options, overrides, config_path)` is returned (the recipe loads the config when it
    knows its default file: `config_cls.from_yaml(config_path, overrides)`); the override keys are checked now.
    Without it, `--config FILE` holds options and the options are returned. Prints help and exits 0 for `--help`;
    a bad command line raises ConfigError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    register_recipe_keys(options_cls, config_cls)  # the keys the error line's hints are checked against
    if "-h" in argv or "--help" in argv:
        parts = [
            description.strip(),
            "",
            "Options:",
            "  --config FILE  a YAML file of the keys below (command-line keys win)",
        ]
        parts.append("  --debug  show the full traceback of an error (or set NASVIT_DEBUG=1)")
        if options_cls is not None:
            parts += config_help(options_cls, "").splitlines()[1:]
        if config_cls is not None:
            parts += ["", config_help(config_cls, f"Config keys ({config_cls.__name__}; YAML file or --key value):")]
        print("\n".join(parts))
        raise SystemExit(0)
    argv = [str(arg) for arg in argv]  # paths given as Path objects from Python
    flags, lists = _flag_and_list_keys(options_cls, config_cls)
    known = {"config"} | ({f.name for f in dataclasses.fields(options_cls)} if options_cls is not None else set())
    known |= set(config_cls.accepted_keys()) if config_cls is not None else set()
    values = parse_overrides(argv, flag_keys=flags, list_keys=lists, known_keys=known)
    strings = _string_keys(options_cls, config_cls)
    for key, value in list(values.items()):
        if key in strings and value is not None and not isinstance(value, str):
            values[key] = _raw_value(argv, key)  # a path or name that YAML would read as a number or a boolean
    config_path = values.pop("config", None)
    if config_path is not None:
        config_path = str(config_path)
    elif default_config is not None:
        config_path = str(default_config)
    option_names = {f.name for f in dataclasses.fields(options_cls)} if options_cls is not None else set()
    options = {key: value for key, value in values.items() if key in option_names}
    rest = {key: value for key, value in values.items() if key not in option_names}
    if config_cls is None:
        if config_path is not None:
            options = {**load_yaml_mapping(config_path), **options}
        if rest:
            names = sorted(option_names) + ["config"]
            raise ConfigError(_unknown_keys_message(sorted(rest), names, "the command line", options_cls.__name__))
        return build_dataclass(options_cls, options, "the command line")
    try:
        config_cls.check_keys(rest)
    except ConfigError:
        names = sorted(option_names | set(config_cls.accepted_keys())) + ["config"]
        unknown = [key for key in rest if key.split(".")[0] not in names]
        raise ConfigError(_unknown_keys_message(unknown, names, "the command line", config_cls.__name__)) from None
    options = build_dataclass(options_cls, options, "the command line") if options_cls is not None else None
    return options, rest, config_path


# ----------------------------------------------------------------------------------------------------------------------
# Errors: one clear line for the user, the traceback on request
# ----------------------------------------------------------------------------------------------------------------------
class RecipeError(RuntimeError):
    """A run that cannot go on for a reason the user can act on (the message says how)."""


USER_ERRORS = (ValueError, OSError, RecipeError, MissingExtraError)


def debug_enabled() -> bool:
    return os.environ.get("NASVIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


# Flags of other programs that error messages may name (`accelerate launch --multi_gpu`), the placeholder of the
# syntax (`--key value`), and every recipe's own keys.
EXTERNAL_FLAGS = frozenset({"multi_gpu", "num_processes", "quiet", "key"})
GENERIC_KEYS = frozenset({"config", "debug", "help"})
_HINT = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*)")
_recipe_keys: frozenset[str] | None = None


def recipe_keys(options_cls: type | None, config_cls: type | None = None) -> frozenset[str]:
    """Every `--key` a recipe accepts: its options, its config's keys (old names included) and their dotted nested
    keys (`data.data_dir`), and `--config`, `--debug`, `--help`."""

    def walk(cls: type, prefix: str) -> set[str]:
        keys = set()
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            keys.add(prefix + f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                keys |= walk(hints[f.name], f"{prefix}{f.name}.")
        return keys

    keys = set(GENERIC_KEYS)
    for cls in (options_cls, config_cls):
        if cls is not None:
            keys |= walk(cls, "") | set(getattr(cls, "accepted_keys", lambda: [])())
    return frozenset(keys)


def register_recipe_keys(options_cls: type | None, config_cls: type | None = None) -> None:
    """Record the running recipe's keys: `report_error` checks the hints of its error line against them."""
    global _recipe_keys
    _recipe_keys = recipe_keys(options_cls, config_cls)


def _key_known(key: str, keys: frozenset[str]) -> bool:
    # A top-level key that is a section without a dataclass (search's `calibration`) takes any dotted key.
    return key in keys or key in EXTERNAL_FLAGS or (key.split(".")[0] in keys and "." in key)


def checked_hints(message: str, keys: frozenset[str] | None = None) -> tuple[str, list[str]]:
    """`(message, unknown)`: the `--key` hints of an error message checked against a recipe's keys (default: the
    running recipe's). A hint that names a nested key by its last part (`--data_dir` where the recipe has
    `--data.data_dir`) becomes the full key when that is unambiguous; hints naming no key are listed in `unknown`
    (the tests require none)."""
    keys = _recipe_keys if keys is None else keys
    if keys is None:
        return message, []
    unknown = []

    def fix(match: re.Match) -> str:
        key = match.group(1)
        if _key_known(key, keys):
            return match.group(0)
        nested = sorted(k for k in keys if k.endswith("." + key))
        if len(nested) == 1:
            return f"--{nested[0]}"
        unknown.append(key)
        return match.group(0)

    return _HINT.sub(fix, message), unknown


def report_error(error: BaseException) -> None:
    """Print `error: <message>` (one line) to stderr, with how to see the traceback; its `--key` hints are checked
    against the running recipe's keys (`checked_hints`)."""
    message = " ".join(str(error).split()) or type(error).__name__
    message, _ = checked_hints(message)
    print(f"error: {message} (rerun with --debug or NASVIT_DEBUG=1 for the traceback)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exit_on_user_error(code: int = 2):
    """Turn a user error (`USER_ERRORS`) inside the block into one error line and `SystemExit(code)`; with
    `--debug` / NASVIT_DEBUG=1 the exception propagates with its traceback."""
    try:
        yield
    except USER_ERRORS as error:
        if debug_enabled():
            raise
        report_error(error)
        raise SystemExit(code) from None


_undo_on_failure: list[typing.Callable[[], None]] = []


def undo_if_the_recipe_fails(undo: typing.Callable[[], None]) -> typing.Callable[[], None]:
    """Register `undo` to run if the running recipe (`run_recipe`) fails, with any error or an interrupt, before the
    returned function is called (e.g. a training run's start-up writes: `TrainingRun.started()` calls it)."""
    _undo_on_failure.append(undo)

    def cancel() -> None:
        if undo in _undo_on_failure:
            _undo_on_failure.remove(undo)

    return cancel


def run_recipe(main: typing.Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """A recipe's `__main__`: `main(argv)` with user errors as one line and exit status 2 (`--debug` in argv or
    NASVIT_DEBUG=1: the traceback instead), and the undos registered with `undo_if_the_recipe_fails` run when it
    fails. Returns the exit status for `sys.exit`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv = [arg for arg in argv if arg != "--debug"]
        os.environ["NASVIT_DEBUG"] = "1"
    try:
        with exit_on_user_error():
            result = main(argv)
    except BaseException:
        for undo in reversed(_undo_on_failure):
            try:
                undo()
            except Exception as error:  # noqa: BLE001 - the recipe's own error is the one to report
                print(f"warning: could not undo the start-up writes: {error}", file=sys.stderr)
        raise
    finally:
        _undo_on_failure.clear()
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
