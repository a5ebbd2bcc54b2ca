"""What a result folder was measured on: commit, versions, Redis, machine, parameters.

Numbers without their context cannot be compared; ``cachelab compare`` warns
when two manifests differ in what matters (machine, Redis version, profile).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

PACKAGES = (
    "cachelab",
    "redis",
    "hiredis",
    "orjson",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "locust",
    "pytest-benchmark",
    "numpy",
    "pandas",
    "matplotlib",
    "papermill",
)


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, cwd=cwd, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "commit": git("rev-parse", "HEAD"),
        "short": git("rev-parse", "--short", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    return {
        "hostname_hash": hash(platform.node()) & 0xFFFFFFFF,  # compare machines without naming them
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def redis_info(url: str) -> dict[str, Any]:
    """The server a run measured: family and version (Redis or Valkey), allocator, configuration."""
    import redis

    from cachelab.patterns.health import server_identity, server_label

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        info = client.info("server") | client.info("memory")
        config: dict[str, Any] = {}
        try:
            for key in ("maxmemory", "maxmemory-policy", "appendonly", "appendfsync", "save", "io-threads"):
                config.update(client.config_get(key))
        except redis.ResponseError:
            config = {"note": "CONFIG GET not permitted"}
        family, version = server_identity(info)
        return {
            "server": family,
            "version": version,
            "label": server_label(info),
            "allocator": info.get("mem_allocator"),
            "mode": info.get("redis_mode") or info.get("server_mode"),
            "config": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in config.items()},
        }
    finally:
        client.close()


def build_manifest(
    parameters: dict[str, Any], *, redis_url: str | None = None, root: Path | None = None
) -> dict[str, Any]:
    """The manifest; ``root`` is the checkout measured (git is read there, not in the current folder)."""
    manifest: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_info(root),
        "packages": package_versions(),
        "machine": machine_info(),
        "parameters": parameters,
    }
    if redis_url:
        manifest["redis"] = redis_info(redis_url)
    return manifest
