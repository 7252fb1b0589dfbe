"""Provider types, routes and upstream auth, plus the per-provider key ring and circuit breaker."""
