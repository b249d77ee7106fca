"""compare_runs: rows from finished run folders; unfinished folders are rejected."""

import json

import pytest

from obliviate.comparison import comparison_rows, to_csv, to_markdown, write_comparison
from obliviate.errors import UserError


def fake_run(folder, method, mask, forget_prob, seconds):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"unlearn": {"unlearn_method": method, "mask_path": mask}}))
    (folder / "metrics.json").write_text(json.dumps({"after": {"forget": {"prob": forget_prob},
                                                               "retain": {"prob": 0.9}}}))
    (folder / "env.json").write_text(json.dumps({"wall_time_seconds": {"unlearn": seconds, "total": seconds + 1}}))
    return folder


def test_rows_table_and_files(tmp_path):
    runs = [fake_run(tmp_path / "a", "NPO", "", 0.25, 10.0),
            fake_run(tmp_path / "b", "NPO", "mask/s_0.8.safetensors", 0.5, 12.0)]
    columns, rows = comparison_rows(runs)
    assert columns == ["run", "label", "forget.prob", "retain.prob", "seconds.unlearn", "seconds.total"]
    assert [r["label"] for r in rows] == ["NPO", "NPO + mask s_0.8"]
    assert to_csv(columns, rows).splitlines()[1] == "a,NPO,0.25,0.9,10.0,11.0"
    assert "| b | NPO + mask s_0.8 | 0.5 | 0.9 | 12 | 13 |" in to_markdown(columns, rows)
    write_comparison(runs, tmp_path / "out" / "cmp")
    assert all((tmp_path / "out" / f"cmp.{suffix}").is_file() for suffix in ("csv", "md", "png"))


def test_unfinished_run_is_rejected(tmp_path):
    (tmp_path / "x.incomplete").mkdir()
    with pytest.raises(UserError, match="is not a finished run folder"):
        comparison_rows([tmp_path / "x.incomplete"])
