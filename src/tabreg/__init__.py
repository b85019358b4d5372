"""tabreg: a train / retrain / promote pipeline for tabular regression.

Importing the package is cheap and has no side effects: heavy libraries (pandas,
great_expectations, torch, mlflow, prefect) are imported by the modules that use them.
"""

__version__ = "0.1.0"
