"""Choice sets of the API's schema, importable from a host's settings (no Django imports).

A host that generates one OpenAPI schema for its whole site (drf-spectacular's own
``SpectacularAPIView``) includes tasker's endpoints; to give their enums stable names::

    from tasker_django.api.enums import ENUM_NAME_OVERRIDES as TASKER_ENUMS

    SPECTACULAR_SETTINGS = {"ENUM_NAME_OVERRIDES": {**TASKER_ENUMS}}
"""

from __future__ import annotations

OK = "ok"
READY_STATUSES = [OK, "unavailable"]
CHECK_RESULTS = [OK, "down"]
HEALTH_STATUSES = [OK, "degraded"]
STUCK_PROBLEMS = ["enqueued_too_long", "lease_expired", "retry_overdue"]

ENUM_NAME_OVERRIDES: dict[str, str] = {
    "TaskStatusEnum": "tasker_django.models.TaskStatus",
    "StepStatusEnum": "tasker_django.models.StepStatus",
    "AttemptOutcomeEnum": "tasker_django.models.AttemptOutcome",
    "TaskEventKindEnum": "tasker_django.models.TaskEvent.Kind",
    "AlertStatusEnum": "tasker_django.models.AlertStatus",
    "ReadyStatusEnum": "tasker_django.api.enums.READY_STATUSES",
    "CheckResultEnum": "tasker_django.api.enums.CHECK_RESULTS",
    "HealthStatusEnum": "tasker_django.api.enums.HEALTH_STATUSES",
    "StuckProblemEnum": "tasker_django.api.enums.STUCK_PROBLEMS",
}
