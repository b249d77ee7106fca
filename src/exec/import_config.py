"""Turn an experiment file of the OPTML code line (WAGLE, SOUL, Unlearn-Simple/-Smooth/-ILU) into ours.

    python src/exec/import_config.py OPTML.json > ours.json

Every key is mapped or refused with one line naming it (exit status 2, nothing printed to stdout); the
result holds the mapped keys (the others take our defaults) and is checked against our schema before it is
printed. The README's import table lists the mapping.
"""

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obliviate.cli import USER_ERROR_EXIT  # noqa: E402
from obliviate.config.loader import HELP_FLAGS, dotted_params, resolve_config  # noqa: E402
from obliviate.config.optml import import_optml, their_names  # noqa: E402
from obliviate.config.settings import nest  # noqa: E402
from obliviate.errors import UserError  # noqa: E402
from obliviate.experiment import experiment_schema  # noqa: E402
from obliviate.io import read_json_object  # noqa: E402


def checked(dotted: dict[str, Any], content: dict[str, Any], path: Path) -> None:
    """Every imported value against our schema; an error names the key of their file it came from."""
    params, names = dotted_params(experiment_schema()), their_names(content)
    for key, value in dotted.items():
        try:
            params[key].checker.check(value)
        except ValueError as reason:
            ours = f" (Obliviate's {key})" if key in names else ""
            raise UserError(f"{path}: {names.get(key, key)}={value!r} {reason}{ours}; fix it in the file") from None
    resolve_config([], dotted, experiment_schema())  # and the whole: our schema accepts every value


def main(argv: list[str]) -> int:
    try:
        if any(flag in argv for flag in HELP_FLAGS):
            print(__doc__.strip())
            return 0
        if len(argv) != 1:
            raise UserError("usage: import_config.py OPTML.json > ours.json")
        path = Path(argv[0])
        content = read_json_object(path, "OPTML experiment file", "give the file to import")
        dotted = import_optml(content)
        checked(dotted, content, path)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    imported = {"_comment": f"imported from {path} by src/exec/import_config.py", **nest(dotted)}
    print(json.dumps(imported, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
