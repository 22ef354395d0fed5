"""Reading Prometheus' text format, as a scraper sees a /metrics page."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """One scrape: each sample's value by metric name and labels."""

    samples: Mapping[tuple[str, Labels], float]

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name`` over the series whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (metric, have), value in self.samples.items()
            if metric == name and wanted <= have
        )

    def series(self, name: str, *, keep: tuple[str, ...], **labels: str) -> dict[Labels, float]:
        """``name`` summed by the labels in ``keep``, over series that include ``labels``."""
        wanted = set(labels.items())
        out: dict[Labels, float] = {}
        for (metric, have), value in self.samples.items():
            if metric == name and wanted <= have:
                key = frozenset((k, v) for k, v in have if k in keep)
                out[key] = out.get(key, 0.0) + value
        return out


def parse(text: str) -> Scrape:
    """The samples of a Prometheus text-format page (comments and blank lines skipped)."""
    samples: dict[tuple[str, Labels], float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        found = _SAMPLE.match(line.strip())
        assert found, f"not a Prometheus sample line: {line!r}"
        name, labels, value = found.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return Scrape(samples)


def scrape(address: str, *, timeout: float = 5.0) -> Scrape:
    """GET http://address/metrics and parse it."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
        assert response.status == 200
        return parse(response.read().decode())


def scrape_when(address: str, ready: Callable[[Scrape], bool], *, within: float = 60.0) -> Scrape:
    """Scrape until ``ready(scrape)`` (the endpoint may not be up yet); fail after ``within``."""
    deadline = time.monotonic() + within
    last: Scrape | None = None
    while time.monotonic() < deadline:
        try:
            last = scrape(address)
        except (urllib.error.URLError, ConnectionError):
            last = None
        if last is not None and ready(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"{address}/metrics not ready after {within:.0f}s; last: {last}")
