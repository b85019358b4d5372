"""Watching the served model: the labels that arrive after its predictions, joined to the
inference log (and, with ``make monitor``, drift and live quality against its training)."""
