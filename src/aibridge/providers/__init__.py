"""Provider types, routes and upstream auth, plus the per-provider key pool and circuit breaker."""
