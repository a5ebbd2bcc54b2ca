"""The report's notebook runner starts kernels quietly: no "running over TCP without encryption"."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("papermill")

from cachelab.report.run import run_notebooks  # noqa: E402
from cachelab.servers.kernels import kernel_options  # noqa: E402


def test_report_notebook_runner_starts_kernels_encrypted_and_prints_no_plain_tcp_warning(tmp_path, capfd):
    if not kernel_options():
        pytest.skip("this jupyter_client/pyzmq cannot provision CurveZMQ keys")
    notebooks = tmp_path / "root" / "notebooks"
    notebooks.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("answer = 6 * 7\nprint(answer)")]
    nbformat.write(nb, notebooks / "tiny.ipynb")

    outcomes = run_notebooks(tmp_path / "out", SimpleNamespace(name="quick"), tmp_path / "root")

    assert outcomes[0]["error"] == ""
    executed = nbformat.read(tmp_path / "out" / "notebooks" / "tiny.ipynb", as_version=4)
    assert "42" in executed.cells[-1].outputs[0]["text"]
    assert "without encryption" not in capfd.readouterr().err
