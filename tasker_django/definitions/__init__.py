"""Task template definitions: YAML parsing, validation and the DAG helpers.

Pure Python: nothing here imports Django, so it runs without settings.
"""

from .errors import TemplateError, TemplateIssue
from .graph import dependency_levels, find_cycle, topological_order
from .model import Backoff, StepDefinition, TaskTemplate
from .parse import iter_template_files, load_template_file, parse_template
from .semver import version_key

__all__ = [
    "Backoff",
    "StepDefinition",
    "TaskTemplate",
    "TemplateError",
    "TemplateIssue",
    "dependency_levels",
    "find_cycle",
    "iter_template_files",
    "load_template_file",
    "parse_template",
    "topological_order",
    "version_key",
]
