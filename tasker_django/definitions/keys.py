"""Every template key tasker knows, and the keys it accepts but that do nothing.

``docs/templates.md`` ("Every key") documents each key listed here; a test keeps
them in step. System check W013 names each key of a loaded template that is in
:data:`NO_EFFECT` or is not known at all, so nothing a template says is silently
ignored.

Paths use ``.`` between mapping keys and ``[]`` for list items. Under the paths in
:data:`OPEN` the template holds user data (JSON Schemas, handler config, test data):
nothing below them is checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .parse import TOP_LEVEL_KEYS

#: Keys whose content is the user's own data.
OPEN: frozenset[str] = frozenset(
    {
        "schema",
        "input_schema",
        "environments",
        "step_templates[].handler_config",
        "steps[].handler_config",
        "custom_events[].schema",
        "custom_events[].payload_schema",
        "events.custom_events[].schema",
        "events.custom_events[].payload_schema",
        "step_templates[].custom_events[].schema",
        "step_templates[].custom_events[].payload_schema",
        "testing.test_data",
        "testing.mock_services",
        "testing.test_scenarios[].context",
        "task_config.tags",
    }
)

#: Keys accepted without effect, with the reason W013 gives.
NO_EFFECT: dict[str, str] = {
    "constraints.technical_constraints[].memory_limit": (
        "steps share worker processes, so a per-step memory limit cannot be enforced; "
        "limit the worker process instead"
    ),
    "constraints.technical_constraints[].cpu_limit": (
        "steps share worker processes, so a per-step CPU limit cannot be enforced; "
        "limit the worker process instead"
    ),
    "performance.batching.batch_timeout": (
        "kicks are never held back to fill a batch (that would only add latency)"
    ),
}

#: Keys with behaviour (the description is the short form of the docs table).
KNOWN: frozenset[str] = frozenset(
    {
        # identity and the task-wide mappings (parse.py reads them itself)
        *TOP_LEVEL_KEYS,
        # steps
        "step_templates",
        "steps",
        *(
            f"{key}[].{member}"
            for key in ("step_templates", "steps")
            for member in (
                "name",
                "description",
                "handler_class",
                "handler_config",
                "depends_on_step",
                "depends_on_steps",
                "default_retryable",
                "default_retry_limit",
                "retryable",
                "retry_limit",
                "max_attempts",
                "skippable",
                "timeout_seconds",
                "dependent_system",
                "retry_backoff",
                "retry_backoff.strategy",
                "retry_backoff.initial_delay",
                "retry_backoff.max_delay",
                "retry_backoff.multiplier",
                "retry_backoff.jitter",
                "retry",
                "retry.retryable",
                "retry.max_attempts",
                "retry.backoff",
                "retry.backoff_base_ms",
                "retry.max_backoff_ms",
                "custom_events",
                "custom_events[].name",
                "custom_events[].description",
                "custom_events[].schema",
                "custom_events[].payload_schema",
            )
        ),
        # task-wide settings
        "task_config",
        "task_config.timeout_seconds",
        "task_config.retry_limit",
        "task_config.retryable",
        "task_config.priority",
        "task_config.tags",
        "settings",
        "settings.max_execution_time",
        "settings.default_retry_limit",
        "settings.default_timeout",
        "settings.error_handling",
        "settings.event_publishing",
        "workflow_config",
        "workflow_config.execution_mode",
        "workflow_config.failure_strategy",
        "workflow_config.max_concurrent_steps",
        "workflow_config.step_timeout_buffer",
        # constraints
        "constraints",
        "constraints.business_rules",
        "constraints.business_rules[].name",
        "constraints.business_rules[].type",
        "constraints.business_rules[].rule",
        "constraints.business_rules[].error_message",
        "constraints.technical_constraints",
        "constraints.technical_constraints[].name",
        "constraints.technical_constraints[].value",
        "constraints.technical_constraints[].description",
        # errors
        "error_handling",
        "error_handling.permanent_errors",
        "error_handling.retryable_errors",
        "error_handling.escalation_rules",
        "error_handling.escalation_rules[].condition",
        "error_handling.escalation_rules[].action",
        # events
        "custom_events",
        "custom_events[].name",
        "custom_events[].description",
        "custom_events[].schema",
        "custom_events[].payload_schema",
        "events",
        "events.publish_step_started",
        "events.publish_step_completed",
        "events.publish_step_failed",
        "events.publish_step_retried",
        "events.publish_task_started",
        "events.publish_task_completed",
        "events.publish_task_failed",
        "events.custom_events",
        "events.custom_events[].name",
        "events.custom_events[].description",
        "events.custom_events[].schema",
        "events.custom_events[].payload_schema",
        "events.step_events",
        "events.step_events[].event",
        "events.step_events[].publish_to",
        "events.workflow_events",
        "events.workflow_events[].event",
        "events.workflow_events[].publish_to",
        # monitoring
        "monitoring",
        "monitoring.metrics",
        "monitoring.metrics[].name",
        "monitoring.metrics[].type",
        "monitoring.metrics[].description",
        "monitoring.metrics[].buckets",
        "monitoring.alerts",
        "monitoring.alerts[].name",
        "monitoring.alerts[].condition",
        "monitoring.alerts[].severity",
        "monitoring.alerts[].description",
        # security
        "security",
        "security.sensitive_fields",
        "security.encryption",
        "security.encryption.enabled",
        "security.encryption.algorithm",
        "security.encryption.key_rotation_interval",
        "security.pci_compliance",
        "security.pci_compliance.enabled",
        "security.pci_compliance.audit_level",
        "security.pci_compliance.data_retention",
        "security.access_control",
        "security.access_control.authentication_required",
        "security.access_control.authorization_method",
        "security.access_control.allowed_roles",
        "security.audit_logging",
        "security.audit_logging.enabled",
        "security.audit_logging.log_level",
        "security.audit_logging.include_sensitive_data",
        "security.audit_logging.retention_period",
        # performance
        "performance",
        "performance.concurrency",
        "performance.concurrency.max_concurrent_workflows",
        "performance.concurrency.max_concurrent_steps",
        "performance.concurrency.queue_size",
        "performance.batching",
        "performance.batching.enabled",
        "performance.batching.batch_size",
        "performance.database_pool",
        "performance.database_pool.min_connections",
        "performance.database_pool.max_connections",
        "performance.database_pool.connection_timeout",
        "performance.caching",
        "performance.caching.enabled",
        "performance.caching.cache_type",
        "performance.caching.ttl",
        # testing
        "testing",
        "testing.test_data",
        "testing.mock_services",
        "testing.test_scenarios",
        "testing.test_scenarios[].name",
        "testing.test_scenarios[].description",
        "testing.test_scenarios[].context",
        "testing.test_scenarios[].steps",
        "testing.test_scenarios[].expected_error",
        "testing.test_scenarios[].timeout_step",
        "testing.test_scenarios[].retry_expected",
    }
)


def key_paths(data: Any, prefix: str = "") -> Iterator[str]:
    """Every key path of raw template data, not descending into :data:`OPEN` keys."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            if path not in OPEN:
                yield from key_paths(value, path)
    elif isinstance(data, list):
        for item in data:
            yield from key_paths(item, f"{prefix}[]")


def inert_keys(data: Any) -> list[tuple[str, str]]:
    """``(path, reason)`` for every key of raw template data that does nothing."""
    found: dict[str, str] = {}
    for path in key_paths(data):
        if path in NO_EFFECT:
            found[path] = f"has no effect: {NO_EFFECT[path]}"
        elif path not in KNOWN and not _under_open(path):
            found[path] = "is not a template key tasker knows, so it has no effect"
    return sorted(found.items())


def _under_open(path: str) -> bool:
    return any(path.startswith(prefix + ".") or path.startswith(prefix + "[]") for prefix in OPEN)


def stored_raw(template: Mapping[str, Any]) -> dict[str, Any]:
    """The raw-looking keys of a stored (``TaskTemplate.to_dict()``) template.

    Steps are stored normalised: their unknown keys are kept in ``extra``, which is
    what a check can still see of them.
    """
    raw: dict[str, Any] = {
        key: template[key]
        for key in ("task_config", "settings", "workflow_config")
        if template.get(key)
    }
    raw.update(template.get("sections") or {})
    extras = [step.get("extra") or {} for step in template.get("steps") or []]
    if any(extras):
        raw["step_templates"] = extras
    return raw


#: ``performance.caching.cache_type`` -> the Django cache backends that give it.
CACHE_BACKENDS = {
    "redis": ("django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"),
    "memcached": (
        "django.core.cache.backends.memcached.PyMemcacheCache",
        "django.core.cache.backends.memcached.PyLibMCCache",
    ),
    "database": ("django.core.cache.backends.db.DatabaseCache",),
    "memory": ("django.core.cache.backends.locmem.LocMemCache",),
    "file": ("django.core.cache.backends.filebased.FileBasedCache",),
}


def deployment_gaps(
    template: Mapping[str, Any], databases: Mapping[str, Any], caches: Mapping[str, Any]
) -> list[str]:
    """Where ``performance.database_pool`` / ``caching`` ask for what the settings lack.

    ``database_pool`` maps to the ``default`` database's connection pool (Django 5.1+
    on PostgreSQL: ``OPTIONS["pool"]`` with ``min_size``, ``max_size``, ``timeout``);
    ``caching`` maps to ``CACHES["default"]`` (``BACKEND`` and ``TIMEOUT``).
    """
    performance = (template.get("sections") or {}).get("performance") or {}
    gaps: list[str] = []
    pool_ask = performance.get("database_pool")
    if isinstance(pool_ask, Mapping) and pool_ask:
        db = databases.get("default") or {}
        pool = (db.get("OPTIONS") or {}).get("pool")
        if "postgresql" not in str(db.get("ENGINE", "")):
            gaps.append(
                "performance.database_pool asks for a connection pool; the default database "
                f"({db.get('ENGINE', '?')}) has none (pools need PostgreSQL)"
            )
        elif not pool:
            gaps.append(
                "performance.database_pool asks for a connection pool; DATABASES['default']"
                "['OPTIONS']['pool'] is not set"
            )
        elif isinstance(pool, Mapping):
            for key, option in (
                ("min_connections", "min_size"),
                ("max_connections", "max_size"),
                ("connection_timeout", "timeout"),
            ):
                if key in pool_ask and option in pool and pool[option] != pool_ask[key]:
                    gaps.append(
                        f"performance.database_pool.{key} is {pool_ask[key]!r} but the pool's "
                        f"{option} is {pool[option]!r}"
                    )
    cache_ask = performance.get("caching")
    if isinstance(cache_ask, Mapping) and cache_ask.get("enabled", True):
        cache = caches.get("default") or {}
        backend = str(cache.get("BACKEND", ""))
        wanted = cache_ask.get("cache_type")
        if isinstance(wanted, str) and wanted in CACHE_BACKENDS:
            if backend not in CACHE_BACKENDS[wanted]:
                gaps.append(
                    f"performance.caching.cache_type is {wanted!r} but CACHES['default'] "
                    f"uses {backend or 'nothing'}"
                )
        elif wanted is not None:
            gaps.append(f"performance.caching.cache_type {wanted!r} is not one tasker knows")
        ttl = cache_ask.get("ttl")
        timeout = cache.get("TIMEOUT", 300)
        if ttl is not None and timeout != ttl:
            gaps.append(
                f"performance.caching.ttl is {ttl!r} but CACHES['default']['TIMEOUT'] is "
                f"{timeout!r}"
            )
    return gaps
