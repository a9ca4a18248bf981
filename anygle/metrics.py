"""``GET /metrics``: the seed's metrics (online users, queues, chats, matches, match time,
moderation actions) and reports, in the Prometheus text format, from the engine's service-wide
view; and this instance's reactor lag (``anygle/reactorlag.py``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from anygle.fairturns import TurnScheduler
from anygle.model import Stats
from anygle.reactorlag import ReactorLag


class StatsCollector:
    """A custom collector over one :class:`Stats` snapshot; our own registry, no globals."""

    def __init__(
        self,
        instance_id: str,
        lag: ReactorLag | None = None,
        turns: TurnScheduler | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.lag = lag
        self.turns = turns
        self.stats = Stats()
        self.connections = 0

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily(
            "anygle_online_users", "Users connected (all instances)", value=s.total_online
        )
        yield GaugeMetricFamily("anygle_active_chats", "Rooms with two users", value=s.active_chats)
        waiting = GaugeMetricFamily(
            "anygle_queue_users", "Users waiting, by queue", labels=["queue"]
        )
        for queue, n in sorted(s.queues.items()):
            waiting.add_metric([queue], n)
        yield waiting
        yield CounterMetricFamily("anygle_matches", "Matches made", value=s.total_matches)
        yield GaugeMetricFamily(
            "anygle_match_time_avg_ms", "Recent average join to matched, ms", value=s.avg_match_time
        )
        actions = CounterMetricFamily(
            "anygle_moderation_actions",
            "Moderation actions",
            labels=["tier", "category", "outcome"],
        )
        for key, n in sorted(s.moderation.items()):
            actions.add_metric(key.split(":", 2), n)
        yield actions
        reports = CounterMetricFamily(
            "anygle_reports_received", "Reports of a partner, by reason", labels=["reason"]
        )
        for reason, n in sorted(s.reports.items()):
            reports.add_metric([reason], n)
        yield reports
        yield CounterMetricFamily(
            "anygle_report_blocks",
            "Users banned by reports from distinct addresses",
            value=s.report_blocks,
        )
        local = GaugeMetricFamily(
            "anygle_instance_connections",
            "WebSocket connections on this instance",
            labels=["instance"],
        )
        local.add_metric([self.instance_id], self.connections)
        yield local
        if self.lag is not None:
            yield from self._lag(self.lag)
        if self.turns is not None:
            yield CounterMetricFamily(
                "anygle_fair_turn_waits",
                "Times a connection had frames left after its share of a reactor turn "
                "(it stopped reading until they were handled)",
                value=self.turns.deferred,
            )

    @staticmethod
    def _lag(lag: ReactorLag) -> Iterator[Metric]:
        yield HistogramMetricFamily(
            "anygle_reactor_lag_seconds",
            "How late a 100 ms timer fired (this instance's reactor)",
            buckets=lag.cumulative(),
            sum_value=lag.total,
        )
        yield GaugeMetricFamily(
            "anygle_reactor_lag_max_seconds",
            "Worst reactor lag over the last 10 s (this instance)",
            value=lag.recent_max(),
        )


class Metrics:
    def __init__(
        self,
        instance_id: str,
        lag: ReactorLag | None = None,
        turns: TurnScheduler | None = None,
    ) -> None:
        self.collector = StatsCollector(instance_id, lag, turns)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def render(self, stats: Stats, connections: int) -> bytes:
        self.collector.stats, self.collector.connections = stats, connections
        return generate_latest(self.registry)


CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

__all__ = ["CONTENT_TYPE", "Metrics"]
