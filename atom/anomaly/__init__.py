"""Anomaly detection outside the ML pool: series as the API takes them (the detector itself,
NumPy-bound, is ``atom.ml.anomaly`` on the pool)."""
