"""The services this product serves: the one list the host, config, tests and benchmark read.

Adding a feature: its folder (domain, prompts, convert, servicer with a
`ServiceDefinition`) and one line in `SERVICES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from genai_services.common import ServiceDefinition
from genai_services.feed.servicer import SERVICE as FEED
from genai_services.messaging.servicer import SERVICE as MESSAGING
from genai_services.search.servicer import SERVICE as SEARCH

SERVICES: tuple[ServiceDefinition, ...] = (
    FEED,
    MESSAGING,
    SEARCH,
)


class ServiceRegistry:
    """An ordered set of service definitions with unique names.

    Args:
        definitions: the services, in the order they are mounted and listed.
    Raises:
        ValueError: two definitions share a config name or a proto service name.
    """

    def __init__(self, definitions: Iterable[ServiceDefinition]) -> None:
        self.definitions = tuple(definitions)
        for attr in ("name", "full_name"):
            values = [getattr(d, attr) for d in self.definitions]
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"services registered twice ({attr}): {duplicates}")

    @property
    def names(self) -> tuple[str, ...]:
        """Config names, in registry order."""
        return tuple(d.name for d in self.definitions)

    @property
    def full_names(self) -> tuple[str, ...]:
        """Proto service names ("package.Service"), in registry order."""
        return tuple(d.full_name for d in self.definitions)

    def by_name(self) -> dict[str, ServiceDefinition]:
        return {d.name: d for d in self.definitions}

    def select(self, names: Sequence[str] | None) -> tuple[ServiceDefinition, ...]:
        """The definitions of `names` in that order; every one when None.

        Raises:
            ValueError: a name is not registered.
        """
        if names is None:
            return self.definitions
        known = self.by_name()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown services {unknown}; known: {', '.join(self.names)}")
        return tuple(known[n] for n in names)

    def method_priorities(self) -> dict[str, int]:
        """Each service's default priorities, keyed "package.Service/Method"."""
        return {f"{d.full_name}/{m}": p for d in self.definitions for m, p in d.method_priorities.items()}

    def extended(self, *definitions: ServiceDefinition) -> ServiceRegistry:
        """This registry with `definitions` appended (a deployment's own or a test's)."""
        return ServiceRegistry((*self.definitions, *definitions))


REGISTRY = ServiceRegistry(SERVICES)


def by_name() -> Mapping[str, ServiceDefinition]:
    """The product's services by config name."""
    return REGISTRY.by_name()
