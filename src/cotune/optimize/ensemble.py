"""Moved: `ChoiceShuffleEnsemble` is a program wrapper and lives in `cotune.program.ensemble`."""

from cotune.program.ensemble import ChoiceShuffleEnsemble, choice_permutations, program_for_state

__all__ = ["ChoiceShuffleEnsemble", "choice_permutations", "program_for_state"]
