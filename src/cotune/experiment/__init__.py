"""Experiments: configs, resumable run directories, the runner, reports and the advisor."""

from cotune.experiment.config import ExperimentConfig, PromptStep, WeightStep

__all__ = ["ExperimentConfig", "PromptStep", "WeightStep"]
