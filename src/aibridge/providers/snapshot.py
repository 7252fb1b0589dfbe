"""The provider runtimes one reload built, as an immutable snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aibridge.providers.base import DisabledProvider, Provider


@dataclass(frozen=True)
class ProviderSnapshot:
    """An immutable set of provider runtimes with the generation it was built at."""

    generation: int
    providers: Mapping[str, Provider | DisabledProvider] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Provider | DisabledProvider | None:
        """The runtime named ``name``."""
        return self.providers.get(name)
