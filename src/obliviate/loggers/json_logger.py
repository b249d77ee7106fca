"""The run folder: ``<root>/<task>/<method>/<run-name>/``.

While a run works, everything goes to ``<run-name>.incomplete/``; only a run that finishes is renamed to
``<run-name>/``, so a results folder is always complete. A run that stops (a non-finite loss, Ctrl-C,
SIGTERM) is renamed to ``<run-name>.failed/`` with ``failure.json`` saying why; no ``metrics.json`` is
written for it. An existing run folder is never replaced unless ``logger.overwrite`` is true, and that is
checked before any long work.

Claiming is atomic: under an exclusive lock on the method folder, a run checks the finished folder, and an
``.incomplete`` folder whose owner (``owner.json``: host and process id) is still alive makes it stop with
a one-line error; one left by a dead run is removed. So two runs started with the same name at once cannot
both proceed, and neither deletes the other's work.

Files: ``config.json`` (the resolved config; ``--config_file`` on it reproduces the run),
``train_log.jsonl`` (one line per logged step), ``metrics.json``, ``per_example.json``, ``env.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from obliviate.config.checkers import folder_name_problem
from obliviate.errors import Interrupted, NonFiniteStep, RunFailed, UserError
from obliviate.io import exclusive_lock, finite_or_null, flatten, write_json_atomic, write_text_atomic
from obliviate.loggers.trackers import TensorBoardTracker, Tracker, WandbTracker, check_trackers, scalars
from obliviate.registry import Registry

logger = logging.getLogger(__name__)
LOGGERS: Registry[type] = Registry("logger")
OWNER_FILE = "owner.json"
CHECKPOINT = "checkpoint"  # the resumable training state (unlearn.save_every), removed when the run finishes
TRAIN_LOG, ATTACK_LOG = "train_log.jsonl", "attack_train_log.jsonl"
STAGE_EVALUATION = "{}_evaluation.json"  # a finished stage of a sequence, until the run finishes
PROGRESS = "progress.json"  # in the checkpoint: the step it was saved at
RESULT_FILES = ("metrics.json", "per_example.json", "summary.md", "env.json")  # what only a finished run has
# keys that may differ on resuming (the checkpoint itself refuses an accumulation that changes the examples per step)
RESUME_FREE = {"logger.resume", "logger.tensorboard", "logger.wandb", "overall.sharding",
               "unlearn.gradient_accumulation_steps"}



def saved_step(checkpoint: Path) -> int | None:
    """The step of the training state saved in a run's ``checkpoint`` folder, if there is one (a save interrupted
    while swapping counts from its old copy)."""
    for candidate in (checkpoint, checkpoint.with_name(checkpoint.name + ".old")):
        if (candidate / PROGRESS).is_file():
            return int(json.loads((candidate / PROGRESS).read_text())["step"])
    return None


def owner_alive(work: Path) -> int | None:
    """The process id of the live process on this host that owns ``work``, if there is one."""
    try:
        owner = json.loads((work / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if owner.get("host") != socket.gethostname():
        return int(owner.get("pid", 0)) or None  # another machine's: assume it is alive
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass
    return int(owner["pid"])


def writable_folder(root: Path, key: str) -> None:
    """Create ``root`` if needed; a one-line error if it is a file or cannot be written."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{key} '{root}' is a file, not a folder; name a folder for the results") from None
    except PermissionError:
        raise UserError(f"{key} '{root}' cannot be created (permission denied); name a writable folder") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"{key} '{root}' is not writable; name a writable folder for the results")


def _record(line: str) -> dict[str, Any] | None:
    """A log line's record; None for a line torn by a kill during its write (or an empty one)."""
    try:
        return json.loads(line)
    except ValueError:
        return None


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Where a run's folder goes (``<root>/<task>/<kind>/<name>``; ``kind`` is the method, or ``evaluations``) and
    how it is claimed and tracked."""

    root: Path
    task: str
    kind: str
    name: str = ""  # empty: a UTC timestamp
    overwrite: bool = False
    tensorboard: bool = False
    wandb: bool = False
    resume: bool = False


@LOGGERS.register("json")
class RunFolder:
    """Writes one run's results as JSON files under the results root."""

    def __init__(self, options: RunOptions) -> None:
        if options.resume and not options.name:
            raise UserError("logger.resume needs the logger.name of the run to continue; give --logger.name")
        name = options.name or datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S")
        self.resume, self.resumed = options.resume, False
        check_trackers(options.tensorboard, options.wandb)
        self.wanted = (options.tensorboard, options.wandb)
        self.trackers: list[Tracker] = []
        for key, value in (("unlearn.task_name", options.task), ("logger.name", name)):
            if problem := folder_name_problem(value):
                raise UserError(f"{key} '{value}' {problem}; it names a folder of the results: give a plain name")
        writable_folder(options.root, "logger.json.root")
        self.final = self.location(options.root, options.task, options.kind, name)
        self.overwrite = options.overwrite
        self._check_final()
        self.work = self.final.with_name(name + ".incomplete")
        self.failed = self.final.with_name(name + ".failed")

    def _check_final(self) -> None:
        if self.final.exists() and not self.overwrite:
            raise UserError(f"run folder '{self.final}' already exists; choose another --logger.name "
                            "or pass --logger.overwrite true")

    @staticmethod
    def location(root: Path, task: str, method: str, run_name: str) -> Path:
        """The finished run folder of a run (``run_name`` given)."""
        return root / task / method / run_name

    def start(self, config: dict[str, Any]) -> None:
        """Claim the work folder (see the module docstring) and write the config."""
        self.work.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.work.parent):
            self._check_final()
            if self.work.exists() and (pid := owner_alive(self.work)) is not None:
                raise UserError(f"run '{self.final.name}' is running now (process {pid} owns '{self.work}'); "
                                "choose another --logger.name or wait for it to end")
            stopped = next((folder for folder in (self.work, self.failed) if folder.exists()), None)
            if self.resume and stopped is not None:
                self._continue(stopped, config)
            else:
                self._start_afresh(stopped)
            write_json_atomic(self.work / OWNER_FILE, {"host": socket.gethostname(), "pid": os.getpid()})
        self.write_json("config.json", config)
        tensorboard, use_wandb = self.wanted
        if tensorboard:
            self.trackers.append(TensorBoardTracker(self.work / "tensorboard", config))
        if use_wandb:
            self.trackers.append(WandbTracker(self.work, config, self.final.parent.parent.name, self.final.name))

    def _start_afresh(self, stopped: Path | None) -> None:
        """A new work folder, after an earlier attempt's (a dead run's work, a failed run's record) unless it saved
        training state that would be lost: that needs --logger.resume true, or --logger.overwrite true to drop it."""
        step = saved_step(stopped / CHECKPOINT) if stopped is not None else None
        if step is not None and not self.overwrite:
            raise UserError(f"run '{self.final.name}' stopped after step {step} with its training state saved in "
                            f"'{stopped}'; continue it with --logger.resume true, or start it again with "
                            "--logger.overwrite true (the saved state is then deleted)")
        if self.resume:
            logger.warning("logger.resume: there is no stopped run named '%s' in '%s'; it starts from the beginning",
                           self.final.name, self.final.parent)
        for folder in (self.work, self.failed):
            shutil.rmtree(folder, ignore_errors=True)
        self.work.mkdir()

    def _continue(self, stopped: Path, config: dict[str, Any]) -> None:
        """Reuse a stopped run's folder (logger.resume) if its config is this one."""
        previous = flatten(json.loads((stopped / "config.json").read_text()))
        current = flatten(config)
        if differing := sorted(k for k in previous.keys() | current.keys()
                               if k not in RESUME_FREE and previous.get(k) != current.get(k)):
            key = differing[0]
            raise UserError(f"logger.resume: the stopped run '{stopped}' had {key}={previous.get(key)!r}, this "
                            f"command {current.get(key)!r}; rerun with its config, or drop --logger.resume")
        if stopped == self.failed:
            stopped.rename(self.work)
        (self.work / "failure.json").unlink(missing_ok=True)
        self.resumed = True

    def truncate_logs(self, saved: int | None, restarted: tuple[str, ...] = ()) -> None:
        """Resuming from the state saved after step ``saved`` (None: no state, the run starts again): drop every
        log record written after it, and the whole of the ``restarted`` logs (those of stages that run again from
        their start), so that records written again are not doubled."""
        for path in self.work.glob("*.jsonl"):
            last = -1 if saved is None or path.name in restarted else saved
            self.filter_log(path.name, lambda record, last=last: record.get("step", 0) <= last)

    def filter_log(self, name: str, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Keep only the records of the log ``name`` that ``keep`` accepts (e.g. none after the saved state a run
        resumes from, which it writes again); a line torn by a kill during its write is dropped."""
        path = self.path(name)
        if path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if (record := _record(line)) is not None and keep(record)]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def path(self, name: str) -> Path:
        return self.work / name

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path(name), data)

    def write_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Named tensors as safetensors (e.g. RMU's control vectors, ``artifacts.safetensors``)."""
        save_file({key: value.contiguous().cpu() for key, value in tensors.items()}, str(self.path(name)))

    def log_step(self, record: dict[str, Any]) -> None:
        self.append_jsonl(TRAIN_LOG, record)

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        """One line of ``name``; with trackers, its numbers as scalars at the record's step."""
        with self.path(name).open("a") as stream:
            stream.write(json.dumps(finite_or_null(record)) + "\n")
        prefix = Path(name).stem + (f"/{record['attack']}" if "attack" in record else "")
        self.track(scalars(record, prefix), int(record.get("step", 0)))

    def track(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step)

    def track_curves(self, name: str, curves: dict[str, list[dict[str, Any]]]) -> None:
        """Curves of points (e.g. attacks.json: attack → [{step, forget: {...}}]) as scalars."""
        for label, points in curves.items():
            for point in points:
                self.track(scalars(point, f"{name}/{label}"), int(point["step"]))

    def _release(self, destination: Path) -> Path:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
        with exclusive_lock(self.work.parent):
            (self.work / OWNER_FILE).unlink(missing_ok=True)
            if destination.exists():
                shutil.rmtree(destination)  # a finished folder only with overwrite (checked in start)
            self.work.rename(destination)
        return destination

    def finish(self) -> Path:
        for state in self.work.glob(f"{CHECKPOINT}*"):  # training states (of a sequence's stages too): not needed
            shutil.rmtree(state, ignore_errors=True)
        for evaluation in self.work.glob(STAGE_EVALUATION.format("*")):  # in metrics.json by now
            evaluation.unlink()
        return self._release(self.final)

    def fail(self, reason: str, details: dict[str, Any]) -> Path:
        """Mark the run failed: ``failure.json`` (unless the disk refuses even that) and the folder renamed to
        ``<name>.failed``; results written before the failure are removed (a failed run has no metrics.json)."""
        for name in RESULT_FILES:
            self.path(name).unlink(missing_ok=True)
        try:
            self.write_json("failure.json", {"reason": reason, **details})
        except OSError as error:
            logger.warning("could not write failure.json in '%s': %s", self.work, error)
        return self._release(self.failed)

    @contextlib.contextmanager
    def marked_failed_on_stop(self, saved_point: Callable[[], str | None], advice: str) -> Iterator[None]:
        """A run that stops (non-finite step, Ctrl-C/SIGTERM, any error) leaves ``<name>.failed/`` with
        ``failure.json``, never a folder that looks finished; the error is re-raised as one line saying how to go
        on (``saved_point``: where the resumable state saved so far stands, e.g. "step 4", if there is one;
        ``advice``: what to change after a non-finite step)."""
        try:
            yield
        except NonFiniteStep as failure:
            folder = self.fail(str(failure), {"step": failure.step, "logs": failure.logs})
            raise RunFailed(f"{failure}; the run stopped and its logs are in '{folder}' (no metrics.json); "
                            f"{advice}, then rerun") from None
        except KeyboardInterrupt:
            saved = saved_point()
            folder = self.fail("interrupted", {"saved": saved})
            again = (f"rerun the same command with --logger.name {self.final.name} --logger.resume true to continue "
                     f"after {saved}" if saved is not None else "rerun the same command to start again")
            raise Interrupted(f"interrupted; the partial run (logs, no metrics.json) is in '{folder}'; {again}"
                              ) from None
        except BaseException as error:
            self.fail(type(error).__name__, {"message": str(error)})
            raise
