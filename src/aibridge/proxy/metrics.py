"""The proxy's Prometheus series (reference §8.4, under the ``aibridge_proxy_`` prefix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ProxyMetrics:
    """Connect sessions, MITM requests and responses, in-flight requests, routing state."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connect_sessions = Counter(
            "aibridge_proxy_connect_sessions_total",
            "CONNECT sessions accepted, by type (mitm or tunneled).",
            ["type"],
            registry=r,
        )
        self.mitm_requests = Counter(
            "aibridge_proxy_mitm_requests_total",
            "Decrypted requests sent to the gateway, by provider.",
            ["provider"],
            registry=r,
        )
        self.inflight = Gauge(
            "aibridge_proxy_inflight_mitm_requests",
            "Decrypted requests waiting for or streaming the gateway's response, by provider.",
            ["provider"],
            registry=r,
        )
        self.mitm_responses = Counter(
            "aibridge_proxy_mitm_responses_total",
            "Responses to decrypted requests, by status code and provider.",
            ["code", "provider"],
            registry=r,
        )
        self.provider_info = Gauge(
            "aibridge_proxy_provider_info",
            "1 per provider of the routing map's last reload, labelled with its status "
            "(enabled, disabled, error, proxy_excluded).",
            ["provider_name", "provider_type", "status"],
            registry=r,
        )
        self.last_reload = Gauge(
            "aibridge_proxy_providers_last_reload_timestamp_seconds",
            "Unix time of the last routing reload attempt.",
            registry=r,
        )
        self.last_reload_success = Gauge(
            "aibridge_proxy_providers_last_reload_success_timestamp_seconds",
            "Unix time of the last successful routing reload.",
            registry=r,
        )
