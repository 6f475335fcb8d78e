"""Experiments: configs, resumable run directories, the runner and the results table it prints."""

from cotune.experiment.config import ExperimentConfig, PromptStep, WeightStep

__all__ = ["ExperimentConfig", "PromptStep", "WeightStep"]
