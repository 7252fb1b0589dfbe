"""The authenticated caller a request is attributed to (a value; no database, no HTTP)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller: who the request is attributed to."""

    user_id: uuid.UUID
    username: str
    role: str
    key_id: str

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"
