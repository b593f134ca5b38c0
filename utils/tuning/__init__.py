"""Hyperparameter tuning: keras-tuner oracles over the suite's training runs.

Modules: ``space`` (search spaces per family, ``--space`` files), ``study``
(study directory, settings, best values), ``tuner`` (the keras-tuner Tuner
whose trials are ``models.train.run`` runs; imports TensorFlow),
``distributed`` (chief/worker mode), ``cli`` (``main/tune_<family>.py``).
Only the framework-free names are imported here, so ``import
utils.tuning`` stays cheap; ``utils.tuning.tuner`` loads keras-tuner.
"""

from utils.tuning.space import COMMON_SPACE, SpaceError, family_space, load_space_file, trial_config
from utils.tuning.study import Study, study_name

__all__ = ["COMMON_SPACE", "SpaceError", "Study", "family_space", "load_space_file", "study_name", "trial_config"]
