"""Marker registration only (pyproject's marker list is owned elsewhere)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: runs against a launched 3-primary Redis Cluster")
