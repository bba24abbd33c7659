"""Benchmarks: perf_analyzer sweeps, in-process baselines, machine ceilings, reports.

The command lines are ``bench/perf_sweep.py`` (:mod:`.sweep`) and ``bench/config_search.py``
(:mod:`.config_search`), with their shared options in :mod:`.cli`; this package holds the code
they call. perf_analyzer is run by :mod:`.perf` and read back by :mod:`.perf_csv`; :mod:`.served`
measures a grid of served points; :mod:`.baseline_suite` times the in-process baselines
(:mod:`.baselines`, :mod:`.preprocessing`, :mod:`.machine`); :mod:`.ratios`, :mod:`.report` and
:mod:`.sweep_report` turn them into ratios, tables, plots and files; :mod:`.candidates` are the
configurations the search tries; :mod:`.serving` is where requests go. Nothing here asserts on
speed: it measures and records.
"""
