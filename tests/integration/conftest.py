import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory):
    """One temporary Prefect server (real API and database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
