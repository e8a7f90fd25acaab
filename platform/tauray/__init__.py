"""tauray: temperature and hyperparameter search for contrastive learning on Ray."""

from tauray_trainers import __version__

__all__ = ["__version__"]
