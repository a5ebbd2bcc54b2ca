"""Errors shared across layers, so the lowest modules can raise them without importing settings.

:class:`ConfigError` is raised by the client (a malformed Redis URL), by the
settings (a malformed variable), by the database layer (an unsupported URL) and
caught by the command line, which prints its one-line message. It lives here,
at the bottom, so :mod:`cachelab.client` need not import :mod:`cachelab.config`
(which imports the client). ``cachelab.config.ConfigError`` is the same class.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""
