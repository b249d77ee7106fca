"""The study runner on tiny-random-llama: cells, table, plots, skipping finished cells, resuming after an
interruption (also one inside an attack), and bad study files failing before any work."""

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import obliviate.unlearner
from obliviate.errors import UserError
from obliviate.study.report import with_control
from obliviate.study.results import FinishedCell, selected_settings
from obliviate.study.runner import StudyFailed, run_study
from obliviate.study.spec import load_study, selection_rule

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def study_file(tmp_path, cache_dir):
    def write(**changes) -> Path:
        study = {
            "_comment": "two methods x two attacks x one seed, seconds each",
            "name": "tiny",
            "results_root": str(tmp_path / "studies"),
            "overrides": {"overall.model_name": "tiny-random-llama", "overall.cache_dir": str(cache_dir),
                          "dataset.data_dir": str(tmp_path / "data"), "unlearn.max_steps": 2,
                          "finetune.max_steps": 2, "eval.max_examples": 4, "eval.max_new_tokens": 4,
                          "eval.metrics": ["prob", "rouge_l_recall"], "attack.eval_every": 1},
            "methods": {"NPO": {"config_file": str(ROOT / "configs/synthetic/npo.json")},
                        "GA(fast)": {"config_file": str(ROOT / "configs/synthetic/ga.json"), "unlearn.lr": 1e-4}},
            "attacks": {"math": {"datasets": "synthetic:math_train", "test_datasets": "synthetic:math_test",
                                 "max_steps": 2, "num_examples": 8, "lr": 1e-3},
                        "relearn": {"datasets": "relearn", "max_steps": 3, "lr": 1e-3, "num_examples": 2}},
            "seeds": [0],
        }
        study.update(changes)
        path = tmp_path / "study.json"
        path.write_text(json.dumps(study))
        return path
    return write


def read_rows(folder: Path) -> list[dict]:
    with (folder / "study.csv").open() as stream:
        return list(csv.DictReader(stream))


def test_study_runs_each_cell_once_and_writes_table_and_plots(study_file, tmp_path):
    folder = run_study(study_file(compare=[["GA(fast)", "NPO"]]), [])
    assert folder == tmp_path / "studies" / "tiny"
    rows = read_rows(folder)
    assert [(r["method"], r["attack"]) for r in rows] == [("NPO", "math"), ("NPO", "relearn"),
                                                         ("GA(fast)", "math"), ("GA(fast)", "relearn")]
    assert {"forget.prob.before", "forget.prob.after", "forget.prob.attacked", "forget.prob.worst", "recovered.prob",
            "retain.prob.after", "task.exact_match.end", "seconds.unlearn"} <= set(rows[0])
    # the table is read from the cells' own results: recovered = (attacked - after) / (before - after)
    run, = (folder / "runs" / "synthetic" / "GA").glob("GA_fast_seed0_*")  # named by its config's hash
    metrics = json.loads((run / "metrics.json").read_text())
    curve = json.loads((run / "attacks.json").read_text())["relearn"]
    assert [p["step"] for p in curve] == [0, 1, 2, 3]
    before, after = metrics["before"]["forget"]["prob"], metrics["after"]["forget"]["prob"]
    attacked = curve[-1]["forget"]["prob"]
    assert float(rows[3]["recovered.prob"]) == pytest.approx((attacked - after) / (before - after), rel=1e-6)
    assert float(rows[3]["forget.prob.worst"]) == pytest.approx(max(p["forget"]["prob"] for p in curve), rel=1e-6)
    assert rows[2]["task.exact_match.end"] != "" and rows[3]["task.exact_match.end"] == ""
    # relearning on 2 of the 4 evaluated forget examples: the other 2 are also evaluated, as forget_unseen
    assert all(set(p["forget_unseen"]) == {"prob", "rouge_l_recall"} for p in curve)
    assert float(rows[3]["forget_unseen.prob.attacked"]) == pytest.approx(curve[-1]["forget_unseen"]["prob"], rel=1e-6)
    assert rows[2]["forget_unseen.prob.attacked"] == ""
    # each cell's command line is recorded and reproduces it as a normal experiment
    cells = json.loads((folder / "study.json").read_text())["cells"]
    assert cells[1]["command"].startswith("python src/exec/unlearn_model.py --config_file")
    assert "--unlearn.lr 0.0001" in cells[1]["command"] and "--overall.seed 0" in cells[1]["command"]
    assert (folder / "forget_vs_attack_steps.png").stat().st_size > 0 and (folder / "tradeoff.png").stat().st_size > 0
    assert "## Mean over seeds" in (folder / "study.md").read_text()
    # the paired comparison: the difference of recovered shares and their ratio (one seed: an interval of one point)
    ga, npo = float(rows[3]["recovered.prob"]), float(rows[1]["recovered.prob"])
    ratio = f"{ga / npo:.3g}" if npo > 0 else "undefined: NPO recovered ≤ 0 in a resample"
    assert (f"| GA(fast) − NPO | relearn | recovered.prob | 1 | {ga - npo:.4g} | {ratio} |"
            in (folder / "study.md").read_text())
    assert rows[0]["forget.n"] == "4" and "–" in rows[0]["forget.prob.after.ci95"]  # over the 4 forget examples
    assert "| GA(fast) − NPO | math | forget.prob.after | 1 |" in (folder / "study.md").read_text()

    finished = {p: p.stat().st_mtime_ns for p in (folder / "runs").rglob("metrics.json")}
    run_study(study_file(), [])  # all done: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in (folder / "runs").rglob("metrics.json")} == finished


def test_interrupted_grid_study_resumes_with_the_unfinished_cell(study_file, tmp_path, monkeypatch):
    real_attacks = obliviate.unlearner.run_attacks
    calls = []

    def interrupted_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second cell, during its attacks
        return real_attacks(*args, **kwargs)

    monkeypatch.setattr(obliviate.unlearner, "run_attacks", interrupted_second_time)
    grid = {"NPO": {"config_file": str(ROOT / "configs/synthetic/npo.json")},
            "GA(fast)": {"config_file": str(ROOT / "configs/synthetic/ga.json"), "unlearn.lr": [1e-4, 1e-3]}}
    with pytest.raises(KeyboardInterrupt):
        run_study(study_file(methods=grid), [])
    runs = tmp_path / "studies" / "tiny" / "runs" / "synthetic"
    first, = (runs / "NPO").glob("NPO_seed0_*")
    assert [p.suffix for p in (runs / "GA").iterdir()] == [".failed"]  # the interrupted cell, marked failed
    done_at = (first / "metrics.json").stat().st_mtime_ns

    run_study(study_file(methods=grid), [])
    assert (first / "metrics.json").stat().st_mtime_ns == done_at  # finished cell skipped
    # the .failed one replaced, and the grid's other setting run
    assert [(p / "attacks.json").is_file() for p in (runs / "GA").iterdir()] == [True, True]
    assert not list(runs.rglob("*.incomplete"))
    assert len(read_rows(tmp_path / "studies" / "tiny")) == 6


def test_a_failing_cell_does_not_stop_the_others(study_file, tmp_path, monkeypatch):
    real_unlearn = obliviate.unlearner.Unlearner._unlearn

    def fail_for_npo(self, *args):
        if self.plan.method.name == "NPO":
            raise RuntimeError("diverged")
        return real_unlearn(self, *args)

    monkeypatch.setattr(obliviate.unlearner.Unlearner, "_unlearn", fail_for_npo)
    with pytest.raises(StudyFailed, match=r"1 study cells failed \(NPO seed 0\)"):
        run_study(study_file(), [])
    assert [r["method"] for r in read_rows(tmp_path / "studies" / "tiny")] == ["GA(fast)", "GA(fast)"]


@pytest.mark.parametrize("changes,message", [
    ({"method": {}}, "unknown key 'method' in study file .*; did you mean 'methods'"),
    ({"seeds": [0, -1]}, "study 'seeds' must be a non-empty list of non-negative integers"),
    ({"methods": {"NPO": {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lrr": 1}}},
     "study method 'NPO': unknown key 'unlearn.lrr' .*did you mean 'unlearn.lr'"),
    ({"attacks": {"math": {"datasets": "synthetic:math_train", "steps": 3}}},
     "study attack 'math' has unknown key 'steps'"),
    ({"attacks": {"math": {"datasets": "synthetic:maths_train"}}}, "unknown synthetic split 'maths_train'"),
    ({"forget_metrics": ["truth_ratio"]}, "study reports truth_ratio but method 'NPO' does not compute it"),
    ({"overrides": {"logger.overwrite": True}}, "logger.overwrite would redo finished study cells"),
    ({"seeds": [0, 1, 0]}, r"study 'seeds' repeats \[0\]; each seed is one independent run"),
    ({"methods": {"NPO": {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lr": []}}},
     "study method 'NPO': the grid of 'unlearn.lr' is an empty list"),
    ({"methods": {"NPO": {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lrr": [1e-5, 1e-4]}}},
     "unknown key 'unlearn.lrr'"),
    ({"selection": {"metric": "forget.truth_ratio", "goal": "min"}},
     "study 'selection' reads forget.truth_ratio, which method 'NPO' does not compute"),
    ({"selection": {"metric": "forget.prob", "goal": "min", "constraint": "model.model_utility>=0.95"}},
     "study 'selection' reads model.model_utility, which method 'NPO' does not compute"),
    ({"selection": {"metric": "forget.prob", "goal": "closest"}}, "goal 'closest' needs a numeric 'value'"),
    ({"selection": {"metric": "forget.prob", "goal": "best"}}, "goal 'best' is not max, min or closest"),
    ({"compare": [["NPO", "SimNPO"]]}, "study 'compare' names 'SimNPO', which is not a method of the study"),
    ({"control": "Target"}, "study 'control' names 'Target', which is not a method of the study"),
    ({"control": "NPO"}, r"study 'control' method 'NPO' unlearns \(unlearn.lr 3e-05, unlearn.max_steps 2, .*give it "
                         r"\"unlearn.lr\": 0 and \"unlearn.max_steps\": 1"),
    ({"methods": {"T": {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lr": 0}}, "control": "T"},
     r"study 'control' method 'T' unlearns \(unlearn.lr 0, unlearn.max_steps 2"),
    ({"methods": {"T": {"config_file": str(ROOT / "configs/synthetic/uld.json"), "unlearn.lr": 0,
                        "unlearn.max_steps": 1}}, "control": "T"}, "study 'control' method 'T' is ULD"),
    ({"methods": {"RMU": {"config_file": str(ROOT / "configs/synthetic/rmu.json")}}},
     r"study method 'RMU' \(seed 0\): unlearn.RMU.layer 7 / trained_layers \[5, 6, 7\] reach beyond the model's 2"),
])
def test_bad_study_files_fail_before_any_work(study_file, tmp_path, changes, message):
    with pytest.raises(UserError, match=message):
        run_study(study_file(**changes), [])
    assert not (tmp_path / "studies").exists()


def test_the_control_is_the_target_attacked_and_recovery_is_also_read_against_it(study_file):
    target = {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lr": 0, "unlearn.max_steps": 1}
    methods = {"NPO": {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lr": 1e-3},
               "Target": target}
    folder = run_study(study_file(methods=methods, control="Target"), [])
    rows = {(r["method"], r["attack"]): r for r in read_rows(folder)}
    control = rows[("Target", "math")]
    assert control["forget.prob.after"] == control["forget.prob.before"]  # lr 0: the target's weights, unchanged
    assert control["recovered_vs_control.prob"] == ""
    for attack in ("math", "relearn"):
        row, attacked = rows[("NPO", attack)], float(rows[("Target", attack)]["forget.prob.attacked"])
        after = float(row["forget.prob.after"])
        expected = (float(row["forget.prob.attacked"]) - after) / (attacked - after) if attacked > after else None
        value = row["recovered_vs_control.prob"]
        assert (value == "") if expected is None else float(value) == pytest.approx(expected, rel=1e-6)
    assert rows[("NPO", "relearn")]["recovered_vs_control.prob"] != ""  # relearning raises the control's forget prob


def test_recovery_against_the_control_on_a_hand_made_table(study_file):
    study = replace(load_study(study_file(), []), control="Target", forget_metrics=["forget_quality", "prob"])

    def row(method, seed, after, attacked):
        return {"method": method, "seed": seed, "attack": "math", "forget.forget_quality.after": after,
                "forget.forget_quality.attacked": attacked, "recovered.forget_quality": 0.5, "retain.prob.after": 0.9}
    rows = with_control(study, [row("Target", 0, 1e-8, 1e-4), row("NPO", 0, 0.5, 0.1), row("NPO", 1, 0.5, 0.1),
                                row("Target", 2, 1e-8, 0.6), row("NPO", 2, 0.5, 0.4)])
    # forget quality: lower means more knowledge; (0.1 - 0.5) / (1e-4 - 0.5) = 0.8 of the gap closed
    assert rows[1]["recovered_vs_control.forget_quality"] == pytest.approx(0.4 / (0.5 - 1e-4))
    assert list(rows[1])[5:7] == ["recovered.forget_quality", "recovered_vs_control.forget_quality"]
    assert rows[2]["recovered_vs_control.forget_quality"] is None  # seed 1 has no control cell
    assert rows[4]["recovered_vs_control.forget_quality"] is None  # the attack left the target no more than NPO
    assert rows[0]["recovered.forget_quality"] is None and rows[0]["recovered_vs_control.forget_quality"] is None


def test_cells_are_keyed_by_their_resolved_config_and_the_root_is_the_studys(study_file):
    names = [cell.folder.name for cell in load_study(study_file(), []).cells]
    again = [cell.folder.name for cell in load_study(study_file(), []).cells]
    changed = [cell.folder.name for cell in load_study(study_file(), ["--unlearn.lr", "3e-4"]).cells]
    assert names == again and all(a != b for a, b in zip(names, changed)) and names[0].startswith("NPO_seed0_")
    with pytest.raises(UserError, match="logger.json.root is set by the study"):
        load_study(study_file(), ["--logger.json.root", "/tmp/elsewhere"])


def test_study_command_line_overrides_every_cell(study_file):
    study = load_study(study_file(), ["--unlearn.max_steps", "5"])
    assert [cell.settings.unlearn.max_steps for cell in study.cells] == [5, 5]
    assert study.cells[1].settings.unlearn.lr == 1e-4 and study.cells[1].settings.attack.lr == [1e-3, 1e-3]
    assert study.cells[0].settings.attack.test_datasets == ["synthetic:math_test", ""]


def test_study_entry_point_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "src/exec/study.py"), "--config_file",
                             str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: study file '{tmp_path / 'missing.json'}' does not exist; pass an " \
                                    "existing JSON file to --config_file"


def test_a_grid_is_the_cartesian_product_of_list_values_of_single_value_keys(study_file):
    npo = {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lr": [1e-5, 1e-4],
           "unlearn.NPO.beta": [0.1, 0.5], "eval.metrics": ["prob", "rouge_l_recall"]}  # a list key's one value
    rmu = {"config_file": str(ROOT / "configs/synthetic/rmu.json"), "unlearn.RMU.layer": 1,
           "unlearn.RMU.trained_layers": [[0], [0, 1]]}  # a list of lists: a grid of a list key
    study = load_study(study_file(methods={"NPO": npo, "RMU": rmu}, attacks={}), [])
    assert [(c.method, c.setting) for c in study.cells] == [
        ("NPO", "unlearn.lr=1e-05, unlearn.NPO.beta=0.1"), ("NPO", "unlearn.lr=1e-05, unlearn.NPO.beta=0.5"),
        ("NPO", "unlearn.lr=0.0001, unlearn.NPO.beta=0.1"), ("NPO", "unlearn.lr=0.0001, unlearn.NPO.beta=0.5"),
        ("RMU", "unlearn.RMU.trained_layers=[0]"), ("RMU", "unlearn.RMU.trained_layers=[0, 1]")]
    assert study.cells[2].settings.unlearn.lr == 1e-4 and study.cells[2].settings.method("NPO")["beta"] == 0.1
    assert study.cells[5].settings.method("RMU")["trained_layers"] == [0, 1]
    assert all(c.settings.eval.metrics == ["prob", "rouge_l_recall"] for c in study.cells[:4])
    assert len({c.folder for c in study.cells}) == 6 and study.cells[0].label.startswith("NPO [unlearn.lr=1e-05")


def cell(setting, forget_quality, utility):
    before = {"forget": {"forget_quality": 1e-5}, "model": {"model_utility": 0.5}}
    return FinishedCell(method="NPO", setting=setting, seed=0, label=f"NPO [{setting}]", metrics={
        "before": before, "after": {"forget": {"forget_quality": forget_quality}, "model": {"model_utility": utility}}})


def test_selection_takes_the_seed_mean_of_each_setting_and_applies_the_rule(study_file):
    study = load_study(study_file(), [])
    cells = [cell("lr=1", 0.9, 0.40), cell("lr=1", 0.7, 0.42),  # best forget quality, but utility < 0.95 × 0.5
             cell("lr=2", 0.3, 0.49), cell("lr=2", 0.5, 0.50),  # mean 0.4, utility 0.495: eligible
             cell("lr=3", 0.2, 0.50), cell("lr=3", 0.2, 0.50)]
    rule = {"metric": "forget.forget_quality", "goal": "max", "constraint": "model.model_utility>=0.95"}
    choose = lambda **spec: selected_settings(replace(study, selection=selection_rule(spec)), cells)["NPO"]  # noqa: E731
    assert choose(**rule) == "lr=2"
    assert choose(metric="forget.forget_quality", goal="max") == "lr=1"
    assert choose(metric="forget.forget_quality", goal="closest", value=0.25) == "lr=3"  # matched forgetting
    assert choose(**{**rule, "constraint": "model.model_utility>=1.01"}) is None


def test_a_study_with_a_grid_reports_the_selected_setting_under_its_rule(study_file):
    npo = {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lr": [1e-5, 1e-3]}
    folder = run_study(study_file(methods={"NPO": npo}, attacks={}, selection={"metric": "forget.prob",
                                                                               "goal": "min"}), [])
    rows = read_rows(folder)
    assert [r["setting"] for r in rows] == ["unlearn.lr=1e-05", "unlearn.lr=0.001"]
    lowest = min(rows, key=lambda r: float(r["forget.prob.after"]))["setting"]
    report = (folder / "study.md").read_text()
    assert "## Selected setting per method" in report and "Rule: min forget.prob" in report
    selected = report.split("## Selected setting per method")[1].split("## Every cell")[0]
    assert lowest in selected and sum(setting in selected for setting in ("=1e-05", "=0.001")) == 1
    assert "## Mean over seeds" not in report  # every setting only with show_all_settings
    # a second study takes each method's selected setting from the first: NPO runs at the chosen lr
    stage = json.loads((folder.parent.parent / "study.json").read_text())
    second = folder.parent.parent / "verdict.json"
    second.write_text(json.dumps({**stage, "name": "verdict", "selection": None, "seeds": [1, 2],
                                  "selected_in": str(folder.parent.parent / "study.json"),
                                  "methods": {"NPO": {"config_file": npo["config_file"]},
                                              "GA": {"config_file": str(ROOT / "configs/synthetic/ga.json")}}}))
    verdict = load_study(second, [])
    chosen_lr = float(lowest.split("=")[1])
    assert [(c.method, c.settings.unlearn.lr) for c in verdict.cells] == [("NPO", chosen_lr)] * 2 + [("GA", 3e-5)] * 2
    assert verdict.cells[0].setting == "" and f"--unlearn.lr {chosen_lr}" in " ".join(verdict.cells[0].command)
    clashing = {**json.loads(second.read_text()), "methods": {"NPO": {**npo, "unlearn.lr": 1e-4}}}
    second.write_text(json.dumps(clashing))
    with pytest.raises(UserError, match="study method 'NPO' sets unlearn.lr and also takes it from the setting"):
        load_study(second, [])
    (folder.parent.parent / "study.json").write_text(json.dumps({**stage, "selection": {
        "metric": "forget.prob", "goal": "min", "constraint": "retain.prob>=2"}}))  # no setting can meet it
    second.write_text(json.dumps({**clashing, "methods": {"NPO": {"config_file": npo["config_file"]}}}))
    with pytest.raises(UserError, match="no setting of NPO meets the rule .*; widen its grid or relax the rule"):
        load_study(second, [])


def test_selected_in_needs_the_selection_study_run_first(study_file, tmp_path):
    npo = {"config_file": str(ROOT / "configs/synthetic/npo.json"), "unlearn.lr": [1e-5, 1e-3]}
    stage = study_file(methods={"NPO": npo}, attacks={}, selection={"metric": "forget.prob", "goal": "min"})
    second = tmp_path / "verdict.json"
    second.write_text(json.dumps({**json.loads(stage.read_text()), "name": "verdict", "selection": None,
                                  "selected_in": str(stage), "methods": {"NPO": {"config_file": npo["config_file"]}}}))
    with pytest.raises(UserError, match=f"has unfinished cells of NPO; run it first .*: python src/exec/study.py "
                                        f"--config_file {stage}"):
        load_study(second, [])
    no_rule = {**json.loads(second.read_text()), "selected_in": str(second)}
    second.write_text(json.dumps(no_rule))
    with pytest.raises(UserError, match="which has no 'selection' rule; add one there"):
        load_study(second, [])
    second.write_text(json.dumps({**no_rule, "selected_in": str(tmp_path / "missing.json")}))
    with pytest.raises(UserError, match="must name an existing study file .*; fix the path"):
        load_study(second, [])
