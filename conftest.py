"""Root conftest: shared fixtures, and benchmarks as smoke tests under plain ``pytest``.

``pytest`` runs every benchmark once (pytest-benchmark's ``--benchmark-disable``)
so a broken benchmark fails CI quickly; ``pytest --benchmark-only`` measures.
"""

import pytest

pytest_plugins = ["cachelab.testing"]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    wants_measurement = (
        getattr(opt, "benchmark_only", False)
        or getattr(opt, "benchmark_enable", False)
        or getattr(opt, "benchmark_autosave", False)
        or getattr(opt, "benchmark_json", None)
        or getattr(opt, "benchmark_save", None)
        or getattr(opt, "benchmark_compare", None) not in (None, False, [])
    )
    if not wants_measurement and hasattr(opt, "benchmark_disable"):
        opt.benchmark_disable = True
