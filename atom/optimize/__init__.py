"""The workflow optimizer: performance, cost, reliability and hybrid strategies.

``figures`` holds the per-step and per-workflow numbers, ``estimates`` the labelled guesses
used when a workflow has no history, ``history`` reads the numbers from real runs,
``dataflow`` decides which orderings a workflow may drop, ``predict`` turns step figures into
workflow figures along the critical path, ``strategies`` builds the suggestions and the
optimized definition, ``results`` stores analyses and measures the applied versions, and
``periodic`` is beat's job.
"""
