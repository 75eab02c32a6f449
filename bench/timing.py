"""One timing rule for the interleaved benches (stdlib only: torch's venv imports it too).

A round times calls for at least `min_seconds` (and `min_iters` calls) and
keeps their median, so one slow call from a neighbour's burst does not move it.
"""
import statistics
import time


def median_call_seconds(fn, min_seconds: float, min_iters: int) -> float:
  """Median seconds of one call over a round of at least `min_seconds`."""
  times, start = [], time.perf_counter()
  while len(times) < min_iters or time.perf_counter() - start < min_seconds:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)
