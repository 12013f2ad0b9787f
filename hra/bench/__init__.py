"""Benchmarks of the ML package, each runnable with ``python -m hra.bench.<name>`` (``--help``): ``foundation`` and
``device`` (packages of small modules by role), ``context_policy``, ``decoding_cost``; ``speed`` calibrates training
budgets, ``paths`` holds the default inputs and outputs (a checkout's ``corpus/``, ``benchmarks/``).

Benchmarks that drive the service (``app``) live outside this package: ``benchmarks/service_training.py``.
"""
