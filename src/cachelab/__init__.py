"""cachelab: correct, measured Redis patterns for caching, rate limiting, sessions and queues."""

__version__ = "0.1.0"
