import pytest


@pytest.fixture(scope="session", autouse=True)
def _prefect_for_every_integration_test(prefect_server):
    """Every integration module runs flows in-process: on the session's one Prefect server."""
    yield
