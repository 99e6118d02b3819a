"""Turn template YAML into a validated ``TaskTemplate``, reporting every problem at once."""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from .errors import PathPart, TemplateError, TemplateIssue
from .format_schema import (
    BACKOFF_STRATEGIES,
    FORMAT_VALIDATOR,
    SCHEMA_META_VALIDATOR,
    STEP_PROPERTIES,
)
from .graph import find_cycle
from .model import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_MAX_DELAY,
    DEFAULT_MULTIPLIER,
    Backoff,
    StepDefinition,
    TaskTemplate,
)
from .yamlload import LoadedYaml, load_yaml

HandlerResolver = Callable[[str], object]
KeyPath = tuple[PathPart, ...]

TOP_LEVEL_KEYS = frozenset(
    {
        "name",
        "namespace",
        "namespace_name",
        "version",
        "description",
        "module_namespace",
        "task_handler_class",
        "default_dependent_system",
        "named_steps",
        "schema",
        "input_schema",
        "step_templates",
        "steps",
        "task_config",
        "settings",
        "workflow_config",
        "environments",
        "custom_events",
    }
)
STEP_KEYS = frozenset(STEP_PROPERTIES)
MAX_CYCLES_REPORTED = 10


#: Where templates hold conditions: (section, list key, condition key).
CONDITIONS = (
    ("constraints", "business_rules", "rule"),
    ("error_handling", "escalation_rules", "condition"),
    ("monitoring", "alerts", "condition"),
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merged recursively; any other value in ``override`` replaces the base one."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class _Defaults:
    """Template-wide fallbacks for steps that name none."""

    max_attempts: int | None
    timeout_seconds: float | None
    dependent_system: str | None
    #: ``task_config.retryable``: steps that do not say are retryable unless false.
    retryable: bool = True


@dataclass
class _RawStep:
    """A step's keys under their canonical names, each with the path it was written at."""

    path: KeyPath
    values: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, KeyPath] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any, path: KeyPath) -> None:
        self.values[key] = value
        self.paths[key] = path

    def merged(self, override: _RawStep) -> _RawStep:
        """This step with an environment override applied."""
        result = _RawStep(self.path, dict(self.values), dict(self.paths), dict(self.extra))
        for key, value in override.values.items():
            if key == "name":
                continue
            old = result.values.get(key)
            if key == "handler_config" and isinstance(old, dict) and isinstance(value, dict):
                value = deep_merge(old, value)
            result.put(key, value, override.paths[key])
        result.extra.update(override.extra)
        return result


class _Parser:
    def __init__(
        self,
        loaded: LoadedYaml,
        environment: str | None,
        handler_resolver: HandlerResolver | None,
    ) -> None:
        self.loaded = loaded
        self.environment = environment
        self.handler_resolver = handler_resolver
        self.issues: list[TemplateIssue] = list(loaded.issues)

    def add(self, path: KeyPath, message: str) -> None:
        self.issues.append(self.loaded.issue(path, message))

    def alias(self, mapping: Mapping[str, Any], path: KeyPath, canonical: str, alias: str) -> str:
        """The key to read: ``canonical`` unless only ``alias`` is given (both is an error)."""
        if canonical in mapping and alias in mapping:
            self.add((*path, alias), f"{alias!r} is an alias of {canonical!r}; give only one")
        return alias if alias in mapping and canonical not in mapping else canonical

    def schema_errors(
        self, validator: Draft202012Validator, instance: Any, path: KeyPath, prefix: str = ""
    ) -> None:
        """Report each distinct error of ``validator`` on ``instance`` (found under ``path``)."""
        seen: set[tuple[KeyPath, str]] = set()
        for error in validator.iter_errors(instance):
            if error.context:  # anyOf/oneOf: the most relevant alternative says more
                error = best_match(error.context) or error
            where = (*path, *error.absolute_path)
            if (where, error.message) not in seen:
                seen.add((where, error.message))
                self.add(where, prefix + error.message)

    def check_json_schema(self, schema: Any, path: KeyPath) -> None:
        if isinstance(schema, dict):
            self.schema_errors(SCHEMA_META_VALIDATOR, schema, path, "invalid JSON Schema: ")

    def events(self, value: Any, path: KeyPath) -> tuple[dict[str, Any], ...]:
        if not isinstance(value, list):
            return ()
        for index, event in enumerate(value):
            if isinstance(event, dict):
                self.check_json_schema(event.get("schema"), (*path, index, "schema"))
        return tuple(copy.deepcopy(e) for e in value if isinstance(e, dict))

    # -- steps ---------------------------------------------------------------------------

    def raw_step(self, item: Mapping[str, Any], path: KeyPath) -> _RawStep:
        raw = _RawStep(path)
        for key, value in item.items():
            here = (*path, key)
            if key == "handler" and isinstance(value, dict):
                for member, canonical in (
                    ("callable", "handler_class"),
                    ("initialization", "handler_config"),
                ):
                    if member not in value:
                        continue
                    if canonical in item:
                        self.add(
                            (*here, member),
                            f"'handler.{member}' is an alias of {canonical!r}; give only one",
                        )
                    else:
                        raw.put(canonical, value[member], (*here, member))
            elif key == "dependencies":
                if "depends_on_steps" in item:
                    self.add(
                        here, "'dependencies' is an alias of 'depends_on_steps'; give only one"
                    )
                else:
                    raw.put("depends_on_steps", value, here)
            elif key == "retry" and isinstance(value, dict):
                self.retry_alias(item, value, here, raw)
            elif key in STEP_KEYS:
                raw.put(key, value, here)
            else:
                raw.extra[key] = value
        return raw

    def retry_alias(
        self, item: Mapping[str, Any], retry: Mapping[str, Any], path: KeyPath, raw: _RawStep
    ) -> None:
        for member, canonical in (
            ("retryable", "default_retryable"),
            ("max_attempts", "default_retry_limit"),
        ):
            if member not in retry:
                continue
            if canonical in item:
                self.add(
                    (*path, member), f"'retry.{member}' is an alias of {canonical!r}; give only one"
                )
            else:
                raw.put(canonical, retry[member], (*path, member))
        members = [m for m in ("backoff", "backoff_base_ms", "max_backoff_ms") if m in retry]
        if not members:
            return
        if "retry_backoff" in item:
            self.add(
                (*path, members[0]),
                "'retry.backoff*' is an alias of 'retry_backoff'; give only one",
            )
            return
        backoff: dict[str, Any] = {}
        if "backoff" in retry:
            backoff["strategy"] = retry["backoff"]
        for member, target in (
            ("backoff_base_ms", "initial_delay"),
            ("max_backoff_ms", "max_delay"),
        ):
            if member in retry and _is_number(retry[member]):
                backoff[target] = retry[member] / 1000.0
        raw.put("retry_backoff", backoff, path)

    def backoff(self, raw: _RawStep) -> Backoff | None:
        value = raw.values.get("retry_backoff")
        if isinstance(value, str):
            return Backoff(strategy=value) if value in BACKOFF_STRATEGIES else None
        if not isinstance(value, dict):
            return None

        def number(key: str, default: float) -> float:
            number = _as_float(value.get(key))
            return default if number is None else number

        strategy = value.get("strategy")
        jitter = value.get("jitter")
        backoff = Backoff(
            strategy=strategy if strategy in BACKOFF_STRATEGIES else "exponential",
            initial_delay=number("initial_delay", DEFAULT_INITIAL_DELAY),
            max_delay=number("max_delay", DEFAULT_MAX_DELAY),
            multiplier=number("multiplier", DEFAULT_MULTIPLIER),
            jitter=jitter if isinstance(jitter, bool) else True,
        )
        if backoff.max_delay < backoff.initial_delay:
            self.add(
                raw.paths["retry_backoff"],
                f"max_delay ({backoff.max_delay:g}s) is smaller than "
                f"initial_delay ({backoff.initial_delay:g}s)",
            )
        return backoff

    def dependencies(self, raw: _RawStep) -> list[tuple[str, KeyPath]]:
        found: list[tuple[str, KeyPath]] = []
        seen: set[str] = set()
        for key, value in raw.values.items():
            entries: list[tuple[Any, KeyPath]] = []
            if key == "depends_on_step":
                entries = [(value, raw.paths[key])]
            elif key == "depends_on_steps" and isinstance(value, list):
                entries = [(v, (*raw.paths[key], i)) for i, v in enumerate(value)]
            for name, path in entries:
                if isinstance(name, str) and name and name not in seen:
                    seen.add(name)
                    found.append((name, path))
        return found

    def step(
        self, raw: _RawStep, defaults: _Defaults
    ) -> tuple[StepDefinition, list[tuple[str, KeyPath]]] | None:
        values = raw.values
        name = values.get("name")
        if not isinstance(name, str) or not name:
            return None  # reported by the format schema
        handler_class = values.get("handler_class")
        if handler_class is None:
            self.add(raw.path, f"step {name!r} has no handler_class")
        retryable = values.get("default_retryable")
        skippable = values.get("skippable")
        max_attempts = _as_int(values.get("default_retry_limit"))
        if max_attempts is None:
            max_attempts = defaults.max_attempts
        timeout_seconds = _as_float(values.get("timeout_seconds"))
        if timeout_seconds is None:
            timeout_seconds = defaults.timeout_seconds
        depends = self.dependencies(raw)
        step = StepDefinition(
            name=name,
            description=_str_or_none(values.get("description")) or "",
            handler_class=handler_class if isinstance(handler_class, str) else "",
            handler_config=copy.deepcopy(_mapping(values.get("handler_config"))),
            depends_on=tuple(dep for dep, _ in depends),
            retryable=retryable if isinstance(retryable, bool) else defaults.retryable,
            max_attempts=max_attempts,
            skippable=skippable if isinstance(skippable, bool) else False,
            timeout_seconds=timeout_seconds,
            backoff=self.backoff(raw),
            dependent_system=_str_or_none(values.get("dependent_system"))
            or defaults.dependent_system,
            custom_events=self.events(
                values.get("custom_events"), raw.paths.get("custom_events", ())
            ),
            extra=copy.deepcopy(raw.extra),
            line=self.loaded.line(raw.path),
        )
        return step, depends

    # -- environments --------------------------------------------------------------------

    def overrides(
        self, environments: Mapping[str, Any], step_names: set[str]
    ) -> dict[str, list[tuple[str, _RawStep]]]:
        """Each environment's step overrides, checked against the base step names."""
        result: dict[str, list[tuple[str, _RawStep]]] = {}
        for env, override in environments.items():
            result[env] = []
            if not isinstance(override, dict):
                continue
            path: KeyPath = ("environments", env)
            key = self.alias(override, path, "step_templates", "steps")
            entries: list[tuple[Any, Mapping[str, Any], KeyPath, KeyPath]] = []
            steps = override.get(key)
            if isinstance(steps, list):
                for i, item in enumerate(steps):
                    if isinstance(item, dict):
                        entries.append(
                            (item.get("name"), item, (*path, key, i), (*path, key, i, "name"))
                        )
            elif isinstance(steps, dict):
                for name, item in steps.items():
                    here = (*path, key, name)
                    entries.append((name, item if isinstance(item, dict) else {}, here, here))
            for name, item, item_path, name_path in entries:
                if not isinstance(name, str):
                    continue
                if name not in step_names:
                    self.add(name_path, f"environment {env!r} overrides unknown step {name!r}")
                result[env].append((name, self.raw_step(item, item_path)))
        return result

    # -- the whole template --------------------------------------------------------------

    def run(self) -> TaskTemplate:
        data = self.loaded.data
        if not isinstance(data, dict):
            kind = "list" if isinstance(data, list) else type(data).__name__
            message = f"a task template must be a mapping of keys to values, not a {kind}"
            raise TemplateError([*self.issues, self.loaded.issue((), message)])
        self.schema_errors(FORMAT_VALIDATOR, data, ())

        namespace_key = self.alias(data, (), "namespace", "namespace_name")
        steps_key = self.alias(data, (), "step_templates", "steps")
        schema_key = self.alias(data, (), "schema", "input_schema")

        for key in ("name", "version"):
            if key not in data:
                self.add((key,), f"missing required key {key!r}")
        name = _str_or_none(data.get("name")) or ""
        version = data.get("version")
        if _is_number(version):
            version = self.loaded.scalar_text(("version",)) or str(version)
        version = version if isinstance(version, str) else ""
        schema = data.get(schema_key)
        self.check_json_schema(schema, (schema_key,))
        custom_events = self.events(data.get("custom_events"), ("custom_events",))
        task_config = dict(_mapping(data.get("task_config")))
        settings = dict(_mapping(data.get("settings")))
        workflow_config = dict(_mapping(data.get("workflow_config")))

        raw_steps: list[_RawStep] = []
        items = data.get(steps_key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    raw_steps.append(self.raw_step(item, (steps_key, i)))
        if not items and (items is None or isinstance(items, list)):
            self.add((steps_key,), "the template defines no steps")
        base_names = {r.values["name"] for r in raw_steps if isinstance(r.values.get("name"), str)}

        environments = _mapping(data.get("environments"))
        overrides = self.overrides(environments, base_names)
        applied: str | None = None
        if self.environment is not None and environments:
            if self.environment not in environments:
                declared = ", ".join(map(repr, environments))
                self.add(
                    ("environments",),
                    f"unknown environment {self.environment!r}; declared: {declared}",
                )
            else:
                applied = self.environment
                override = _mapping(environments[applied])
                task_config.update(_mapping(override.get("task_config")))
                settings.update(_mapping(override.get("settings")))
                workflow_config.update(_mapping(override.get("workflow_config")))
                for step_name, patch in overrides[applied]:
                    raw_steps = [
                        r.merged(patch) if r.values.get("name") == step_name else r
                        for r in raw_steps
                    ]

        default_limit = _as_int(settings.get("default_retry_limit"))
        if default_limit is None:
            default_limit = _as_int(task_config.get("retry_limit"))
        defaults = _Defaults(
            max_attempts=default_limit,
            timeout_seconds=_as_float(settings.get("default_timeout")),
            dependent_system=_str_or_none(data.get("default_dependent_system")),
            retryable=task_config.get("retryable") is not False,
        )
        built: list[tuple[StepDefinition, list[tuple[str, KeyPath]], _RawStep]] = []
        for raw in raw_steps:
            result = self.step(raw, defaults)
            if result is not None:
                built.append((*result, raw))
        steps = self.check_graph(built)
        self.check_named_steps(data.get("named_steps"), [s.name for s in steps])
        self.resolve_handlers(built)
        self.check_conditions(data)

        if self.issues:
            raise TemplateError(self.issues)
        named = data.get("named_steps")
        return TaskTemplate(
            namespace=_str_or_none(data.get(namespace_key)) or "default",
            name=name,
            version=version,
            description=_str_or_none(data.get("description")) or "",
            module_namespace=_str_or_none(data.get("module_namespace")),
            task_handler_class=_str_or_none(data.get("task_handler_class")),
            default_dependent_system=defaults.dependent_system,
            schema=copy.deepcopy(schema) if isinstance(schema, dict) else None,
            steps=tuple(steps),
            named_steps=tuple(named) if isinstance(named, list) else None,
            task_config=copy.deepcopy(task_config),
            settings=copy.deepcopy(settings),
            workflow_config=copy.deepcopy(workflow_config),
            custom_events=custom_events,
            sections={k: copy.deepcopy(v) for k, v in data.items() if k not in TOP_LEVEL_KEYS},
            environment=applied,
            environments=tuple(environments),
            source=self.loaded.source,
        )

    def check_graph(
        self, built: list[tuple[StepDefinition, list[tuple[str, KeyPath]], _RawStep]]
    ) -> list[StepDefinition]:
        first_line: dict[str, int | None] = {}
        for step, _, raw in built:
            if step.name in first_line:
                where = first_line[step.name]
                self.add(
                    raw.paths.get("name", raw.path),
                    f"duplicate step name {step.name!r} (first defined on line {where})",
                )
            else:
                first_line[step.name] = step.line
        names = list(first_line)
        edge_paths: dict[tuple[str, str], KeyPath] = {}
        for step, depends, _ in built:
            for dep, path in depends:
                if dep == step.name:
                    self.add(path, f"step {step.name!r} depends on itself")
                elif dep not in first_line:
                    close = difflib.get_close_matches(dep, names, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    self.add(
                        path, f"unknown dependency {dep!r}: there is no step named {dep!r}{hint}"
                    )
                else:
                    edge_paths.setdefault((dep, step.name), path)
        edges = list(edge_paths)
        for _ in range(MAX_CYCLES_REPORTED):
            cycle = find_cycle(names, edges)
            if cycle is None:
                break
            closing = (cycle[-2], cycle[-1])
            self.add(edge_paths[closing], "dependency cycle: " + " -> ".join(cycle))
            edges.remove(closing)
        return [step for step, _, _ in built]

    def check_named_steps(self, named: Any, names: list[str]) -> None:
        if not isinstance(named, list):
            return
        listed = {n for n in named if isinstance(n, str)}
        seen: set[str] = set()
        for index, entry in enumerate(named):
            if not isinstance(entry, str):
                continue
            if entry in seen:
                self.add(("named_steps", index), f"{entry!r} is listed twice in named_steps")
            elif entry not in names:
                self.add(
                    ("named_steps", index), f"named_steps lists {entry!r}, which is not a step"
                )
            seen.add(entry)
        missing = [n for n in dict.fromkeys(names) if n not in listed]
        if missing:
            self.add(("named_steps",), "named_steps lacks step(s): " + ", ".join(missing))

    def check_conditions(self, data: Mapping[str, Any]) -> None:
        """Business rules, escalation rules and alert conditions must parse (I12)."""
        from ..expressions import ExpressionError, compile_condition

        for section, key, cond_key in CONDITIONS:
            items = _mapping(data.get(section)).get(key)
            if not isinstance(items, list):
                continue
            for i, item in enumerate(items):
                path: KeyPath = (section, key, i)
                if not isinstance(item, dict):
                    self.add(path, "must be a mapping")
                elif cond_key not in item:
                    self.add(path, f"missing {cond_key!r}")
                else:
                    try:
                        compile_condition(item[cond_key])
                    except ExpressionError as exc:
                        self.add((*path, cond_key), str(exc))

    def resolve_handlers(
        self, built: list[tuple[StepDefinition, list[tuple[str, KeyPath]], _RawStep]]
    ) -> None:
        if self.handler_resolver is None:
            return
        for step, _, raw in built:
            if not step.handler_class:
                continue
            try:
                self.handler_resolver(step.handler_class)
            except Exception as exc:  # any failure of user code is a template problem
                self.add(
                    raw.paths.get("handler_class", raw.path),
                    f"handler class {step.handler_class!r} cannot be resolved: {exc}",
                )


def parse_template(
    text: str,
    source: str = "<string>",
    environment: str | None = None,
    handler_resolver: HandlerResolver | None = None,
) -> TaskTemplate:
    """Parse and validate template YAML; raise ``TemplateError`` listing every problem."""
    loaded = load_yaml(text, source)
    try:
        return _Parser(loaded, environment, handler_resolver).run()
    except RecursionError:
        issue = TemplateIssue(source, None, "", "the document is nested too deeply")
        raise TemplateError([*loaded.issues, issue]) from None


def load_template_file(
    path: str | os.PathLike[str],
    environment: str | None = None,
    handler_resolver: HandlerResolver | None = None,
) -> TaskTemplate:
    """Read a UTF-8 template file and parse it (``source`` is the path)."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError([TemplateIssue(source, None, "", f"cannot read file: {exc}")]) from None
    return parse_template(text, source, environment, handler_resolver)


def iter_template_files(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[Path]:
    """Template files among ``paths``: files as given, directories searched recursively
    for ``*.yaml``/``*.yml`` (hidden files and folders skipped); sorted, without duplicates.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: dict[Path, Path] = {}
    missing: list[TemplateIssue] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            for candidate in path.rglob("*"):
                relative = candidate.relative_to(path).parts
                if (
                    candidate.suffix.lower() in (".yaml", ".yml")
                    and candidate.is_file()
                    and not any(part.startswith(".") for part in relative)
                ):
                    found.setdefault(candidate.resolve(), candidate)
        elif path.is_file():
            found.setdefault(path.resolve(), path)
        else:
            missing.append(TemplateIssue(str(path), None, "", "no such file or directory"))
    if missing:
        raise TemplateError(missing)
    return sorted(found.values(), key=lambda p: str(p))
