"""The pull-request report workflow (``.github/workflows/report.yml``), tested where it can be.

GitHub Actions cannot run here, so this pins what a run depends on: it is valid
YAML with the triggers and the label condition; base and pull request are
measured in ONE job (``cachelab report --against`` the base commit, trials
interleaved on one runner); the job gets the redis and postgres service
containers; every ``cachelab`` command it calls exists and accepts the flags it
passes (asked of the real CLI); the result folder is uploaded; and the one
comment it posts is, byte for byte, a hidden marker followed by the
``summary.md`` that ``cachelab report`` generated — with the verdict in it. The
shell steps are executed for real (with a stand-in ``cachelab`` where a real run
would take minutes).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "report.yml"
LABEL = "capacity-report"
MARKER = "<!-- cachelab-report -->"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _on(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow.get("on") or workflow[True]  # YAML 1.1 reads a bare `on` key as True


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def _step(workflow: dict[str, Any], job: str, name_part: str) -> dict[str, Any]:
    return next(s for s in _steps(workflow, job) if name_part in s.get("name", ""))


def _uses(workflow: dict[str, Any], job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in _steps(workflow, job) if s.get("uses", "").startswith(action)]


def _cachelab_calls(workflow: dict[str, Any]) -> list[list[str]]:
    calls = []
    for job in workflow["jobs"].values():
        for s in job["steps"]:
            for line in s.get("run", "").splitlines():
                line = line.split("||")[0].strip()
                if line.startswith("cachelab "):
                    calls.append(shlex.split(line))
    return calls


def test_it_runs_on_labelled_pull_requests_and_on_every_push_to_them(workflow):
    pull_request = _on(workflow)["pull_request"]
    assert {"labeled", "synchronize"} <= set(pull_request["types"])
    for name, job in workflow["jobs"].items():
        condition = " ".join(job["if"].split())
        assert f"contains(github.event.pull_request.labels.*.name, '{LABEL}')" in condition, name
        # Adding some other label to an already labelled PR starts nothing.
        assert f"(github.event.action != 'labeled' || github.event.label.name == '{LABEL}')" in condition
    assert workflow["permissions"]["pull-requests"] == "write"  # to comment, and nothing broader
    assert workflow["permissions"]["contents"] == "read"


def test_the_job_runs_against_redis_7_and_postgres_service_containers(workflow):
    job = workflow["jobs"]["report"]
    services = job["services"]
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:")
    for service in services.values():
        assert "--health-cmd" in service["options"]  # steps start only once it answers
    assert job["env"]["REDIS_URL"].startswith("redis://127.0.0.1:6379")
    assert job["env"]["DATABASE_URL"].startswith("postgresql://")
    python = _uses(workflow, "report", "actions/setup-python")
    assert python and python[0]["with"]["python-version"] == "3.11"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert 'pip install -e ".[dev]"' in runs
    assert "apt-get install -y -qq redis-server" in runs  # the launcher's binary
    assert "ipykernel install --user --name python3" in runs  # papermill's kernel


def test_base_and_pull_request_are_measured_in_one_job_with_their_trials_interleaved(workflow):
    """Two jobs would mean two runners, which differ by more than most changes worth catching."""
    assert list(workflow["jobs"]) == ["report"]
    job = workflow["jobs"]["report"]
    assert "needs" not in job
    checkout = _uses(workflow, "report", "actions/checkout")[0]
    assert checkout.get("with", {}).get("fetch-depth") == 0  # the base commit is in the clone
    assert "ref" not in checkout.get("with", {})  # the PR's own code orchestrates both sides
    step = _step(workflow, "report", "--against")
    assert step["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert 'cachelab report --quick --against "$BASE_SHA"' in step["run"]
    assert not _uses(workflow, "report", "actions/download-artifact")


def test_every_cachelab_command_it_calls_exists_and_takes_those_flags():
    calls = _cachelab_calls(yaml.safe_load(WORKFLOW.read_text()))
    subcommands = {call[1] for call in calls}
    assert {"report", "inspect", "seed-db"} <= subcommands
    helps = {}
    for sub in subcommands:
        proc = subprocess.run(
            [sys.executable, "-m", "cachelab", sub, "--help"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        helps[sub] = proc.stdout
    for call in calls:
        for flag in (a for a in call[2:] if a.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[call[1]]), (call, flag)
    report_calls = [c for c in calls if c[1] == "report"]
    assert all("--quick" in c and "--out" in c and "--against" in c for c in report_calls)


def test_the_dev_extra_it_installs_exists():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "dev" in extras


def test_the_result_folders_are_uploaded_as_artifacts(workflow):
    uploads = _uses(workflow, "report", "actions/upload-artifact@v4")
    assert uploads and uploads[0]["with"]["path"].rstrip("/") == "results"
    assert uploads[0]["if"] == "always()"  # a failed SLO is exactly when the data matters


def _run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_report_step_passes_the_base_commit_and_records_a_failing_exit_code(workflow, tmp_path):
    """Run the step's shell with a stand-in ``cachelab`` that records its arguments and fails."""
    step = _step(workflow, "report", "--against")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "cachelab"
    fake.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    output = tmp_path / "github_output"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls"),
        "GITHUB_OUTPUT": str(output),
        "BASE_SHA": "0123abc",
    }
    proc = _run_step(step["run"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr  # a failing report must not skip the comment
    assert output.read_text().strip() == "exit_code=1"
    assert (tmp_path / "calls").read_text().splitlines() == [
        "report --quick --against 0123abc --out results/pr"
    ]
    final = _step(workflow, "report", "Fail the check")
    assert final["if"] == "steps.report.outputs.exit_code != '0'"


def _summary_json(folder: Path, value: float) -> None:
    figures = folder / "figures"
    figures.mkdir(parents=True)
    (figures / "07_summary.json").write_text(
        json.dumps(
            {
                "title": "Memory sizing",
                "headlines": {"working set MB": value},
                "figures": [],
                "tables": [],
                "capacity": [
                    {"row": "Working set: every row cached", "value": value, "unit": "MB", "note": "test"}
                ],
            }
        )
    )


def test_the_comment_is_the_marker_then_the_generated_summary_with_deltas_against_the_base(
    workflow, tmp_path
):
    """Generate a base and a PR report (the assembly step of ``cachelab report``, experiments
    skipped), run the workflow's compose step, and read the comment it would post."""
    from cachelab.report.run import run_report

    results = tmp_path / "results"
    skip = {"benchmarks", "load", "notebooks"}
    _summary_json(results / "base", 2.0)
    run_report(profile_name="quick", out=results / "base", skip=skip, allow_existing=True)
    _summary_json(results / "pr", 3.0)
    run_report(
        profile_name="quick", out=results / "pr", skip=skip, baseline=results / "base", allow_existing=True
    )
    summary = (results / "pr" / "summary.md").read_text()
    assert "Against the baseline `base`" in summary and "Working set: every row cached" in summary

    compose = _step(workflow, "report", "Compose the comment")
    env = {k: v for k, v in compose["env"].items() if "${{" not in v}
    proc = _run_step(compose["run"], tmp_path, {**env, "RUN_URL": "https://example.invalid/run/1"})
    assert proc.returncode == 0, proc.stderr
    comment = (tmp_path / compose["env"]["COMMENT"]).read_text()
    assert env["SUMMARY"] == "results/pr/summary.md"
    assert comment.startswith(MARKER + "\n" + summary)
    assert "https://example.invalid/run/1" in comment.split(summary, 1)[1]

    post = _uses(workflow, "report", "actions/github-script")[0]
    script = post["with"]["script"]
    assert post["env"]["COMMENT"] == compose["env"]["COMMENT"]  # it posts the file composed above
    assert "readFileSync(process.env.COMMENT" in script and f"'{MARKER}'" in script
    assert "listComments" in script and "updateComment" in script and "createComment" in script
    assert script.index("updateComment") < script.index("createComment")  # update first, else create


def test_a_missing_summary_still_gives_a_comment_that_says_so(workflow, tmp_path):
    compose = _step(workflow, "report", "Compose the comment")
    env = {k: v for k, v in compose["env"].items() if "${{" not in v}
    proc = _run_step(compose["run"], tmp_path, {**env, "RUN_URL": "https://example.invalid/run/2"})
    assert proc.returncode == 0, proc.stderr
    comment = (tmp_path / compose["env"]["COMMENT"]).read_text()
    assert comment.startswith(MARKER + "\n") and "no summary.md" in comment
