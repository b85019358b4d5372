"""The stack's configuration and URL helpers, without starting anything."""

from __future__ import annotations

import socket

import pytest

from tabreg.config import ServicesConfig, parse_config
from tabreg.errors import ConfigError
from tabreg.services import postgres
from tabreg.services.processes import port_in_use


def test_services_section_defaults_and_env_override(params: dict) -> None:
    config = parse_config(params, env={})
    assert config.services.host == "127.0.0.1" and config.services.database_url is None
    url = "postgresql://u:p@db.example:5432/x"
    assert parse_config(params, env={"SERVICES_DATABASE_URL": url}).services.database_url == url


@pytest.mark.parametrize("bad, where", [
    ({"mlflow_port": 4200}, "ports must differ"),
    ({"database_url": "sqlite:///x.db"}, "postgresql"),
    ({"prefect_workers": -1}, "prefect_workers"),
    ({"postgres_port": 70000}, "postgres_port"),
])
def test_bad_services_config_names_the_key(params: dict, bad: dict, where: str) -> None:
    tree = {**params, "services": {**params["services"], **bad}}
    with pytest.raises(ConfigError, match=where):
        parse_config(tree, env={})


def test_urls_point_at_each_database_and_hide_the_password() -> None:
    server = postgres.url("postgres", "s3cr/t", "0.0.0.0", 5433, "postgres")
    assert server == "postgresql://postgres:s3cr%2Ft@127.0.0.1:5433/postgres"
    assert postgres.with_database(server, "prefect", "postgresql+asyncpg") == \
        "postgresql+asyncpg://postgres:s3cr%2Ft@127.0.0.1:5433/prefect"
    assert "s3cr" not in postgres.hide_password(server)
    assert ServicesConfig().mlflow_port != ServicesConfig().prefect_port


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)
