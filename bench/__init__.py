"""Anygle benchmark suite (issue 6): ``python -m bench --help``.

``run`` is the entry point (options, the order of scenarios, the results file); each scenario is a
module of its own (``relay``, ``latency``, ``memory``, ``scaleout``, ``overload``, ``churn``) over
what they share (``suite``: the run's options and rounds of rows; ``measure``: percentiles,
ratios, CPU accounting; ``procs``: the processes).  ``tables``, ``plot``, ``record`` and
``compare`` turn the results into tables, a picture, the JSON file, and two runs side by side.
``loadclient`` and ``overloadclient`` are the load-generating processes (over ``wsclient``;
``counts``: what a load worker counts, ``chatlines``: the varied chat lines it sends).
``msgpath`` times our own code on the message path in one process, stage by stage.
"""
