"""The `emps` commands, one module per area.

A command imports what it runs inside its own function: `emps --help`, and each command, start
without loading what the other commands need (pandas, Prefect, MLflow, scikit-learn).
"""
