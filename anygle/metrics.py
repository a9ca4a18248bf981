"""``GET /metrics``: the seed's metrics (online users, queues, chats, matches, match time,
moderation actions) and reports, in the Prometheus text format, from the engine's service-wide
view; and this instance's reactor lag (``anygle/reactorlag.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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


@dataclass(eq=False)
class Metrics:
    """A custom collector over one :class:`Stats` snapshot (the one :meth:`render` is given),
    in a registry of its own: no globals."""

    instance_id: str
    lag: ReactorLag | None = None
    turns: TurnScheduler | None = None
    stats: Stats = field(default_factory=Stats, init=False)
    connections: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self, stats: Stats, connections: int) -> bytes:
        self.stats, self.connections = stats, connections
        return generate_latest(self.registry)

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


CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

__all__ = ["CONTENT_TYPE", "Metrics"]
