"""atom/anomaly: anomaly detection outside the ML pool (the detector itself, NumPy-bound, is
``atom.ml.anomaly`` on the pool).

Modules, one concern each: ``series`` (a series as ``POST /api/anomaly/detect`` takes it,
checked), ``validation`` (a recorded metric point and a rule's series selector, checked),
``store`` (metric series and points: record, read, prune), ``derive`` (ATOM's own run
metrics as series: workflow duration and error rate, step duration, queue depth),
``scoring`` (the periodic pass that sends new points to the ML pool's detector) and
``alerting`` (whether a series matched by an ``anomaly`` rule has an open anomaly).
"""
