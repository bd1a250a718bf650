"""A real Confluent-compatible schema registry for tests and demos, without Docker.

``LocalRegistry`` runs Apicurio Registry (in-memory storage) in a child JVM;
``schema_registry_url`` picks ``$CONVMETRICS_SCHEMA_REGISTRY_URL`` or a ``LocalRegistry``.
"""

from convmetrics.localregistry.server import (
    APICURIO_VERSION,
    CCOMPAT_PATH,
    LocalRegistry,
    LocalRegistryError,
    apicurio_home,
    schema_registry_url,
)

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "LocalRegistry",
    "LocalRegistryError",
    "apicurio_home",
    "schema_registry_url",
]
