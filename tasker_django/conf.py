"""The ``TASKER`` settings dict, read lazily through :data:`tasker_settings`.

Modelled on DRF's ``api_settings``: every key has a default in :data:`DEFAULTS`,
values are read from ``settings.TASKER`` on first access, dotted paths listed in
:data:`IMPORT_STRINGS` are imported on access, and the cache is dropped when a
test uses ``override_settings(TASKER=...)``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # Attempts of a step (first included) when a template names none.
    "DEFAULT_MAX_ATTEMPTS": 3,
    # Exponential backoff used when a step has no ``retry_backoff``.
    "DEFAULT_BACKOFF": {
        "initial_delay": 1.0,
        "max_delay": 300.0,
        "multiplier": 2.0,
        "jitter": True,
    },
    # Per-step timeout in seconds when a template names none (None: no limit).
    "DEFAULT_STEP_TIMEOUT": 300,
    # Seconds a worker holds a running step before it counts as lost.
    "LEASE_SECONDS": 60,
    # Seconds after which an enqueued step whose kick was lost is kicked again.
    "REKICK_AFTER_SECONDS": 30,
    # How often the sweeper of ``tasker_worker`` runs, in seconds.
    "SWEEP_INTERVAL": 0.5,
    # Eager continuation: a worker may run a just-readied child itself.
    "EAGER_CONTINUATION": True,
    "EAGER_MAX_STEPS": 50,
    "EAGER_MAX_SECONDS": 10.0,
    # The other children it readies are held for it to run next; any it has not
    # started after this many seconds are kicked (0: kick them at once).
    "EAGER_HOLD_SECONDS": 0.05,
    # Directories searched by the template finder, laid out as
    # {namespace}/{name}/{version}.yaml
    "TEMPLATE_DIRS": [],
    # Environment applied when templates are loaded without --environment.
    "ENVIRONMENT": None,
    # Handlers registered from settings: [{"name", "class", "config", "namespace", "version"}]
    "HANDLERS": [],
    # A YAML file with a top-level ``handlers:`` list in the same shape.
    "HANDLERS_FILE": None,
    # Module name looked up in every installed app at start-up.
    "HANDLER_MODULE": "tasker_handlers",
    # PostgreSQL: run the engine's two hot statements as server-side prepared
    # statements (planned once per connection). Turn off behind a pooler that cannot
    # keep prepared statements (PgBouncer in transaction mode before 1.21).
    "PG_PREPARED_STATEMENTS": True,
    # PostgreSQL: False lets the engine's claim and finish statements commit without
    # waiting for the flush to disk (synchronous_commit=off for those transactions):
    # faster, but a crash of the database server can undo the last fraction of a
    # second of step transitions (their steps run again). See the README.
    "PG_SYNCHRONOUS_COMMIT": True,
    # Escalation actions named by templates' error_handling.escalation_rules:
    # {"escalate_to_support": "myapp.escalations.page_support"}; each is called
    # with the escalation event (a dict) after the failed attempt commits.
    "ESCALATION_ACTIONS": {},
    # Event sinks templates route events to (events.step_events[].publish_to):
    # {"monitoring": "myapp.sinks.Monitoring"}, a dotted path to a callable taking an
    # event dict or to a class (instantiated once). "audit_log" and "logging" are
    # built in (docs/events.md).
    "EVENT_SINKS": {},
    # -- Services and test scenarios (docs/testing.md) --
    # External services handlers get with ``self.service(name)``: {"payment_gateway":
    # "myapp.gateways.Stripe"} (a class or dotted path, instantiated without arguments).
    "SERVICES": {},
    # Mocks named by templates' testing.mock_services: {"mock_stripe":
    # "myapp.mocks.MockStripe"}; in a test scenario each is created with the scenario.
    "MOCK_SERVICES": {},
    # -- Monitoring (docs/monitoring.md) --
    # Seconds of history an alert condition looks at (tasker_evaluate_alerts --window).
    "ALERT_WINDOW": 300,
    # Seconds between scheduled alert evaluations (django-q2 schedules have minute
    # resolution: rounded up to whole minutes).
    "ALERT_INTERVAL": 60,
    # True: tasker_worker installs (or updates) the alert schedule when it starts.
    "ALERT_SCHEDULE": False,
    # -- Security (docs/security.md) --
    # Keys whose values are masked in the admin, API, logs, events and errors (a key
    # matches when equal or ending in ``_<name>``); templates add
    # ``security.sensitive_fields``. None: tasker_django.security.masking's defaults.
    "SENSITIVE_FIELDS": None,
    # AES-256-GCM keys for templates with security.encryption.enabled: base64 of 32
    # bytes, newest first (the newest encrypts, all decrypt). An entry may be a dict
    # {"key": ..., "id": ..., "created": "YYYY-MM-DD"}; ``created`` lets check W010
    # compare the newest key's age with key_rotation_interval.
    "ENCRYPTION_KEYS": [],
    # Mask card numbers in the messages of the "tasker_django..." loggers (MaskingFilter).
    "MASK_LOGS": True,
    # -- REST API (tasker_django.urls); see docs/api.md --
    # Page size of every list, and the largest ``page_size`` a client may ask for.
    "API_PAGE_SIZE": 50,
    "API_MAX_PAGE_SIZE": 500,
    # Largest task context / step results accepted over the API, in bytes of JSON (413).
    "API_MAX_CONTEXT_BYTES": 1_048_576,
    "API_MAX_RESULTS_BYTES": 1_048_576,
    # Dotted path of ``(user, namespace, action) -> bool`` restricting access per
    # namespace; action is view, create, cancel, retry or resolve. None: no restriction.
    "API_NAMESPACE_ACCESS": None,
    # Serve /metrics without authentication (for a scraper on a private network).
    "API_METRICS_PUBLIC": False,
    # health/status and metrics count a step as stuck after this many seconds.
    "API_STUCK_AFTER_SECONDS": 300,
    # Steps embedded in a task's detail; larger tasks page through tasks/{id}/steps/.
    "API_TASK_DETAIL_MAX_STEPS": 1000,
}

#: Settings holding dotted paths that are imported on access.
IMPORT_STRINGS: frozenset[str] = frozenset({"API_NAMESPACE_ACCESS"})

#: Keys that were renamed; reading them raises with a hint.
REMOVED: dict[str, str] = {}


class TaskerSettings:
    """Attribute access to ``settings.TASKER`` with defaults."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        if not hasattr(self, "_user_settings"):
            self._user_settings = dict(getattr(settings, "TASKER", None) or {})
        return self._user_settings

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr not in self.defaults:
            raise AttributeError(f"Invalid TASKER setting: {attr!r}")
        value = self.user_settings.get(attr, self.defaults[attr])
        if attr in IMPORT_STRINGS and isinstance(value, str):
            value = import_string(value)
        self._cached.add(attr)
        setattr(self, attr, value)
        return value

    def reload(self) -> None:
        for attr in self._cached:
            delattr(self, attr)
        self._cached.clear()
        if hasattr(self, "_user_settings"):
            delattr(self, "_user_settings")


tasker_settings = TaskerSettings(DEFAULTS)


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKER":
        tasker_settings.reload()


setting_changed.connect(_reload)
