"""atom/anomaly: metric series, their scoring on the ML pool, and what anomaly rules read.

Modules, one concern each: ``validation`` (a recorded point and a rule's series selector,
checked), ``series`` (record, read and prune points), ``derive`` (ATOM's own run metrics as
series: workflow duration and error rate, step duration, queue depth), ``scoring`` (the
periodic pass that sends new points to the ML pool's detector) and ``alerting`` (whether a
series matched by an ``anomaly`` rule has an open anomaly). The detector itself is
``atom.ml.anomaly``, which only the ML pool imports.
"""
