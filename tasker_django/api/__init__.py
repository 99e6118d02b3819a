"""The REST API (Django REST framework): mounted by ``tasker_django.urls``; see docs/api.md."""
