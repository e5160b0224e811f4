"""Two summaries of task timelines that the model and its sizings share."""

from __future__ import annotations


def peak_rate(starts: list[float], window_s: float = 1.0) -> float:
    """The most starts (sorted times) in any half-open ``window_s``, per second (a launcher's ceiling when it is
    busy: a steady 152/s gives 152, not the 153 a closed window would count)."""
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best / window_s


def median(values: list[float]) -> float:
    """The upper median (0.0 for none): a value that occurred, not an average of two."""
    values = sorted(values)
    return values[len(values) // 2] if values else 0.0
