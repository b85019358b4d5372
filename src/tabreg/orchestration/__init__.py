"""What the Prefect flows and DVC need around the step functions: the DVC bridge, a
safe flow start from the command line, and the flow run's report in the Prefect UI.
"""
