"""Storing task templates in the database and finding them again.

``save_template`` is the only writer of ``NamedTask``/``NamedStep`` rows;
``find_template`` is the TaskConfigFinder of the seed: database first, then the
``TASKER["TEMPLATE_DIRS"]`` laid out as ``{namespace}/{name}/{version}.yaml``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from ..conf import tasker_settings
from ..definitions import TaskTemplate, TemplateError, load_template_file, version_key
from ..exceptions import TemplateConflict, TemplateNotFound
from ..models import NamedStep, NamedStepEdge, NamedTask, Namespace

logger = logging.getLogger(__name__)

CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class SaveResult:
    named_task: NamedTask
    outcome: str  # created | updated | unchanged


def handler_resolver(reference: str) -> object:
    """Resolve a template's ``handler_class`` through the handler registry."""
    from ..handlers.registry import registry

    return registry.resolve(reference)


def save_template(template: TaskTemplate, *, force: bool = False) -> SaveResult:
    """Store ``template``; unchanged content is a no-op, changed content needs ``force``.

    A forced change creates a new revision of the same version and makes it
    current: tasks created earlier stay pinned to the revision they started with.
    """
    with transaction.atomic():
        namespace, _ = Namespace.objects.get_or_create(name=template.namespace)
        current = (
            NamedTask.objects.select_for_update()
            .filter(
                namespace=namespace, name=template.name, version=template.version, is_current=True
            )
            .first()
        )
        if current is not None and current.content_hash == template.content_hash:
            return SaveResult(current, UNCHANGED)
        if current is not None and not force:
            raise TemplateConflict(
                f"{template.namespace}/{template.name}@{template.version} is already loaded with "
                "different content. Give the changed template a new version, or load it with "
                "--force to replace it for new tasks (existing tasks keep the old definition)."
            )
        revision = 1
        if current is not None:
            revision = current.revision + 1
            NamedTask.objects.filter(pk=current.pk).update(is_current=False)
        named_task = NamedTask.objects.create(
            namespace=namespace,
            name=template.name,
            version=template.version,
            revision=revision,
            description=template.description,
            template=template.to_dict(),
            content_hash=template.content_hash,
            environment=template.environment or "",
            source=template.source[:1024],
        )
        _create_steps(named_task, template)
    outcome = CREATED if current is None else UPDATED
    logger.info(
        "template %s/%s@%s %s (revision %s)",
        template.namespace,
        template.name,
        template.version,
        outcome,
        revision,
    )
    return SaveResult(named_task, outcome)


def _create_steps(named_task: NamedTask, template: TaskTemplate) -> None:
    steps = NamedStep.objects.bulk_create(
        [
            NamedStep(
                named_task=named_task,
                name=step.name,
                position=position,
                description=step.description,
                handler_class=step.handler_class,
                handler_config=step.handler_config,
                retryable=step.retryable,
                max_attempts=step.max_attempts,
                skippable=step.skippable,
                timeout_seconds=step.timeout_seconds,
                backoff=step.backoff.to_dict() if step.backoff else None,
                dependent_system=step.dependent_system or "",
                parent_count=len(step.depends_on),
            )
            for position, step in enumerate(template.steps)
        ]
    )
    if not all(s.pk for s in steps):  # backends that cannot return ids from bulk inserts
        steps = list(NamedStep.objects.filter(named_task=named_task))
    by_name = {s.name: s for s in steps}
    NamedStepEdge.objects.bulk_create(
        [
            NamedStepEdge(named_task=named_task, from_step=by_name[parent], to_step=by_name[child])
            for parent, child in template.edges
        ]
    )


def find_template(name: str, namespace: str = "default", version: str | None = None) -> NamedTask:
    """The current revision of a template; ``version=None`` means the latest by semver."""
    candidates = list(
        NamedTask.objects.select_related("namespace").filter(
            namespace__name=namespace, name=name, is_current=True
        )
    )
    if version is not None:
        candidates = [c for c in candidates if c.version == version]
    if not candidates:
        loaded = _load_from_template_dirs(name, namespace, version)
        if loaded is not None:
            return loaded
        wanted = f"{namespace}/{name}" + (f"@{version}" if version else "")
        known = sorted(
            NamedTask.objects.filter(
                namespace__name=namespace, name=name, is_current=True
            ).values_list("version", flat=True)
        )
        hint = f" Loaded versions: {', '.join(known)}." if known else ""
        raise TemplateNotFound(
            f"No task template {wanted}.{hint} Load it with `manage.py tasker_load_templates`."
        )
    return max(candidates, key=lambda c: version_key(c.version))


def _load_from_template_dirs(name: str, namespace: str, version: str | None) -> NamedTask | None:
    if version is not None and ("/" in version or "\\" in version or version.startswith(".")):
        return None
    for base in tasker_settings.TEMPLATE_DIRS:
        root = Path(base).resolve()
        folder = (root / namespace / name).resolve()
        if not folder.is_relative_to(root) or folder == root:
            continue  # "..", absolute parts: never read outside the template directory
        if version is not None:
            files = [
                p for p in (folder / f"{version}.yaml", folder / f"{version}.yml") if p.is_file()
            ]
        else:
            files = sorted(
                (p for p in folder.glob("*.y*ml") if p.is_file()),
                key=lambda p: version_key(p.stem),
                reverse=True,
            )
        for path in files[:1]:
            try:
                template = load_template_file(
                    path,
                    environment=tasker_settings.ENVIRONMENT,
                    handler_resolver=handler_resolver,
                )
            except TemplateError as exc:
                raise TemplateNotFound(f"Template file {path} is invalid:\n{exc}") from exc
            if template.namespace != namespace or template.name != name:
                raise TemplateNotFound(
                    f"{path} declares {template.namespace}/{template.name}, "
                    f"expected {namespace}/{name}."
                )
            return save_template(template).named_task
    return None
