"""The stores a run writes to (MLflow's tracking store and registry, the decision ledger,
the Optuna journal): connecting, checking their health, backing them up and recovering what
a killed run left in them.
"""
