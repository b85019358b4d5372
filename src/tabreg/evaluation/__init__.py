"""Evaluation of a fitted regressor on the held-out test set.

Pure functions, split by concern: :mod:`metrics` (point metrics and bootstrap intervals),
:mod:`slices` (the same metrics per slice of the data), :mod:`plots` (PNG figures) and
:mod:`card` (a Markdown model card). Nothing here reads configuration files or logs to a
tracker; the pipeline step wires them together.
"""
