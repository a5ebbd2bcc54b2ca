"""Root conftest: shared fixtures, and benchmarks as smoke tests under plain ``pytest``.

``pytest`` runs every benchmark once (pytest-benchmark's ``--benchmark-disable``)
so a broken benchmark fails CI quickly; ``pytest --benchmark-only`` measures,
and collects only ``bench/`` (otherwise every test in ``tests/`` would be
collected just to be reported as a skipped "non-benchmark").

Plain ``pytest`` leaves out tests marked ``slow`` (``addopts`` in
``pyproject.toml``); naming one without ``-m`` would otherwise end in a bare
"no tests collected", so that case says how to run it.
"""

from pathlib import Path

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

    if getattr(opt, "benchmark_only", False) and config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        # Plain `pytest --benchmark-only`: the testpaths named tests/, not the user. Collecting it
        # would only list every correctness test as a skipped "non-benchmark".
        tests = config.rootpath / "tests"
        config.args[:] = [a for a in config.args if Path(config.rootpath, a).resolve() != tests]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``pytest --benchmark-only <repo>``: skip ``tests/`` too, unless a path inside it was named."""
    if not getattr(config.option, "benchmark_only", False) or collection_path != config.rootpath / "tests":
        return None
    here = config.invocation_params.dir
    named = [(here / arg.split("::")[0]).resolve() for arg in config.args]
    return None if any(collection_path in (p, *p.parents) for p in named) else True


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """Every test asked for was deselected by the default ``-m 'not slow'``: say how to run them."""
    explicit_m = any(a == "-m" or a.startswith("-m") for a in config.invocation_params.args)
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and not explicit_m \
            and terminalreporter.stats.get("deselected"):
        terminalreporter.write_line(
            "cachelab: plain `pytest` leaves out tests marked slow; run them with `pytest -m slow` "
            "(or `pytest -m ''` for every test)", yellow=True)
