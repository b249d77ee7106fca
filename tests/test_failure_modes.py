"""The third reliability pass: nothing silently wrong, nothing lost, no code run from a file, and one line (not a
traceback, not the wrong advice) for every bad input, fault and interruption a new user met on the CLI."""

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import obliviate.report
from obliviate.cli import guarded, run
from obliviate.config.loader import parse_config
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.experiment import experiment_schema, run_unlearning
from obliviate.loggers.json_logger import RunFolder
from obliviate.masks.mask import ParameterMask
from obliviate.models.loading import resolve_model
from obliviate.plan import plan
from obliviate.training.finetune import FinetuneRecipe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def argv(tmp_path, cache_dir, *extra, config="ga.json"):
    return ["--config_file", str(ROOT / "configs" / "synthetic" / config), "--overall.model_name",
            "tiny-random-llama", "--overall.cache_dir", str(cache_dir), "--dataset.data_dir", str(tmp_path / "data"),
            "--logger.json.root", str(tmp_path / "results"), "--unlearn.max_steps", "2", "--finetune.max_steps", "2",
            "--eval.max_examples", "4", "--eval.metrics", "prob", "--logger.name", "run", *extra]


def unlearn(arguments) -> int:
    return run(run_unlearning, "unlearn_model.py", arguments)


def entry_point(name: str):
    """An entry point of src/exec as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "src" / "exec" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line(capsys) -> str:
    """The error line an entry point printed last (after any progress it showed), never a traceback."""
    error = capsys.readouterr().err.strip()
    assert "Traceback" not in error and error.splitlines()[-1].startswith("error: "), error
    return error.splitlines()[-1]


def run_folder(tmp_path, name="run", method="GA") -> Path:
    return tmp_path / "results" / "synthetic" / method / name


# ------------------------------------------------------------------ silently wrong, lost or unsafe
@pytest.mark.parametrize("content,named", [
    ('{"unlearn": {"lr": 1e-5, "lr": 1e-3}}', "gives the key 'lr' twice"),
    ('{"unlearn": {"lr": 1e-5}, "unlearn": {"max_steps": 3}}', "gives the key 'unlearn' twice"),
    ('{"unlearn.lr": 1e-5, "unlearn": {"lr": 1e-3}}', "'unlearn.lr' is given twice, as \"unlearn.lr\" and as"),
])
def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, capsys, content, named):
    (tmp_path / "twice.json").write_text(content)
    assert unlearn(["--config_file", str(tmp_path / "twice.json")]) == 2
    assert named in one_line(capsys)


@pytest.mark.parametrize("key,value,problem", [
    ("unlearn.task_name", "../../x", "contains a path separator"),
    ("unlearn.task_name", "/elsewhere", "contains a path separator"),
    ("unlearn.task_name", "", "is empty"),
    ("logger.name", "r" * 300, "is longer than 200 bytes"),
    ("logger.json.root", "", "is empty"),
    ("overall.cache_dir", "", "is empty"),
    ("dataset.data_dir", " ", "is empty"),
])
def test_folder_values_that_would_escape_or_misplace_the_results_are_refused(tmp_path, capsys, key, value, problem):
    assert unlearn(["--logger.json.root", str(tmp_path / "results"), f"--{key}", value]) == 2
    assert f"{key}={value!r} {problem}" in one_line(capsys)
    assert not (tmp_path / "results").exists()


def test_a_study_label_that_would_escape_is_refused_before_any_cell(tmp_path):
    from obliviate.errors import UserError
    from obliviate.study.spec import load_study

    study = {"name": "s", "results_root": str(tmp_path), "methods": {"../../x": {
        "config_file": str(ROOT / "configs" / "synthetic" / "ga.json")}}, "seeds": [0]}
    (tmp_path / "study.json").write_text(json.dumps(study))
    with pytest.raises(UserError, match=r"study method label '\.\./\.\./x' names its run folders and starts with"):
        load_study(tmp_path / "study.json", [])


def test_results_are_written_with_the_umasks_permissions(tmp_path, cache_dir):
    previous = os.umask(0o022)
    try:
        assert unlearn(argv(tmp_path, cache_dir)) == 0
    finally:
        os.umask(previous)
    for name in ("metrics.json", "config.json", "summary.md", "env.json", "per_example.json", "train_log.jsonl"):
        assert stat.S_IMODE((run_folder(tmp_path) / name).stat().st_mode) == 0o644, name
    cached = next((cache_dir / "evaluations").glob("*.json"))
    assert stat.S_IMODE(cached.stat().st_mode) == 0o644


def interrupted_at_step(monkeypatch, step: int) -> None:
    real = RunFolder.log_step

    def log_then_stop(self, record):
        real(self, record)
        if record["step"] == step:
            raise KeyboardInterrupt
    monkeypatch.setattr(RunFolder, "log_step", log_then_stop)


def stopped_run(tmp_path, cache_dir, monkeypatch) -> list[str]:
    """A run stopped after step 3 with its state saved at step 2 (as kill -9 or Ctrl-C leave it)."""
    arguments = argv(tmp_path, cache_dir, "--unlearn.max_steps", "4", "--unlearn.save_every", "2")
    interrupted_at_step(monkeypatch, 3)
    assert unlearn(arguments) == 130
    monkeypatch.undo()
    return arguments


class Marker:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "ran"))


def test_resume_refuses_a_checkpoint_holding_a_file_it_does_not_write_and_runs_no_code(tmp_path, cache_dir,
                                                                                        monkeypatch, capsys):
    import pickle

    arguments = stopped_run(tmp_path, cache_dir, monkeypatch)
    capsys.readouterr()
    checkpoint = run_folder(tmp_path, "run.failed") / "checkpoint"
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Marker(tmp_path / "marker")))
    assert unlearn([*arguments, "--logger.resume", "true"]) == 2
    assert "custom_checkpoint_0.pkl', which this engine never writes" in one_line(capsys)
    assert not (tmp_path / "marker").exists()
    assert not list(checkpoint.rglob("*.pkl"))[:-1]  # only the planted file; ours are safetensors and JSON


def test_a_truncated_checkpoint_is_one_line_on_resume(tmp_path, cache_dir, monkeypatch, capsys):
    arguments = stopped_run(tmp_path, cache_dir, monkeypatch)
    capsys.readouterr()
    shard = next((run_folder(tmp_path, "run.failed") / "checkpoint" / "state").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:40])
    assert unlearn([*arguments, "--logger.resume", "true"]) == 2
    assert "cannot be read" in one_line(capsys)


def test_saved_state_is_kept_when_the_run_is_started_again_without_resume(tmp_path, cache_dir, monkeypatch, capsys):
    arguments = stopped_run(tmp_path, cache_dir, monkeypatch)
    capsys.readouterr()
    assert unlearn(arguments) == 2
    assert "stopped after step 2 with its training state saved" in one_line(capsys)
    assert (run_folder(tmp_path, "run.failed") / "checkpoint" / "progress.json").is_file()
    assert unlearn([*arguments, "--logger.overwrite", "true"]) == 0  # the user says otherwise: start again


def test_resume_of_a_run_that_never_stopped_says_it_starts_from_the_beginning(tmp_path, cache_dir, caplog):
    assert unlearn(argv(tmp_path, cache_dir, "--logger.name", "typo", "--logger.resume", "true")) == 0
    assert "there is no stopped run named 'typo'" in caplog.text


def test_a_study_cell_is_run_again_when_its_data_changed(tmp_path, cache_dir):
    from obliviate.study.runner import run_study

    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"question": f"Who is {i}?", "answer": f"Person {i}."}) + "\n"
                              for i in range(4)))
    study = {"name": "s", "results_root": str(tmp_path / "studies"), "seeds": [0], "forget_metrics": ["prob"],
             "utility_metric": "prob",
             "methods": {"GA": {"config_file": str(ROOT / "configs" / "synthetic" / "ga.json")}},
             "overrides": {"overall.model_name": "tiny-random-llama", "overall.cache_dir": str(cache_dir),
                           "dataset.data_dir": str(tmp_path / "data"), "dataset.forget_dataset_name": str(forget),
                           "finetune.enabled": False, "unlearn.max_steps": 1, "eval.metrics": ["prob"],
                           "eval.max_examples": 4, "dataset.holdout_dataset_name": ""}}
    (tmp_path / "study.json").write_text(json.dumps(study))
    folder = run_study(tmp_path / "study.json", [])
    cell = next((folder / "runs").rglob("metrics.json")).parent
    first = json.loads((cell / "metrics.json").read_text())["after"]["forget"]["prob"]
    forget.write_text("".join(json.dumps({"question": f"Who is {i}?", "answer": f"Somebody else {i}."}) + "\n"
                              for i in range(4)))  # every answer rewritten: the same config, other data
    run_study(tmp_path / "study.json", [])
    assert json.loads((cell / "metrics.json").read_text())["after"]["forget"]["prob"] != first
    assert cell.with_name(cell.name + ".stale").is_dir()


# ------------------------------------------------------------------ a full or read-only disk: one line
def test_a_full_disk_stops_the_run_in_one_line_and_leaves_no_metrics(tmp_path, cache_dir, capsys, monkeypatch):
    real = obliviate.report.write_text_atomic

    def disk_full(path, text):
        if path.name == "summary.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)
    monkeypatch.setattr(obliviate.report, "write_text_atomic", disk_full)
    assert unlearn(argv(tmp_path, cache_dir)) == 1
    error = one_line(capsys)
    assert "summary.md': the disk is full" in error
    failed = run_folder(tmp_path, "run.failed")
    assert (failed / "failure.json").is_file() and not (failed / "metrics.json").exists()


def test_a_checkpoint_that_cannot_be_written_is_one_line(tmp_path, cache_dir, capsys, monkeypatch):
    import obliviate.training.checkpoint as checkpoint

    def read_only(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: Read-only file system (os error 30)")
    monkeypatch.setattr(checkpoint, "save_file", read_only)
    assert unlearn(argv(tmp_path, cache_dir, "--unlearn.save_every", "1")) == 1
    assert "the file system is read-only" in one_line(capsys)


def test_a_results_root_that_cannot_be_created_is_one_line(tmp_path, capsys, monkeypatch):
    real = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "results" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert unlearn(["--logger.json.root", str(tmp_path / "results" / "deep"), "--eval.before", "false",
                    "--finetune.enabled", "false", "--eval.metrics", "prob"]) != 0
    assert "read-only" in one_line(capsys).lower()


def test_two_runs_needing_the_same_uncached_target_fine_tune_it_once(tmp_path, cache_dir, monkeypatch):
    settings = parse_config(argv(tmp_path, cache_dir, "--finetune.enabled", "true"), experiment_schema())
    planned = plan(settings)
    built = []
    real = FinetuneRecipe._build

    def counted(self, *args):
        built.append(self.folder)
        real(self, *args)
    monkeypatch.setattr(FinetuneRecipe, "_build", counted)
    from accelerate import Accelerator

    sources, accelerator = [], Accelerator(cpu=True)
    threads = [threading.Thread(target=lambda: sources.append(planned.models.build(
        planned.models.target, "target", accelerator))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and sources[0] == sources[1]
    assert not list((cache_dir / "finetuned").glob("*.incomplete"))


# ------------------------------------------------------------------ studies: Ctrl-C and cells already running
def write_one_cell_study(tmp_path: Path, cache_dir: Path) -> None:
    """study.json: GA on the tiny model, one seed, one cell."""
    spec = {"name": "s", "results_root": str(tmp_path / "studies"), "seeds": [0], "forget_metrics": ["prob"],
            "utility_metric": "prob",
            "methods": {"GA": {"config_file": str(ROOT / "configs" / "synthetic" / "ga.json")}},
            "overrides": {"overall.model_name": "tiny-random-llama", "overall.cache_dir": str(cache_dir),
                          "dataset.data_dir": str(tmp_path / "data"), "finetune.enabled": False,
                          "eval.metrics": ["prob"]}}
    (tmp_path / "study.json").write_text(json.dumps(spec))

def test_ctrl_c_during_a_study_is_one_line_and_status_130(tmp_path, cache_dir, capsys, monkeypatch):
    import obliviate.study.runner as runner

    study = entry_point("study").study

    def interrupted(settings):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run_unlearning", interrupted)
    write_one_cell_study(tmp_path, cache_dir)
    assert guarded(lambda: study(["--config_file", str(tmp_path / "study.json")])) == 130
    assert "interrupted in cell 1/1" in one_line(capsys)


def test_a_cell_another_study_is_running_is_one_line_without_a_traceback(tmp_path, cache_dir, caplog, monkeypatch):
    import obliviate.study.runner as runner
    from obliviate.errors import UserError

    def running(settings):
        raise UserError("run 'x' is running now (process 1 owns it); choose another --logger.name or wait")
    monkeypatch.setattr(runner, "run_unlearning", running)
    write_one_cell_study(tmp_path, cache_dir)
    with pytest.raises(UserError, match="1 study cells failed"):
        runner.run_study(tmp_path / "study.json", [])
    assert "is running now" in caplog.text and "Traceback" not in caplog.text


# ------------------------------------------------------------------ silent where a user wants a word
def test_a_collapsed_model_is_reported_in_the_summary_and_the_metrics(tmp_path, cache_dir):
    assert unlearn(argv(tmp_path, cache_dir, "--unlearn.lr", "1e6", "--unlearn.max_steps", "3")) == 0
    metrics = json.loads((run_folder(tmp_path) / "metrics.json").read_text())
    assert any("the gradient is exactly zero" in line for line in metrics["warnings"])
    assert "## Warnings" in (run_folder(tmp_path) / "summary.md").read_text()


def test_float16_on_cpu_that_overflows_gets_the_advice_that_helps(tmp_path, cache_dir, capsys):
    assert unlearn(argv(tmp_path, cache_dir, "--overall.dtype", "float16", "--finetune.enabled", "false",
                        "--unlearn.max_steps", "5", "--unlearn.lr", "1e-2")) == 1
    assert "use --overall.dtype float32" in one_line(capsys)


def test_answers_cut_by_max_length_are_counted_and_reported(tmp_path, cache_dir):
    assert unlearn(argv(tmp_path, cache_dir, "--dataset.max_length", "24", "--finetune.enabled", "false")) == 0
    warnings = json.loads((run_folder(tmp_path) / "metrics.json").read_text())["warnings"]
    assert any("examples of 'forget' are longer than dataset.max_length 24" in line for line in warnings)


def test_no_metrics_with_evaluations_on_is_refused(tmp_path, capsys):
    assert unlearn(["--logger.json.root", str(tmp_path / "results"), "--eval.metrics", ""]) == 2
    assert "eval.metrics is empty" in one_line(capsys)


def test_make_mask_keeps_an_existing_mask_and_a_foreign_mask_is_named(tmp_path, cache_dir, capsys, caplog):
    from obliviate.models.loading import parameter_shapes

    existing = tmp_path / "mask.safetensors"
    shapes = parameter_shapes(resolve_model("tiny-random-llama"), cache_dir)
    ParameterMask({name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()},
                  {"model": "folder:another"}).save(existing)
    assert run(entry_point("make_mask").build, "make_mask.py", argv(tmp_path, cache_dir, "--mask.out",
                                                                    str(existing))) == 2
    assert "pass --mask.overwrite true to replace it" in one_line(capsys)
    plan(parse_config(argv(tmp_path, cache_dir, "--unlearn.mask_path", str(existing)), experiment_schema()))
    assert "was made for the model folder:another" in caplog.text


def test_a_run_from_another_folder_says_where_relative_paths_go(tmp_path, cache_dir, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    settings = parse_config(["--overall.model_name", "tiny-random-llama", "--overall.cache_dir", str(cache_dir),
                             "--finetune.enabled", "false", "--eval.metrics", "prob"], experiment_schema())
    warnings = plan(settings).warnings
    assert any("relative to the working directory" in line and str(tmp_path / "files" / "results") in line
               for line in warnings)


def test_a_restored_run_config_warns_about_no_other_methods_section(tmp_path, cache_dir, caplog):
    assert unlearn(argv(tmp_path, cache_dir)) == 0
    saved = json.loads((run_folder(tmp_path) / "config.json").read_text())
    assert set(k for k, v in saved["unlearn"].items() if isinstance(v, dict)) <= {"GA"}
    caplog.clear()
    plan(parse_config(["--config_file", str(run_folder(tmp_path) / "config.json")], experiment_schema()))
    assert "set but not used" not in caplog.text


def test_import_config_help_and_their_key_in_value_errors(tmp_path, capsys):
    module = entry_point("import_config")
    assert module.main(["--help"]) == 0 and "OPTML" in capsys.readouterr().out
    optml = {"overall": {"model_name": "tiny-random-llama"}, "unlearn": {"unlearn_method": "GA", "lr": "fast"},
             "dataset": {"forget_dataset_name": "Tofu_forget10", "retain_dataset_name": "Tofu_retain90"}}
    (tmp_path / "optml.json").write_text(json.dumps(optml))
    assert module.main([str(tmp_path / "optml.json")]) == 2
    assert "unlearn.lr='fast' must be a number" in one_line(capsys)


def test_examples_for_the_count_of_cut_answers_are_counted_by_their_tokens(tokenizer):
    from obliviate.data.tokenize import truncated_answers

    short, long, text = Example("Who?", "Ada."), Example("Who?", " ".join(["word"] * 50)), Example("", "w " * 50)
    assert text.is_text  # a plain text is cut by design: not counted
    assert truncated_answers(tokenizer, [short, long, text], PromptFormat(), 16) == 1


def test_a_target_from_the_retain_model_builds_the_retain_model_first_and_trains_on_forget_and_replay(
        tmp_path, cache_dir):
    """finetune.target_from retain: the target's recipe starts from the retain model's (built first, once), on the
    forget set plus as many retain examples; its cache key differs from the base-started target's."""
    import json

    from accelerate import Accelerator

    common = ("--finetune.enabled", "true", "--dataset.forget_dataset_name", "synthetic:forget05",
              "--dataset.retain_dataset_name", "synthetic:retain95")
    from_base = plan(parse_config(argv(tmp_path, cache_dir, *common), experiment_schema())).models
    planned = plan(parse_config(argv(tmp_path, cache_dir, *common, "--finetune.target_from", "retain"),
                                experiment_schema())).models
    target, retain = planned.target, planned.retain
    assert target.start is retain and target.base == retain.source
    assert target.source != from_base.target.source and retain.source == from_base.retain.source
    assert len(target.examples) == 20  # 10 forget + 10 replayed retain examples
    assert {e.question for e in target.examples} <= {e.question for e in from_base.target.examples}
    retain_questions = {e.question for e in retain.examples}
    assert sum(e.question in retain_questions for e in target.examples) == 10
    planned.build(target, "target", Accelerator(cpu=True))
    assert retain.is_built and target.is_built
    recipe = json.loads((target.folder / "recipe.json").read_text())
    assert recipe["base"] == retain.source.identity and recipe["num_examples"] == 20
