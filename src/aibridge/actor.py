"""The authenticated caller a request is attributed to (a value; no database, no HTTP)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aibridge.limits import NO_LIMITS, Limits


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller: who the request is attributed to."""

    user_id: uuid.UUID
    username: str
    role: str
    key_id: str
    user_limits: Limits = NO_LIMITS
    """The user's own limits as stored (unset fields inherit the configured defaults)."""
    key_limits: Limits = NO_LIMITS
    """The presented key's own limits as stored (the stricter of user and key wins)."""

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"
