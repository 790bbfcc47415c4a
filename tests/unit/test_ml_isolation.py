"""Only the ML pool loads LightGBM (and NumPy): the API, the step worker, beat and the CLI
stay light, and a step or a request can never pull a model library in by accident."""

from __future__ import annotations

from tests.unit.test_architecture import loaded_after

HEAVY = ["lightgbm", "numpy", "scipy"]


def test_api_step_worker_beat_and_cli_do_not_load_lightgbm():
    light = [
        "api.app",
        "api.main",
        "api.decisions",
        "api.anomaly",
        "atom.anomaly.series",
        "workers.main",
        "workers.tasks",
        "workers.maintenance",
        "atom.actions.decision",
        "beat.main",
        "cli.main",
        "atom.ml.client",
        "atom.ml.store",
        "atom.ml.features",
    ]
    assert loaded_after(light, HEAVY) == []


def test_the_ml_worker_loads_lightgbm():
    assert "lightgbm" in loaded_after(["workers.ml"], HEAVY)
