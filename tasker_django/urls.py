"""URLs of tasker-django: mount with ``path("tasker/", include("tasker_django.urls"))``."""

from django.urls import include, path

app_name = "tasker"

urlpatterns = [path("", include("tasker_django.api.urls"))]
