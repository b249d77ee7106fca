"""Where examples come from: a dataset name in a config resolves to a list of :class:`Example`.

Accepted names (``dataset.forget_dataset_name`` and friends):

* ``synthetic:<split>``: the project's own benchmark (see :mod:`obliviate.data.synthetic`), written
  once under ``<data_dir>/synthetic/<version>/`` and read from there;
* a local ``.json`` (a list of records) or ``.jsonl`` file, in TOFU, WMDP or text layout;
* a hub dataset id ``owner/name[:config][@split]`` (split defaults to ``train``, or the only split),
  e.g. ``locuslab/TOFU:forget10`` or ``cais/wmdp:wmdp-bio@test``. Offline, a hub id that is not in the
  local cache is an error that says how to point at a local copy.

Any name may end with a slice ``[start:stop]`` of its records (Python's, 0-based; either bound may be left out),
e.g. ``synthetic:forget10[0:5]``: the forget sets of a sequence (``unlearn.sequence``) cut from one data set.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from obliviate.data import synthetic
from obliviate.data.examples import Example, example_from_record
from obliviate.errors import UserError
from obliviate.hub import hub_offline

SYNTHETIC_PREFIX = "synthetic:"
LOCAL_SUFFIXES = (".json", ".jsonl")
SLICE = re.compile(r"^(?P<name>.+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def synthetic_file(split: str, data_dir: Path) -> Path:
    """The JSONL file of a synthetic split, generated on first use."""
    if split not in synthetic.split_names():
        raise UserError(f"unknown synthetic split '{split}'; valid: {', '.join(synthetic.split_names())}")
    folder = data_dir / "synthetic" / synthetic.BENCHMARK_VERSION
    if not (folder / f"{split}.jsonl").is_file():
        synthetic.write_benchmark(folder)
    return folder / f"{split}.jsonl"


def _read_local(path: Path, name: str) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"dataset file '{name}' is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    if path.suffix == ".jsonl":
        return [_json_line(line, number, name) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"dataset file '{name}' is not valid JSON (line {error.lineno}): {error.msg}") from None
    if isinstance(content, dict) and len(content) == 1 and isinstance(next(iter(content.values())), list):
        content = next(iter(content.values()))  # {"data": [...]}
    if not isinstance(content, list):
        raise UserError(f"dataset file '{name}' must hold a list of records (or be JSON Lines)")
    return content


def _json_line(line: str, number: int, name: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"dataset file '{name}' line {number} is not valid JSON ({error.msg}); fix that line") from None


def _read_hub(name: str) -> list[dict]:
    identifier, _, split = name.partition("@")
    repo, _, subset = identifier.partition(":")
    import datasets  # heavy: only for hub ids

    try:
        loaded = datasets.load_dataset(repo, subset or None)
    except Exception as error:  # the hub raises many types; all mean "cannot get it"
        where = ("the hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if hub_offline()
                 else str(error).splitlines()[0])
        raise UserError(f"cannot load hub dataset '{name}': {where}; download it where the hub is reachable, "
                        "export it to JSON Lines and pass the file path instead") from None
    if not split:
        split = "train" if "train" in loaded else (next(iter(loaded)) if len(loaded) == 1 else "")
    if split not in loaded:
        raise UserError(f"hub dataset '{name}' has splits {list(loaded)}; choose one with '@<split>'")
    rows = loaded[split]
    label = rows.features.get("label")
    names = {"label_choices": list(label.names)} if isinstance(label, datasets.ClassLabel) else {}
    return [{**row, **names} for row in rows]


def load_examples(name: str, data_dir: Path) -> list[Example]:
    """Resolve a dataset name (see the module docstring) and return its examples (never empty)."""
    if cut := SLICE.match(name):
        whole = load_examples(cut["name"], data_dir)
        part = whole[slice(*(int(bound) if bound else None for bound in (cut["start"], cut["stop"])))]
        if not part:
            raise UserError(f"dataset '{name}' is empty: '{cut['name']}' has {len(whole)} records; choose a slice "
                            "within them")
        return part
    if name.startswith(SYNTHETIC_PREFIX):
        records = _read_local(synthetic_file(name[len(SYNTHETIC_PREFIX):], data_dir), name)
    elif Path(name).is_file():
        records = _read_local(Path(name), name)
    elif name.endswith(LOCAL_SUFFIXES) or name.startswith((".", "/")) or "/" not in name:
        raise UserError(f"dataset '{name}' not found: give an existing .json/.jsonl file, "
                        f"'synthetic:<split>' or a hub id 'owner/name[:config][@split]'")
    else:
        records = _read_hub(name)
    if not records:
        raise UserError(f"dataset '{name}' is empty; give a dataset with at least one record")
    return [example_from_record(record, f"{name}, record {number}") for number, record in enumerate(records, 1)]
