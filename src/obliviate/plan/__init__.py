"""``plan(settings)``: everything an experiment will do, resolved and checked before any long work (:mod:`.build`);
its records (:mod:`.records`), its data, models and mask (:mod:`.sources`) and its evaluation (:mod:`.evaluation`)."""

from obliviate.plan.build import EVALUATIONS, configured_method, plan
from obliviate.plan.records import ExperimentPlan, MaskPlan, ModelPlan, OutputPlan, TrainingPlan

__all__ = ["EVALUATIONS", "ExperimentPlan", "MaskPlan", "ModelPlan", "OutputPlan", "TrainingPlan",
           "configured_method", "plan"]
