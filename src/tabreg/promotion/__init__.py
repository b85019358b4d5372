"""Promotion: the champion/challenger gate, the model registry and its ledger, drift
of new data, and the retrain flow's bookkeeping.
"""
