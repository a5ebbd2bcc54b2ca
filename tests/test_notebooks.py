"""The comparison notebooks: committed clean, and every one runs end to end with the quick profile.

``cachelab report`` executes the notebooks with papermill and lifts what they
write (``<nn>_*.png``, ``<nn>_*.csv``, ``<nn>_summary.json``) into its summary,
so the contract is tested here the way the report uses it: papermill injects
``profile`` and ``out_dir`` into the ``parameters`` cell, and the artefacts
must appear in ``out_dir``. The executions are slow (real redis-server, the
real app, about half a minute each) and marked so.

The helpers behind the notebooks that decide what a number *means* — when a
read counts as stale, when a cache counts as warm, which loads belong to one
expiry — are pinned by fast tests at the end.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import nbformat
import pytest

from cachelab.analysis import for_profile, save_figure, write_summary, write_table
from cachelab.analysis.httpload import Resource, Served
from cachelab.analysis.stampede import expiry_groups
from cachelab.analysis.ttl import Write, staleness
from cachelab.analysis.warming import time_to_warm

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
OURS = (
    "01_ttl_tradeoffs",
    "02_pipelining",
    "03_cold_vs_warm",
    "04_fail_open_outages",
    "05_stampede",
    "06_rate_limiters",
)


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_the_six_comparison_notebooks_are_committed():
    assert set(OURS) <= {p.stem for p in ALL}


# -- (a) committed clean, with a papermill parameters cell ----------------------------------
@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_committed_notebook_has_no_outputs_and_a_parameters_cell_with_profile_and_out_dir(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs or execution counts; clear them"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assigned = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(tagged[0].source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert assigned.get("profile") in ("quick", "full")
    assert isinstance(assigned.get("out_dir"), str)
    assert any(c.cell_type == "markdown" and len(c.source) > 200 for c in nb.cells), "explain the plots"


# -- (b) every notebook runs with the quick profile and writes its artefacts --------------
# The session's one ``cachelab report --quick`` (tests/conftest.py) executes every notebook
# with papermill exactly as a user's report does; checking its output here saves running
# each notebook twice in one test session.
@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_notebook_runs_with_the_quick_profile_and_writes_figures_tables_and_summary(path: Path, quick_report):
    out_dir = quick_report.folder / "figures"
    number = path.name[:2]
    executed = quick_report.folder / "notebooks" / path.name
    assert executed.is_file(), quick_report.output[-3000:]
    errors = [
        o
        for c in nbformat.read(executed, as_version=4).cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    summary_path = out_dir / f"{number}_summary.json"
    assert summary_path.is_file(), f"{path.name} wrote no {summary_path.name}"
    summary = json.loads(summary_path.read_text())
    assert summary["title"] and summary["headlines"] and summary["figures"] and summary["tables"]
    for label, value in summary["headlines"].items():
        assert value is None or (isinstance(value, int | float) and math.isfinite(value)), (label, value)
    for name in [*summary["figures"], *summary["tables"]]:
        artefact = out_dir / name
        assert name.startswith(f"{number}_") and artefact.is_file() and artefact.stat().st_size > 0, name
    pngs = list(out_dir.glob(f"{number}_*.png"))
    csvs = list(out_dir.glob(f"{number}_*.csv"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert csvs and all(len(p.read_text().splitlines()) >= 2 for p in csvs)  # a header and data
    if number == "04":
        runs = json.loads((out_dir / "04_outages.json").read_text())["runs"]
        assert runs and all("reads_5xx_during_fault" in r["summary"] for r in runs)
        assert all(r["topology"] == "split" for r in runs)  # sessions on a Redis the fault spares
        assert sum(r["summary"]["reads_5xx_during_fault"] for r in runs) == 0  # reads fail open
        assert sum(r["summary"]["jobs_lost"] for r in runs) == 0


# -- the helpers' contract ----------------------------------------------------------------
def test_summary_json_has_the_report_shape_and_no_nan(tmp_path):
    path = write_summary(
        tmp_path,
        "07",
        "A title",
        {"a number": 1.5, "missing": math.nan},
        figures=[tmp_path / "07_x.png"],
        tables=["07_x.csv"],
        profile="quick",
    )
    assert path.name == "07_summary.json"
    data = json.loads(path.read_text())  # strict JSON: NaN would not parse back as a number
    assert data == {
        "title": "A title",
        "headlines": {"a number": 1.5, "missing": None},
        "figures": ["07_x.png"],
        "tables": ["07_x.csv"],
        "profile": "quick",
    }


def test_artefact_names_must_carry_the_notebook_number(tmp_path):
    from matplotlib.figure import Figure

    with pytest.raises(ValueError, match="<nn>_<name>"):
        write_table([{"a": 1}], tmp_path, "table")
    with pytest.raises(ValueError, match="two digits"):
        write_summary(tmp_path, "1", "t", {})
    png = save_figure(Figure(), tmp_path / "sub", "08_empty")
    assert png == tmp_path / "sub" / "08_empty.png" and png.stat().st_size > 0


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile 'medium'"):
        for_profile({"quick": 1, "full": 2}, "medium")


def _served(t: float, url: str, x_cache: str, tenant: str = "acme", age: int = 0) -> Served:
    path = url.split("/")[-1]
    return Served(
        t=t, sent=t, done=t + 0.001, resource=Resource(tenant, path), status=200, x_cache=x_cache, age=age
    )


def test_a_hit_is_stale_when_its_tenant_was_written_after_the_fill_and_before_the_read():
    served = [
        _served(0.0, "kpis", "MISS"),  # value born at 0.0
        _served(1.0, "kpis", "HIT"),  # no write yet: fresh
        _served(3.0, "kpis", "HIT"),  # the write at 2.0 committed before: 1 s behind
        _served(3.5, "kpis", "MISS"),  # refilled after the write: fresh again
        _served(4.0, "kpis", "HIT"),
        _served(4.0, "kpis", "HIT", tenant="other", age=3),  # no fill seen: Age says born by ~0
    ]
    rows = staleness(served, [Write("acme", 2.0), Write("other", 0.5)])
    assert [r["stale"] for r in rows] == [False, False, True, False, False, True]
    assert rows[2]["behind_s"] == pytest.approx(1.0)
    # "other" has no fill in this trace: the (whole-second) Age header bounds its birth from below,
    # and its write at 0.5 s is counted — while "acme"'s reads never count "other"'s write.
    assert rows[5]["behind_s"] == pytest.approx(3.5)


def test_time_to_warm_is_the_first_full_window_at_the_target_hit_ratio():
    trace = [_served(i / 10, "kpis", "HIT" if i >= 3 else "MISS") for i in range(12)]
    # Hits from request 4 on: the window of requests 3-6 is the first with 3 hits in 4.
    assert time_to_warm(trace, window=4, target=0.75) == (6, pytest.approx(0.5))
    assert time_to_warm(trace[:5], window=4, target=1.0) == (None, None)


def test_loads_starting_within_one_loader_call_refill_the_same_expiry():
    # A stampede: three loads 10 ms apart. Then refreshes 150 ms apart are separate refills.
    groups = expiry_groups([0.0, 0.01, 0.02, 1.0, 1.15, 1.3, 3.0], gap=0.1)
    assert [len(g) for g in groups] == [3, 1, 1, 1, 1]


def test_the_ttl_model_counts_only_first_reads_as_misses_and_nothing_stale_without_writes():
    from dataclasses import replace

    from cachelab.analysis.httpload import catalogue as make_catalogue
    from cachelab.analysis.ttl import simulate, sizes
    from cachelab.loadtest.zipf import ZipfSampler

    sz = replace(sizes("quick"), writes_per_second=0)
    forever = simulate(sz, ttl=1e9, seconds=5)
    resources = make_catalogue([f"t{i}" for i in range(sz.tenants)], sz.initiatives_per_tenant, seed=sz.seed)
    sampler = ZipfSampler(len(resources), s=sz.zipf_s, seed=sz.seed)
    reads = int(5 * sz.rate)
    distinct = len({sampler.sample() for _ in range(reads)})
    assert forever["hit_ratio"] == pytest.approx(1 - distinct / reads)
    assert forever["stale_fraction"] == 0 and forever["resident_keys"] == distinct
    assert simulate(sz, ttl=0, seconds=5)["hit_ratio"] == 0
