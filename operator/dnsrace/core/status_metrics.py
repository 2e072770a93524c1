"""Reading the components' ``/metrics`` text for ``dnsrace status``: one read (``Scrape``), its
samples (``parse_metrics``), a sum of some of them (``metric``) and the read's state
(``scrape_state``). Re-exported by ``core.status``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Scrape:
    """One ``/metrics`` read: its text, or why there is none (``refused``, ``timeout``, or an
    error's text). Both None: not scraped (no port configured)."""

    text: str | None = None
    error: str | None = None

    @property
    def attempted(self) -> bool:
        return self.text is not None or self.error is not None



_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of Prometheus text exposition: (name, labels, value); comments skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(4))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\")
                  for k, v in _LABEL.findall(match.group(3) or "")}
        out.append((match.group(1), labels, value))
    return out


def metric(samples: Iterable[tuple[str, dict[str, str], float]], name: str,
            **labels: str) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None when there is none."""
    found = [v for n, lab, v in samples
             if n == name and all(lab.get(k) == want for k, want in labels.items())]
    return sum(found) if found else None


def scrape_state(scrape: Scrape | None) -> str:
    if scrape is None or not scrape.attempted:
        return "not scraped"
    return "ok" if scrape.text is not None else str(scrape.error)
