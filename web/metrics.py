"""``/metrics``: the spool in the Prometheus text format (prometheus-client).

Gauges are read from the spool at each scrape, as `pool status` reads it (jobs by state
and group, the queue's depth, jobs running, files refused, a manager serving); counters
and the attempt duration histogram come from events.jsonl (history.py), read on from
the last scrape."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from pool.client import Spool
from pool.finding import Brief

from .history import BUCKETS, QUEUED, History

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SpoolCollector:
    def __init__(self, spool: Spool, history: History, briefs: Callable[[], Sequence[Brief]]) -> None:
        self.spool = spool
        self.history = history
        self.briefs = briefs  # every job's, as the dashboard last read them (app.py)

    def collect(self) -> Iterator[Metric]:
        briefs = self.briefs()
        by_state_group = Counter((b.state.value, b.group) for b in briefs)
        jobs = GaugeMetricFamily("pool_jobs", "Jobs in the spool, by state and group.", labels=["state", "group"])
        for (state, group), n in sorted(by_state_group.items()):
            jobs.add_metric([state, group], n)
        yield jobs
        states = Counter(b.state.value for b in briefs)
        yield GaugeMetricFamily("pool_queue_depth", "Jobs waiting to run (queued or waiting).",
                                value=sum(states[s] for s in QUEUED))
        yield GaugeMetricFamily("pool_running_jobs", "Jobs running (their state says so).", value=states["running"])
        yield GaugeMetricFamily("pool_rejected_files", "Files refused at intake and kept in rejected/.",
                                value=self.spool.rejected_lately(float("inf")))
        yield GaugeMetricFamily("pool_manager_up", "1 while a manager serves the spool.",
                                value=1 if self.spool.dir.serving() is not None else 0)
        tally = self.history.update()
        ended = CounterMetricFamily("pool_jobs_ended", "Jobs that reached a final state (events.jsonl).",
                                    labels=["state"])
        for state in ("done", "failed", "cancelled"):
            ended.add_metric([state], tally.ended[state])
        yield ended
        yield CounterMetricFamily("pool_attempts", "Attempts begun (events.jsonl).", value=tally.attempts)
        yield CounterMetricFamily("pool_attempts_requeued",
                                  "Attempts that ended with their job queued again: a retry, or a stop's "
                                  "putting it back (events.jsonl).", value=tally.requeued)
        cumulative, buckets = 0, []
        for bound, n in zip(BUCKETS, tally.buckets, strict=True):
            cumulative += n
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", tally.duration_count))
        yield HistogramMetricFamily("pool_attempt_duration_seconds", "Wall time of the attempts that ended.",
                                    buckets=buckets, sum_value=tally.duration_sum)


def exposition(spool: Spool, history: History, briefs: Callable[[], Sequence[Brief]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpoolCollector(spool, history, briefs))
    return generate_latest(registry)
