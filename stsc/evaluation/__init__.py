"""Evaluation: running models on a task suite, and scoring runs with performance profiles and AUP.

Scoring modules: :mod:`~stsc.evaluation.runs` reads MLGym-layout run folders,
:mod:`~stsc.evaluation.mlgym_tasks` knows how each task is scored, :mod:`~stsc.evaluation.aup`
computes score tables, performance ratios and AUP, :mod:`~stsc.evaluation.bootstrap` adds confidence
intervals, :mod:`~stsc.evaluation.plots` draws the profiles and :mod:`~stsc.evaluation.cli` is the
``stsc-aup`` command. Importing this package imports none of them.
"""
