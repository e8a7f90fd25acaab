"""tauray_spaces: search spaces over temperature, batch size and training knobs (Optuna only)."""
