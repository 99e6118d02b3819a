from django.apps import AppConfig


class TaskerConfig(AppConfig):
    name = "tasker_django"
    label = "tasker_django"
    verbose_name = "Tasker workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers system checks)
        from .handlers.discovery import autodiscover

        autodiscover()
        from .security import checks as _security_checks  # noqa: F401  (E010, W010, W011)
        from .security.logging import install

        install()  # card numbers masked in the tasker_django logs (TASKER['MASK_LOGS'])
