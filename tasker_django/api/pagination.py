"""Page-number pagination on every list: ``?page=2&page_size=100``."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from ..conf import tasker_settings


class TaskerPagination(PageNumberPagination):
    page_size_query_param = "page_size"

    def get_page_size(self, request: Request) -> int:
        self.page_size = int(tasker_settings.API_PAGE_SIZE)
        self.max_page_size = int(tasker_settings.API_MAX_PAGE_SIZE)
        return int(super().get_page_size(request) or self.page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
        return parameters
