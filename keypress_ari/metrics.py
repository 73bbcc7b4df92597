"""Prometheus metrics in the text exposition format (version 0.0.4), with no dependency.

A :class:`Registry` holds metric families (:class:`Counter`, :class:`Gauge`,
:class:`Histogram`), each with fixed label names; ``family.labels(**values)`` gives the child
for one label set. ``Registry.render()`` writes ``# HELP`` / ``# TYPE`` and one sample per
child (histograms: cumulative ``_bucket{le=...}`` including ``+Inf``, ``_sum``, ``_count``).

Label cardinality is bounded: a family keeps at most ``max_series`` label sets; further ones
are counted under every label set to ``"other"``.

:class:`DaemonMetrics` is what the daemon exposes; it learns key presses and call control
actions from the call log ops (``CallLogWriter.add_listener(metrics.observe_op)``).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from keypress_ari.calllog.kinds import EventKind, press_outcome
from keypress_ari.calllog.ops import CallEvent

OVERFLOW = "other"
DEFAULT_MAX_SERIES = 1000
DTMF_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels_text(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs) + "}"


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class GaugeChild:
    __slots__ = ("_function", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function`` at every scrape."""
        self._function = function

    def read(self) -> float:
        return float(self._function()) if self._function is not None else self.value


class HistogramChild:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value
        self.count += 1


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class _Family(ABC, Generic[C]):
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self.max_series = max_series
        self._children: dict[tuple[str, ...], C] = {}
        if not labelnames:
            self._children[()] = self._new()

    @abstractmethod
    def _new(self) -> C:
        """A new child (one label set)."""

    def labels(self, **values: str) -> C:
        try:
            key = tuple([str(values[n]) for n in self.labelnames])
            wrong = len(values) != len(key)
        except KeyError:
            key, wrong = (), True
        if wrong:
            raise ValueError(f"{self.name}: labels must be {', '.join(self.labelnames)}")
        return self.child(*key)

    def child(self, *key: str) -> C:
        """The child of the label values ``key``, in ``labelnames`` order: one dict lookup
        when the series exists (the key press path calls this, not :meth:`labels`)."""
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels must be {', '.join(self.labelnames)}")
            if len(self._children) >= self.max_series:
                key = (OVERFLOW,) * len(self.labelnames)
                child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new()
        return child

    def children(self) -> Iterator[tuple[tuple[tuple[str, str], ...], C]]:
        for key, child in sorted(self._children.items()):
            yield tuple(zip(self.labelnames, key, strict=True)), child

    @abstractmethod
    def samples(self) -> Iterator[str]:
        """The exposition lines of every child."""

    def render(self) -> str:
        head: list[str] = [f"# HELP {self.name} {escape_help(self.help)}",
                           f"# TYPE {self.name} {self.kind}"]
        return "\n".join([*head, *self.samples()])


class Counter(_Family[CounterChild]):
    kind = "counter"

    def _new(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self.child().inc(amount)

    def samples(self) -> Iterator[str]:
        for pairs, child in self.children():
            yield f"{self.name}{_labels_text(pairs)} {format_value(child.value)}"


class Gauge(_Family[GaugeChild]):
    kind = "gauge"

    def _new(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self.child().set(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self.child().set_function(function)

    def samples(self) -> Iterator[str]:
        for pairs, child in self.children():
            try:
                value = child.read()
            except Exception:  # a broken source must not break the scrape
                value = math.nan
            yield f"{self.name}{_labels_text(pairs)} {format_value(value)}"


class Histogram(_Family[HistogramChild]):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DTMF_BUCKETS,
                 max_series: int = DEFAULT_MAX_SERIES) -> None:
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct finite numbers")
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is reserved")
        self.bounds = bounds
        super().__init__(name, help_text, labelnames, max_series)

    def _new(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self.child().observe(value)

    def samples(self) -> Iterator[str]:
        for pairs, child in self.children():
            running = 0
            for bound, count in zip((*child.bounds, math.inf), child.counts, strict=True):
                running += count
                le = (*pairs, ("le", format_value(bound) if math.isinf(bound) else repr(bound)))
                yield f"{self.name}_bucket{_labels_text(le)} {running}"
            yield f"{self.name}_sum{_labels_text(pairs)} {format_value(child.sum)}"
            yield f"{self.name}_count{_labels_text(pairs)} {child.count}"


class Registry:
    def __init__(self) -> None:
        self._families: dict[str, _Family[Any]] = {}

    def _add(self, family: _Family[C]) -> _Family[C]:
        if family.name in self._families:
            raise ValueError(f"metric {family.name} is already registered")
        self._families[family.name] = family
        return family

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        family = Counter(name, help_text, labelnames)
        self._add(family)
        return family

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        family = Gauge(name, help_text, labelnames)
        self._add(family)
        return family

    def histogram(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DTMF_BUCKETS) -> Histogram:
        family = Histogram(name, help_text, labelnames, buckets)
        self._add(family)
        return family

    def render(self) -> str:
        return "".join(f.render() + "\n" for f in self._families.values())


def _split_flow(flow: str | None) -> tuple[str, str]:
    """``"group/label"`` -> ``(group, label)``; ``("none", "none")`` when there is no flow."""
    if not flow:
        return "none", "none"
    group, sep, label = flow.partition("/")
    return (group, label) if sep else ("none", group)


class DaemonMetrics:
    """The daemon's metrics. ``observe_op`` is a ``CallLogWriter`` listener."""

    def __init__(self, calls_active: Callable[[], float] | None = None) -> None:
        self._webhook_source: Callable[[], Mapping[str, float]] | None = None
        self._counter_sources: list[tuple[Counter, Callable[[], float]]] = []  # read at render
        self.journal_full_total: Counter | None = None
        r = self.registry = Registry()
        self.calls_active = r.gauge("keypress_calls_active", "Calls in progress in this daemon.")
        if calls_active is not None:
            self.calls_active.set_function(calls_active)
        self.key_presses = r.counter(
            "keypress_key_presses_total",
            "Key presses by call mode (stasis, fastagi, ami), flow group, flow and outcome "
            "(matched, no_match, ignored).",
            ("mode", "group", "flow", "outcome"))
        self.actions = r.counter(
            "keypress_call_control_actions_total",
            "Call control actions run by flows, by call mode, action and outcome (ok, "
            "skipped, failed).",
            ("mode", "action", "outcome"))
        self.webhooks = r.counter(
            "keypress_webhook_deliveries_total", "Webhook deliveries by outcome.", ("outcome",))
        self.claims = r.counter(
            "keypress_broadcast_claims_total",
            "Calls StasisBroadcast() offered, by outcome (won, lost to another daemon, late, "
            "failed, declined: draining or at broadcast.max_calls).", ("outcome",))
        self.dtmf_to_ari = r.histogram(
            "keypress_dtmf_to_ari_seconds",
            "Time from a DTMF event arriving to the first ARI request it caused.")

    def set_calls_active(self, source: Callable[[], float]) -> None:
        """Read the active call count from ``source`` at every scrape."""
        self.calls_active.set_function(source)

    def set_server_sources(
            self, servers: Mapping[str, tuple[Callable[[], float], Callable[[], float]]]
    ) -> None:
        """Per Asterisk server (``default`` for ``[ari]``, else the ``[[asterisk]]`` name):
        its calls in progress and whether its ARI event stream is connected, read at every
        scrape."""
        r = self.registry
        calls = r.gauge("keypress_server_calls_active",
                        "Calls in progress on each Asterisk server of this daemon.", ("server",))
        up = r.gauge("keypress_server_ari_connected",
                     "1 while the ARI event stream of that Asterisk server is connected.",
                     ("server",))
        for server, (active, connected) in servers.items():
            calls.labels(server=server).set_function(active)
            up.labels(server=server).set_function(connected)

    def set_call_log_source(self, backlog: Callable[[], float],
                            journal_full: Callable[[], float],
                            journal_full_episodes: Callable[[], float],
                            rejected: Callable[[], float] | None = None) -> None:
        """Read the call log writer's state at every scrape: ops not yet in PostgreSQL
        (memory + journal), whether the journal is full, how often it became full, how many
        ops PostgreSQL rejected (set aside). The families are registered here, so a daemon
        without a writer does not show them."""
        r = self.registry
        r.gauge("keypress_call_log_backlog",
                "Call log ops not yet in PostgreSQL (in memory and in the journal)."
                ).set_function(backlog)
        r.gauge("keypress_journal_full",
                "1 while the call log journal is full (ops wait in memory).").set_function(
                    journal_full)
        self.journal_full_total = r.counter(
            "keypress_journal_full_total", "Times the call log journal became full.")
        self._counter_sources.append((self.journal_full_total, journal_full_episodes))
        if rejected is not None:
            self._counter_sources.append((r.counter(
                "keypress_call_log_rejected_total",
                "Call log ops PostgreSQL rejected, set aside in rejected-ops.jsonl."), rejected))

    def set_shared_db_sources(self, buyer_limit_fallbacks: Callable[[], float],
                              listen_reconnects: Callable[[], float]) -> None:
        """Read at every scrape what sharing PostgreSQL with other daemons went through:
        buyer reservations decided on the local count (PostgreSQL did not answer), and
        LISTEN connections re-issued after a drop."""
        r = self.registry
        self._counter_sources.append((r.counter(
            "keypress_buyer_limit_fallbacks_total",
            "Buyer reservations decided on this daemon's own count (PostgreSQL unreachable)."),
            buyer_limit_fallbacks))
        self._counter_sources.append((r.counter(
            "keypress_listen_reconnects_total",
            "Times the catalog LISTEN was re-issued after its connection dropped."),
            listen_reconnects))

    def observe_op(self, op: object) -> None:
        """Count key presses and call control actions from one call log op (never raises)."""
        if type(op) is not CallEvent:
            return
        kind = op.kind
        if kind == EventKind.KEY_PRESS:
            group, flow = _split_flow(op.flow)
            detail = op.detail
            self.key_presses.child(str(detail.get("mode", "stasis")), group, flow,
                                   press_outcome(detail)).inc()
        elif kind == EventKind.CALL_CONTROL_ACTION:
            detail = op.detail
            self.actions.child(str(detail.get("mode", "stasis")),
                               str(detail.get("action", "unknown")),
                               str(detail.get("outcome", "unknown"))).inc()

    def observe_webhook(self, outcome: str) -> None:
        """One webhook delivery attempt finished (``delivered``, ``retry``, ``dead``)."""
        self.webhooks.labels(outcome=outcome).inc()

    def set_webhook_source(self, source: Callable[[], Mapping[str, float]]) -> None:
        """Read delivery counts by outcome from ``source`` at every scrape (e.g. the webhook
        worker's ``counts``), instead of :meth:`observe_webhook`."""
        self._webhook_source = source

    def observe_dtmf_to_ari(self, seconds: float) -> None:
        """Time from a DTMF event's arrival to the first ARI request it led to."""
        self.dtmf_to_ari.observe(seconds)

    def render(self) -> str:
        for counter, source in self._counter_sources:
            with contextlib.suppress(Exception):  # a broken source must not break the scrape
                counter.labels().value = float(source())
        if self._webhook_source is not None:
            try:
                counts = dict(self._webhook_source())
            except Exception:  # a broken source must not break the scrape
                counts = {}
            for outcome, value in counts.items():
                self.webhooks.labels(outcome=str(outcome)).value = float(value)
        return self.registry.render()
