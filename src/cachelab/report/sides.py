"""What a report measures: this checkout, and optionally a base ref beside it.

``cachelab report --against REF`` compares two commits the way ``asv
continuous`` does: both on one machine, in one run, their trials alternating,
so whatever the machine is doing meanwhile lands on both. Running the base
and the pull request as two CI jobs puts them on two different runners, which
differ from each other by more than most changes worth catching.

The base is checked out into a git worktree (nothing in the user's checkout
changes) with its own virtual environment: ``--system-site-packages`` so the
dependencies both commits share are not downloaded again, and the base
installed into it in editable mode, so its own code, its own dependency
pins and its own benchmarks, app and locustfile are what run. ``PYTHONPATH``
points at the worktree as well, so the base's modules win even over an
editable install of the candidate in the shared site-packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class SideError(RuntimeError):
    """The base ref could not be checked out or installed; the message says why in one line."""


@dataclass(frozen=True)
class Side:
    """A checkout whose code is measured, and how to run Python in it."""

    label: str
    root: Path
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    commit: str | None = None

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The process environment for this side's commands."""
        return {**os.environ, **self.env, **(extra or {})}


def _git(root: Path, *args: str, timeout: float = 120) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SideError(f"git {' '.join(args)} failed: {exc}") from None
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SideError(f"git {' '.join(args)}: {reason}")
    return proc.stdout.strip()


def resolve(root: Path, ref: str) -> str:
    """The full commit id ``ref`` names in the repository at ``root`` (:class:`SideError` if none)."""
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except SideError:
        raise SideError(f"--against {ref!r} names no commit in {root}") from None


def this_checkout(root: Path, label: str = "candidate") -> Side:
    commit = None
    with contextlib.suppress(SideError):
        commit = resolve(root, "HEAD")
    return Side(label=label, root=root, commit=commit)


@contextlib.contextmanager
def base_checkout(root: Path, ref: str, *, label: str = "base", progress=print) -> Iterator[Side]:
    """Check ``ref`` out into a temporary worktree with its own venv; remove both afterwards."""
    commit = resolve(root, ref)
    workdir = Path(tempfile.mkdtemp(prefix="cachelab-against-"))
    tree = workdir / "tree"
    venv = workdir / "venv"
    added = False
    try:
        progress(f"checking out {ref} ({commit[:12]}) into a worktree")
        _git(root, "worktree", "add", "--detach", str(tree), commit)
        added = True
        progress("creating its environment (a venv sharing this one's site-packages)")
        _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "venv")
        python = str(venv / ("Scripts" if os.name == "nt" else "bin") / "python")
        _run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-e",
                str(tree),
            ],
            f"installing {ref} into its venv",
        )
        yield Side(
            label=label, root=tree, python=python, env={"PYTHONPATH": str(tree / "src")}, commit=commit
        )
    finally:
        if added:
            with contextlib.suppress(SideError):
                _git(root, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(SideError):
            _git(root, "worktree", "prune")


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SideError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.lower().startswith("error")] or lines or ["(no output)"]
        raise SideError(f"{what} failed: {errors[0]}")
