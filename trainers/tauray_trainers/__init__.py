"""tauray_trainers: contrastive losses, temperature, models, data and the Ray Train loop.

Usable as a plain library: nothing here imports Ray Tune, Optuna or MLflow, and only
``loop.py`` imports ``ray.train``.
"""

__version__ = "0.2.0"
