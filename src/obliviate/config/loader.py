"""Parse ``--config_file`` JSON files and dotted command-line overrides into validated :class:`Settings`.

Built on fastargs (its ``Config``/``Section``/``Param`` hold the declarations and values), with the
measured defects of fastargs 1.2.0 kept away from users (README, "Fastargs"):

* ``--config_file``, ``--config-file`` and ``-C`` all name a config file (repeatable, applied in order);
* precedence: defaults < files (in order) < command line; ``null`` in a file means "the default" (it also
  undoes an earlier file's value, as the OPTML code line's configs read); environment variables never
  override anything;
* unknown keys, in a file or on the command line, are errors naming the closest valid key;
* values are checked by strict checkers whose message names the key, the value and what is allowed;
* all errors are reported at once, in one :class:`ConfigError`, before anything else happens.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastargs import Config, Param, Section

from obliviate.config.checkers import BoolValue
from obliviate.config.settings import Settings
from obliviate.config.spec import Schema
from obliviate.errors import ConfigError
from obliviate.io import flatten, read_json_object

CONFIG_FILE_FLAGS = ("--config_file", "--config-file", "-C")
HELP_FLAGS = ("--help", "-h")


class HelpRequested(Exception):
    """Raised by :func:`parse_config` when ``--help`` is given; carries the help text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _read_config_file(path: str) -> dict[str, Any]:
    content = read_json_object(Path(path), "config file", "pass an existing JSON file to --config_file", ConfigError)
    try:  # keys starting with "_" are comments (JSON has none of its own)
        return flatten(content, error=ValueError)
    except ValueError as twice:
        raise ConfigError(f"config file '{path}': {twice}") from None


def split_argv(argv: list[str], schema: Schema) -> tuple[list[str], dict[str, str], bool]:
    """Config files, ``--section.key value`` overrides (as strings) and whether help was asked for."""
    bool_keys = {f"{section}.{key}" for section, spec in schema.items() for key, param in spec.params.items()
                 if isinstance(param.checker, BoolValue)}
    files: list[str] = []
    overrides: dict[str, str] = {}
    wants_help = False
    position = 0
    while position < len(argv):
        token = argv[position]
        name, has_inline, inline = token.partition("=")
        position += 1
        if token in HELP_FLAGS:
            wants_help = True
            continue
        if not token.startswith("-"):
            raise ConfigError(f"unexpected argument '{token}'; overrides look like --section.key value")
        if has_inline:
            value = inline
        elif position < len(argv) and not argv[position].startswith("--"):
            value = argv[position]
            position += 1
        elif name.lstrip("-") in bool_keys:
            value = "true"  # a bare boolean key means true
        else:
            raise ConfigError(f"{name} needs a value, e.g. {name} VALUE")
        if name in CONFIG_FILE_FLAGS:
            files.append(value)
        elif name.startswith("--"):
            overrides[name[2:]] = value
        else:
            raise ConfigError(f"unknown option '{name}'; overrides look like --section.key value")
    return files, overrides, wants_help


def _unknown_key_errors(keys: Iterable[str], valid: set[str], where: str) -> list[str]:
    errors = []
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else "run with --help to list the keys"
            errors.append(f"unknown key '{key}' ({where}); {hint}")
    return errors


def build_fastargs_config(schema: Schema) -> Config:
    """A fresh fastargs Config holding the schema (never the process-global one)."""
    config = Config()
    for name, spec in schema.items():
        Section(name, spec.description, config_descriptor=config).params(**spec.params)
    return config


def parse_config(argv: list[str], schema: Schema, prog: str = "obliviate") -> Settings:
    """Resolve defaults, config files and overrides from ``argv``; raise ConfigError listing every problem."""
    files, overrides, wants_help = split_argv(argv, schema)
    if wants_help:
        raise HelpRequested(format_help(schema, prog))
    return resolve_config(files, overrides, schema)


def dotted_params(schema: Schema) -> dict[str, Param]:
    """Every parameter of ``schema`` by its dotted key (``unlearn.lr``)."""
    return {f"{section}.{key}": param for section, spec in schema.items() for key, param in spec.params.items()}


def resolve_config(files: list[str], overrides: dict[str, Any], schema: Schema) -> Settings:
    """Defaults < each config file in order (``null`` = back to the default) < ``overrides`` (dotted keys; values
    as typed JSON or as command-line strings); raise ConfigError listing every problem."""
    params = dotted_params(schema)
    errors: list[str] = []
    values: dict[str, Any] = {}
    for path in files:
        content = _read_config_file(path)
        errors += _unknown_key_errors(content, set(params), f"in {path}")
        for key, value in content.items():
            if key in params:
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
    errors += _unknown_key_errors(overrides, set(params), "on the command line")
    values.update({k: v for k, v in overrides.items() if k in params})

    config = build_fastargs_config(schema)
    config.collect(values)
    invalid = config.validate(mode="errordict")
    for path in invalid:
        dotted = ".".join(path)
        raw = config.content.get(path)
        try:
            params[dotted].checker.check(raw)
            reason = "is invalid"
        except ValueError as error:
            reason = str(error)
        errors.append(f"{dotted}={raw!r} {reason}")
    if errors:
        count = f"{len(errors)} config errors: " if len(errors) > 1 else ""
        raise ConfigError(count + "; ".join(errors))
    return Settings({dotted: config[dotted] for dotted in params}, frozenset(values))


def format_help(schema: Schema, prog: str) -> str:
    """Plain-text help (no terminal escape codes): every section and key with type, default, description."""
    lines = [
        f"usage: {prog} [--config_file FILE ...] [--SECTION.KEY VALUE ...]",
        "",
        "Values come from the defaults, then each --config_file (JSON, nested sections or dotted keys;",
        "null means the default), then the command line. Booleans take true/false/1/0; lists take a JSON",
        "list or comma-separated values.",
    ]
    for name, spec in schema.items():
        lines += ["", f"[{name}] {spec.description}"]
        for key, param in spec.params.items():
            default = json.dumps(param.default)
            lines.append(f"  --{name}.{key}  ({param.checker.help()}; default {default})")
            lines.append(f"      {param.desc}")
    return "\n".join(lines) + "\n"
