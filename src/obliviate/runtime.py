"""Where a run runs: its processes and its run folder.

:meth:`Runtime.start` makes the accelerator (one process, or several under ``accelerate launch``/``torchrun``),
checks that the plan runs on that many processes, and lets the main process claim the run folder (only it
writes; the others learn where it is, to read checkpoints from it). The runtime also knows what a stop leaves
behind (:meth:`Runtime.stopping`) and where a resumed run's training state is (:meth:`Runtime.checkpointing`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, broadcast_object_list

from obliviate.errors import Interrupted
from obliviate.evaluation.results import Evaluation
from obliviate.loggers import LOGGERS, RunFolder
from obliviate.loggers.json_logger import ATTACK_LOG, CHECKPOINT, STAGE_EVALUATION, TRAIN_LOG, saved_step
from obliviate.plan import ExperimentPlan
from obliviate.training.checkpoint import Checkpointing, check_folder

logger = logging.getLogger(__name__)
# How long a process waits for the others at a collective (a step's gradient reduction, a gathered evaluation): a
# process that fails makes the launcher stop the others at once; a desync fails after this long instead of hanging.
# OBLIVIATE_PROCESS_TIMEOUT (seconds) sets it (the tests use minutes).
PROCESS_GROUP_TIMEOUT = timedelta(seconds=float(os.environ.get("OBLIVIATE_PROCESS_TIMEOUT", 6 * 3600)))
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)
RESTARTED_ON_RESUME = (ATTACK_LOG,)  # logs of what a resumed run does again from its start: the attacks


@dataclass
class Runtime:
    accelerator: Accelerator
    folder: RunFolder | None  # the main process's; None on the others
    work: Path  # the run folder being written (every process knows it)
    resumed: bool  # the run continues a stopped one (logger.resume)
    advice: str  # what to change when a training step is not finite

    @property
    def main(self) -> bool:
        return self.folder is not None

    @property
    def writes(self) -> Path | None:
        """The run folder this process writes into: the main process's; None on the others."""
        return self.folder.work if self.folder is not None else None

    @classmethod
    def start(cls, plan: ExperimentPlan) -> "Runtime":
        accelerator = Accelerator(cpu=plan.models.device.type == "cpu",
                                  kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)])
        plan.check_processes(accelerator.num_processes, accelerator.distributed_type in SHARDED)
        folder = LOGGERS.get(plan.output.logger)(plan.output.folder) if accelerator.is_main_process else None
        if folder is not None:
            folder.start(plan.output.config)
        shared = [(folder.work, folder.resumed) if folder else None]
        if accelerator.num_processes > 1:
            broadcast_object_list(shared)
        work, resumed = shared[0]
        if resumed and (checkpoint := work / CHECKPOINT).is_dir():
            check_folder(checkpoint)  # before any model loads: a foreign file is refused, nothing of it read
        return cls(accelerator, folder, work, resumed, plan.nonfinite_advice)

    def per_process(self, **values: float) -> list[dict[str, float]]:
        """``values`` of every process, in rank order (every process calls it): e.g. each one's peak memory."""
        everyone = [dict(values)]
        if self.accelerator.num_processes > 1:
            everyone = [{} for _ in range(self.accelerator.num_processes)]
            dist.all_gather_object(everyone, dict(values))
        return everyone

    def saved_point(self) -> str | None:
        """Where the newest resumable state stands: "step 4", or "step 2 of stage_2" in a sequence; None without."""
        if (step := saved_step(self.work / CHECKPOINT)) is not None:
            return f"step {step}"
        stages = sorted((path for path in self.work.glob(f"{CHECKPOINT}_stage_*") if path.name[-1].isdigit()),
                        key=lambda path: int(path.name.rpartition("_")[2]))
        found = [(path.name.removeprefix(f"{CHECKPOINT}_"), saved_step(path)) for path in stages]  # stage_<k>
        return next((f"step {step} of {stage}" for stage, step in reversed(found) if step is not None), None)

    @contextlib.contextmanager
    def stopping(self) -> Iterator[None]:
        """The main process marks a run that stops as failed (the run folder says how); the others only say so."""
        if self.folder is not None:
            with self.folder.marked_failed_on_stop(self.saved_point, self.advice):
                yield
            return
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted (process {self.accelerator.process_index}; the main process says "
                              "what is left on disk)") from None

    def finished_stages(self, names: list[str]) -> int:
        """How many of the sequence's first stages a resumed run finished: each has its evaluation written, and the
        last of them its saved state (its weights; without unlearn.save_every there is none, and the sequence starts
        again). The logs of the stages that run again are cut back (see :meth:`stage_log`)."""
        count = 0
        if self.resumed:
            while count < len(names) and (self.work / STAGE_EVALUATION.format(names[count])).is_file():
                count += 1
            if count and saved_step(self.stage_state(names[count - 1])) is None:
                count = 0
        shared = [count]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(shared)
        if self.folder is not None and self.resumed:
            for name in RESTARTED_ON_RESUME:
                self.folder.filter_log(name, lambda record: False)
        return shared[0]

    def stage_state(self, name: str) -> Path:
        """The folder of a sequence stage's saved training state."""
        return self.work / f"{CHECKPOINT}_{name}"

    def stage_checkpointing(self, name: str, every: int) -> Checkpointing | None:
        """A sequence stage's own saved state (``checkpoint_<stage>``), resumed when it exists."""
        if not every:
            return None
        checkpoint = Checkpointing(self.stage_state(name), every, False)
        return replace(checkpoint, resume=self.resumed and checkpoint.saved_step() is not None)

    def stage_log(self, number: int, checkpoint: Checkpointing | None) -> Callable[[dict], None]:
        """Where stage ``number`` of a sequence logs its steps: train_log.jsonl, each record with its stage. Its
        records after its saved state, and any of later stages, are dropped first (they are written again)."""
        if self.folder is None:
            return lambda record: None
        saved = (checkpoint.saved_step() if checkpoint is not None and checkpoint.resume else None) or 0
        self.folder.filter_log(TRAIN_LOG, lambda record: record.get("stage", 0) < number or (
            record.get("stage") == number and record.get("step", 0) <= saved))
        folder = self.folder
        return lambda record: folder.append_jsonl(TRAIN_LOG, {"stage": number, **record})

    def stage_evaluation(self, name: str) -> Evaluation:
        """The evaluation a finished sequence stage wrote."""
        return Evaluation.from_dict(json.loads((self.work / STAGE_EVALUATION.format(name)).read_text()))

    def finish_stage(self, name: str, evaluation: Evaluation, previous: str | None) -> None:
        """Write the stage's evaluation; the previous stage's saved state is no longer needed (only the last finished
        stage's weights are, to resume after it)."""
        if self.folder is not None:
            self.folder.write_json(STAGE_EVALUATION.format(name), evaluation.to_dict())
            if previous is not None:
                shutil.rmtree(self.stage_state(previous), ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def checkpointing(self, every: int) -> Checkpointing | None:
        """Checkpoints every ``every`` steps (none for 0); resuming, from the saved state, the logs cut back to its
        step (those of :data:`RESTARTED_ON_RESUME` emptied: their stage starts again)."""
        checkpoint = Checkpointing(self.work / CHECKPOINT, every, False) if every else None
        if not self.resumed:
            return checkpoint
        saved = checkpoint.saved_step() if checkpoint is not None else None
        if self.folder is not None:
            self.folder.truncate_logs(saved, restarted=RESTARTED_ON_RESUME)
            logger.info("resuming %s after step %s", self.work,
                        saved if saved is not None else "0 (no saved state: from the start)")
        return replace(checkpoint, resume=True) if saved is not None else checkpoint
