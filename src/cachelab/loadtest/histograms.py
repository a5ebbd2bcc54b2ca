"""Microsecond latency histograms (HdrHistogram) that travel between Locust processes.

Locust rounds response times above 100 ms and keeps its own percentiles in
coarse buckets; a cache hit on loopback takes well under a millisecond, so
comparing cache modes needs microsecond resolution at p99 and p99.9.
HdrHistogram keeps 3 significant digits from 1 µs to 60 s in a few KB, adds
exactly (merging two histograms equals recording both streams into one),
and encodes compactly, which is what lets workers ship theirs to the master.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000  # 60 s: anything slower is clamped (and is a timeout in practice)
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def percentile_label(p: float) -> str:
    """``99.0 -> "p99"``, ``99.9 -> "p99.9"``."""
    return f"p{p:g}"


class LatencyHistogram:
    """One endpoint's latencies in microseconds."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    @property
    def count(self) -> int:
        return self._h.get_total_count()

    def record_us(self, value_us: float) -> None:
        self._h.record_value(min(HIGHEST_US, max(LOWEST_US, round(value_us))))

    def record_ms(self, value_ms: float) -> None:
        self.record_us(value_ms * 1000.0)

    def merge(self, other: LatencyHistogram) -> None:
        self._h.add(other._h)

    def merge_encoded(self, encoded: str) -> None:
        self._h.decode_and_add(encoded.encode("ascii"))

    def encode(self) -> str:
        """Compressed, base64 text (safe in JSON and in Locust's msgpack reports)."""
        return self._h.encode().decode("ascii")

    @classmethod
    def decode(cls, encoded: str) -> LatencyHistogram:
        hist = cls()
        hist.merge_encoded(encoded)
        return hist

    def reset(self) -> None:
        self._h.reset()

    def percentile_us(self, p: float) -> int:
        return self._h.get_value_at_percentile(p)

    def summary_ms(self, percentiles: tuple[float, ...] = PERCENTILES) -> dict[str, float] | None:
        """``{"p50": …, "p90": …, "p99": …, "p99.9": …, "max": …, "mean": …, "count": n}`` in ms
        (microsecond precision), or None when nothing was recorded."""
        if not self.count:
            return None
        out = {percentile_label(p): self.percentile_us(p) / 1000.0 for p in percentiles}
        out["max"] = self._h.get_max_value() / 1000.0
        out["mean"] = round(self._h.get_mean_value() / 1000.0, 3)
        out["count"] = self.count
        return out
