"""Turning a run directory into something people read (``report.html``) and CI decides on.

Split by concern: :mod:`.stats` (numpy-only statistics shared with compare/check), :mod:`.tables`
(pandas DataFrames for the course-notes tables and per-metric summaries), :mod:`.plots` (matplotlib
figures, also imported by ``notebooks/explore.ipynb``) and :mod:`.render` (Jinja2 page assembly).
"""
