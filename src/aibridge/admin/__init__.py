"""The admin HTTP API under ``/api/v1`` (admin role, JSON, OpenAPI document)."""
