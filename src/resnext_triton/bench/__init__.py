"""Benchmarks: perf_analyzer sweeps, in-process baselines, machine ceilings, reports.

The command lines are ``bench/perf_sweep.py`` and ``bench/config_search.py``; this package holds
the code they call. Nothing here asserts on speed: it measures and records.
"""
