"""Step handler base class, errors, views, registry and discovery."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from tasker_django.handlers import discovery
from tasker_django.handlers.base import StepHandler
from tasker_django.handlers.discovery import autodiscover, check_handler_settings
from tasker_django.handlers.errors import (
    AmbiguousHandler,
    HandlerConfigurationError,
    HandlerNotFound,
    PermanentError,
    RetryableError,
)
from tasker_django.handlers.registry import HandlerRegistry, registry, version_key
from tasker_django.handlers.views import StepSequence, StepView, TaskView

# -- module-level classes (importable by dotted path; none registers itself) -------------


class ChargeHandler(StepHandler, register=False):
    """Charges a card.

    Longer description that is not part of the metadata.
    """

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {"region": self.config.get("region")}


class ShapingHandler(StepHandler, register=False):
    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {"value": 1}

    def process_results(self, step: Any, process_output: Any, initial_results: Any = None) -> Any:
        return {"shaped": process_output}


class AbstractPaymentHandler(StepHandler):
    abstract = True


class NotAHandler:
    pass


class CodedError(PermanentError):
    """A subclass with its own ``__init__`` signature (keyword-only: plain pickling fails)."""

    def __init__(self, *, order_id: int) -> None:
        super().__init__(f"order {order_id} is invalid", error_code="BAD_ORDER")
        self.order_id = order_id


@pytest.fixture
def reg():
    with registry.isolated(clear=True):
        yield registry


def define(class_name: str, /, **kwargs: Any) -> type[StepHandler]:
    """Define (and so register) a handler class called ``class_name`` in ``shop.handlers``."""

    def process(self: StepHandler, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {"handler": type(self).__name__}

    namespace = {"process": process, "__module__": "shop.handlers"}
    return type(class_name, (StepHandler,), namespace, **kwargs)


# -- errors -----------------------------------------------------------------------------


def test_permanent_error_attributes_and_to_dict():
    error = PermanentError(
        "Invalid input",
        error_code="VALIDATION_ERROR",
        error_category="validation",
        context={"a": 1},
    )
    assert str(error) == "Invalid input"
    assert (error.message, error.error_code, error.error_category) == (
        "Invalid input",
        "VALIDATION_ERROR",
        "validation",
    )
    assert error.to_dict() == {
        "error_class": "PermanentError",
        "message": "Invalid input",
        "error_code": "VALIDATION_ERROR",
        "error_category": "validation",
        "context": {"a": 1},
    }
    assert PermanentError("x").context == {}
    assert isinstance(error, Exception)


def test_retryable_error_attributes_and_to_dict():
    error = RetryableError("Service down", error_category="external_service", retry_after=60)
    assert str(error) == "Service down"
    assert error.retry_after == 60.0
    assert error.to_dict() == {
        "error_class": "RetryableError",
        "message": "Service down",
        "error_category": "external_service",
        "retry_after": 60.0,
        "context": {},
    }
    assert RetryableError("x").retry_after is None
    assert RetryableError("x", retry_after=timedelta(minutes=2)).retry_after == 120.0
    assert RetryableError("x", retry_after=0).retry_after == 0.0


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf")])
def test_retryable_error_rejects_bad_retry_after(bad):
    with pytest.raises(ValueError, match="retry_after"):
        RetryableError("x", retry_after=bad)


def test_retryable_error_rejects_non_numeric_retry_after():
    with pytest.raises(TypeError):
        RetryableError("x", retry_after="60")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("bad", error_code="E1", error_category="validation", context={"k": [1]}),
        RetryableError("later", error_category="net", retry_after=5.5, context={"k": "v"}),
        CodedError(order_id=42),
        HandlerNotFound("Nope", "payments", ["Nape"], "some reason"),
        AmbiguousHandler("Dup", None, ["a.Dup", "b.Dup"]),
        HandlerConfigurationError("bad entry"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling(error):
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert clone.__dict__ == error.__dict__
    if hasattr(error, "to_dict"):
        assert clone.to_dict() == error.to_dict()


def test_pickled_subclass_keeps_its_own_attributes():
    clone = pickle.loads(pickle.dumps(CodedError(order_id=7)))
    assert clone.order_id == 7
    assert clone.error_code == "BAD_ORDER"


# -- self-registration ----------------------------------------------------------------------


def test_subclass_registers_itself(reg):
    cls = define("ValidatePaymentHandler", namespace="payments", version="1.2.0", aliases=("vp",))
    entry = reg.get("ValidatePaymentHandler")
    assert entry.handler_class is cls
    assert entry.key == ("payments", "ValidatePaymentHandler", "1.2.0")
    assert entry.aliases == ("vp",)
    assert entry.source == "class"
    assert (cls.handler_name, cls.handler_namespace, cls.handler_version) == (
        "ValidatePaymentHandler",
        "payments",
        "1.2.0",
    )
    assert cls.handler_aliases == ("vp",)


def test_name_keyword_overrides_class_name(reg):
    cls = define("Impl", name="payments.validate")
    assert cls.handler_name == "payments.validate"
    assert reg.get("payments.validate").handler_class is cls
    assert not reg.contains("Impl")


def test_register_false_and_abstract_are_not_registered(reg):
    define("Hidden", register=False)

    class Base(StepHandler):
        abstract = True

    class Concrete(Base):
        def process(self, task, sequence, step):
            return {}

    assert not reg.contains("Hidden")
    assert not reg.contains("Base")
    assert reg.get("Concrete").handler_class is Concrete
    assert Base.abstract is True
    assert Concrete.abstract is False
    assert [e.name for e in reg.list()] == ["Concrete"]


def test_namespace_and_version_are_inherited_but_not_name_or_aliases(reg):
    class PaymentsBase(StepHandler, namespace="payments", version="2.0.0", aliases=("pb",)):
        abstract = True

    class Refund(PaymentsBase):
        pass

    assert reg.get("Refund").key == ("payments", "Refund", "2.0.0")
    assert Refund.handler_aliases == ()


def test_different_class_under_same_name_raises(reg):
    def first():
        class Dup(StepHandler):
            pass

        return Dup

    def second():
        class Dup(StepHandler):
            pass

        return Dup

    original = first()
    with pytest.raises(ValueError) as excinfo:
        second()
    message = str(excinfo.value)
    assert "first.<locals>.Dup" in message
    assert "second.<locals>.Dup" in message
    assert reg.get("Dup").handler_class is original


def test_alias_taken_by_another_class_raises(reg):
    define("First", aliases=("shared",))
    with pytest.raises(ValueError, match="alias"):
        define("Second", aliases=("shared",))
    assert not reg.contains("Second")


def test_same_name_in_other_namespace_or_version_is_allowed(reg):
    a = define("Notify", namespace="a")
    b = define("Notify2", name="Notify", namespace="b")
    assert reg.get("Notify", namespace="a").handler_class is a
    assert reg.get("Notify", namespace="b").handler_class is b


def test_redefining_the_same_class_replaces_it(reg):
    define("Redefined", name="redefined")
    newer = define("Redefined", name="redefined")
    assert reg.get("redefined").handler_class is newer
    assert len(reg.list()) == 1
    # A module reload that renames the class drops the old name.
    renamed = define("Redefined", name="renamed")
    assert reg.get("renamed").handler_class is renamed
    assert not reg.contains("redefined")


def test_redefining_a_function_local_class_replaces_it(reg):
    def make(result: str, name: str = "local") -> type[StepHandler]:
        class Local(StepHandler, name=name):
            def process(self, task, sequence, step):
                return {"result": result}

        return Local

    make("old")
    newer = make("new")
    assert reg.get("local").handler_class is newer
    # A class factory may register one class per name: they coexist.
    other = make("other", name="other")
    assert reg.get("other").handler_class is other
    assert reg.get("local").handler_class is newer


def test_settings_registration_follows_class_redefinition(reg):
    old = define("Reloaded")
    reg.register(old, name="alias_entry", config={"x": 1}, source="settings")
    new = define("Reloaded")
    assert new is not old
    assert reg.get("alias_entry").handler_class is new
    assert reg.get("alias_entry").config == {"x": 1}


def test_register_rejects_non_handlers(reg):
    with pytest.raises(TypeError):
        reg.register(NotAHandler)
    with pytest.raises(TypeError, match="abstract"):
        reg.register(AbstractPaymentHandler)
    with pytest.raises(ValueError):
        reg.register(ChargeHandler, name="")


# -- resolve ----------------------------------------------------------------------------


def test_resolve_by_name_alias_and_dotted_path(reg):
    cls = define("PaymentProcessingStepHandler", aliases=("pay",))
    assert reg.resolve("PaymentProcessingStepHandler").handler_class is cls
    assert reg.resolve("pay").handler_class is cls
    assert reg.resolve("  pay  ").handler_class is cls

    adhoc = reg.resolve("tests.test_handlers.ChargeHandler")
    assert adhoc.handler_class is ChargeHandler
    assert adhoc.registered is False
    assert adhoc.source == "adhoc"

    registered = reg.register(ChargeHandler, config={"region": "eu"})
    assert reg.resolve("tests.test_handlers.ChargeHandler") == registered


def test_resolve_ruby_style_reference(reg):
    cls = define("ValidatePaymentHandler", namespace="payments")
    entry = reg.resolve("PaymentProcessing::StepHandler::ValidatePaymentHandler", "payments")
    assert entry.handler_class is cls
    assert (
        reg.resolve("PaymentProcessing::StepHandler::ValidatePaymentHandler").handler_class is cls
    )


def test_resolve_ruby_style_prefers_full_registered_name(reg):
    define("ValidatePaymentHandler")
    full = define("Full", aliases=("PaymentProcessing::StepHandler::ValidatePaymentHandler",))
    assert (
        reg.resolve("PaymentProcessing::StepHandler::ValidatePaymentHandler").handler_class is full
    )


def test_resolve_ruby_style_falls_back_to_dotted_path(reg):
    entry = reg.resolve("tests::test_handlers::ChargeHandler")
    assert entry.handler_class is ChargeHandler
    # Rails naming: module segments in CamelCase map to snake_case Python modules.
    assert reg.resolve("Tests::TestHandlers::ChargeHandler").handler_class is ChargeHandler


def test_resolve_ambiguous_bare_name(reg):
    define("Notify", namespace="alpha")
    define("Notify2", name="Notify", namespace="beta")
    with pytest.raises(AmbiguousHandler) as excinfo:
        reg.resolve("Notify", namespace="gamma")
    message = str(excinfo.value)
    assert "shop.handlers.Notify " in message
    assert "shop.handlers.Notify2" in message
    assert "gamma" in message
    with pytest.raises(AmbiguousHandler):
        reg.resolve("Shop::Notify")
    # The template's namespace disambiguates.
    assert reg.resolve("Notify", namespace="beta").handler_class.__name__ == "Notify2"
    assert reg.resolve("Shop::Notify", namespace="alpha").handler_class.__name__ == "Notify"


def test_same_class_in_several_namespaces_is_not_ambiguous(reg):
    reg.register(ChargeHandler, name="charge", namespace="a")
    reg.register(ChargeHandler, name="charge", namespace="default")
    assert reg.resolve("charge", namespace="other").namespace == "default"
    reg.register(ChargeHandler, name="charge", namespace="c", config={"region": "us"})
    with pytest.raises(AmbiguousHandler):
        reg.resolve("charge", namespace="other")


def test_resolve_not_found_suggests_close_names(reg):
    define("ValidatePaymentHandler")
    with pytest.raises(HandlerNotFound) as excinfo:
        reg.resolve("ValidatePaymentHandlr")
    assert excinfo.value.suggestions == ["ValidatePaymentHandler"]
    assert "Did you mean 'ValidatePaymentHandler'" in str(excinfo.value)
    with pytest.raises(HandlerNotFound) as excinfo:
        reg.resolve("PaymentProcessing::StepHandler::ValidatePaymentHandlr")
    assert "ValidatePaymentHandler" in excinfo.value.suggestions
    with pytest.raises(HandlerNotFound) as excinfo:
        reg.resolve("validatepaymenthandler")
    assert excinfo.value.suggestions[0] == "ValidatePaymentHandler"


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "   ",
        "..",
        ".",
        "a..b",
        "::",
        "A::",
        "::A",
        "A:::B",
        "foo bar",
        "1abc.Def",
        "os.path",
        "os.nonexistent",
        "no_such_module_xyz.Handler",
        "tests.test_handlers.NotAHandler",
        "tests.test_handlers.AbstractPaymentHandler",
        "tasker_django.handlers.base.StepHandler",
        "tests.test_handlers",
        "\x00",
        "x" * 5000,
        None,
        123,
        ["a"],
    ],
)
def test_resolve_garbage_raises_handler_not_found(reg, reference):
    with pytest.raises(HandlerNotFound):
        reg.resolve(reference)


def test_resolve_broken_module_raises_handler_not_found(reg, tmp_path, monkeypatch):
    (tmp_path / "broken_handlers_mod.py").write_text("1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HandlerNotFound, match="ZeroDivisionError"):
        reg.resolve("broken_handlers_mod.Handler")


def test_resolve_is_cached_and_cache_follows_changes(reg):
    with pytest.raises(HandlerNotFound):
        reg.resolve("Later")
    cls = define("Later")
    first = reg.resolve("Later")
    assert first.handler_class is cls
    assert reg.resolve("Later") is first
    reg.unregister("Later")
    with pytest.raises(HandlerNotFound):
        reg.resolve("Later")


def test_resolve_seed_template_references(reg):
    """The ``handler_class`` values of the seed templates resolve once registered."""
    for name in ("PaymentProcessingStepHandler", "NotificationStepHandler", "AuditLogStepHandler"):
        define(name)
    for name in ("ValidatePaymentHandler", "FraudCheckHandler", "CapturePaymentHandler"):
        define(name, namespace="payments")
    assert reg.resolve("PaymentProcessingStepHandler", "payment_processing").name == (
        "PaymentProcessingStepHandler"
    )
    for ref in (
        "PaymentProcessing::StepHandler::ValidatePaymentHandler",
        "PaymentProcessing::StepHandler::FraudCheckHandler",
        "PaymentProcessing::StepHandler::CapturePaymentHandler",
    ):
        assert reg.resolve(ref, "payments").name == ref.rsplit("::", 1)[1]


# -- get / versions / list / contains / unregister / isolated ----------------------------


def test_get_latest_version_by_semver(reg):
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        reg.register(ChargeHandler, name="charge", version=version)
    assert reg.get("charge").version == "1.10.0"
    assert reg.resolve("charge").version == "1.10.0"
    assert reg.get("charge", version="1.9.0").version == "1.9.0"
    with pytest.raises(HandlerNotFound, match="version '3.0.0' is not registered"):
        reg.get("charge", version="3.0.0")


def test_version_key_ordering():
    ordered = ["0.9", "1.0.0-rc.1", "1.0.0", "1.2", "1.9.0", "1.10.0", "1.10.0.1", "v2.0.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert version_key("1.0.0+build.5") == version_key("1.0.0")
    assert version_key("1.x") > version_key("1.99")


def test_get_with_namespace_is_strict(reg):
    reg.register(ChargeHandler, name="charge", namespace="payments")
    assert reg.get("charge").namespace == "payments"
    assert reg.get("charge", namespace="payments").namespace == "payments"
    with pytest.raises(HandlerNotFound):
        reg.get("charge", namespace="default")


def test_list_contains_unregister(reg):
    reg.register(ChargeHandler, name="b", namespace="x")
    reg.register(ChargeHandler, name="a", namespace="x", version="1.10.0")
    reg.register(ChargeHandler, name="a", namespace="x", version="1.9.0")
    reg.register(ChargeHandler, name="z", aliases=("zed",))
    assert [(e.namespace, e.name, e.version) for e in reg.list()] == [
        ("default", "z", "0.0.0"),
        ("x", "a", "1.9.0"),
        ("x", "a", "1.10.0"),
        ("x", "b", "0.0.0"),
    ]
    assert [e.name for e in reg.list(namespace="default")] == ["z"]
    assert reg.contains("zed")
    assert "zed" in reg
    assert reg.contains("a", namespace="x", version="1.9.0")
    assert not reg.contains("a", namespace="default")
    assert not reg.contains("missing")
    assert reg.unregister("a", namespace="x", version="1.9.0") == 1
    assert reg.get("a").version == "1.10.0"
    assert reg.unregister("a", namespace="x") == 1
    assert not reg.contains("a")
    assert reg.unregister("z") == 1
    assert not reg.contains("zed")
    assert reg.unregister("z") == 0
    assert len(reg) == 1


def test_isolated_restores_registry():
    before = registry.list()
    with registry.isolated():
        define("InsideIsolated")
        registry.register(ChargeHandler, name="temp")
        assert registry.contains("InsideIsolated")
    assert not registry.contains("InsideIsolated")
    assert not registry.contains("temp")
    assert registry.list() == before
    with registry.isolated(clear=True):
        assert registry.list() == []
    assert registry.list() == before


def test_isolated_restores_after_an_exception():
    with pytest.raises(RuntimeError), registry.isolated():
        define("Doomed")
        raise RuntimeError
    assert not registry.contains("Doomed")


def test_copy_is_independent(reg):
    reg.register(ChargeHandler, name="one")
    other = reg.copy()
    other.register(ChargeHandler, name="two")
    assert isinstance(other, HandlerRegistry)
    assert not reg.contains("two")
    assert other.contains("one")


# -- handler instances ------------------------------------------------------------------


def test_metadata_contents():
    handler = ChargeHandler(config={"region": "eu", "api_key": "secret"})
    assert handler.metadata == {
        "handler_name": "ChargeHandler",
        "handler_class": "tests.test_handlers.ChargeHandler",
        "namespace": "default",
        "version": "0.0.0",
        "config_keys": ["api_key", "region"],
        "capabilities": ["process", "heartbeat", "publish_event"],
        "description": "Charges a card.",
    }
    shaping = ShapingHandler().metadata
    assert shaping["capabilities"] == ["process", "process_results", "heartbeat", "publish_event"]
    assert shaping["description"] == ""


def test_entry_metadata_uses_registration_and_hides_config_values(reg):
    entry = reg.register(
        ChargeHandler,
        name="charge_eu",
        namespace="payments",
        aliases=("ce",),
        config={"k": "s3cr3t"},
    )
    metadata = entry.metadata
    assert metadata["handler_name"] == "charge_eu"
    assert metadata["namespace"] == "payments"
    assert metadata["aliases"] == ["ce"]
    assert metadata["handler_class"] == "tests.test_handlers.ChargeHandler"
    assert metadata["config_keys"] == ["k"]
    assert "s3cr3t" not in repr(metadata)


def test_process_and_process_results_defaults():
    with pytest.raises(NotImplementedError, match="must implement"):
        StepHandler().process(TaskView(id=1), StepSequence(), StepView(id=1, name="s"))
    output = {"a": 1}
    assert ChargeHandler().process_results(StepView(id=1, name="s"), output) is output
    assert ShapingHandler().process_results(StepView(id=1, name="s"), output) == {"shaped": output}


def test_config_is_copied_and_logger_defaults():
    config = {"region": "eu"}
    handler = ChargeHandler(config=config)
    config["region"] = "us"
    assert handler.config == {"region": "eu"}
    assert handler.logger.name == "tasker_django.handlers.ChargeHandler"
    custom = logging.getLogger("custom")
    assert ChargeHandler(logger=custom).logger is custom
    assert ChargeHandler().config == {}


def test_heartbeat_and_publish_event_callbacks():
    handler = ChargeHandler()
    handler.heartbeat()  # no-op outside tasker
    with pytest.raises(RuntimeError, match="only available while the handler runs inside tasker"):
        handler.publish_event("payment_authorized", {"order_id": 1})
    beats: list[int] = []
    events: list[tuple[str, dict[str, Any]]] = []
    handler._tasker_heartbeat = lambda: beats.append(1)
    handler._tasker_publish_event = lambda name, payload: events.append((name, payload))
    handler.heartbeat()
    handler.publish_event("payment_authorized", {"order_id": 1})
    assert beats == [1]
    assert events == [("payment_authorized", {"order_id": 1})]
    assert ChargeHandler()._tasker_heartbeat is None


def test_instantiate_deep_merges_config(reg):
    entry = reg.register(
        ChargeHandler,
        name="charge",
        config={"region": "eu", "limits": {"daily": 10, "monthly": 100}, "tags": ["a"]},
    )
    handler = entry.instantiate(config={"limits": {"daily": 20}, "tags": ["b"], "extra": True})
    assert isinstance(handler, ChargeHandler)
    assert handler.config == {
        "region": "eu",
        "limits": {"daily": 20, "monthly": 100},
        "tags": ["b"],
        "extra": True,
    }
    handler.config["limits"]["monthly"] = 0
    assert entry.config["limits"] == {"daily": 10, "monthly": 100}
    assert entry.instantiate().config["limits"] == {"daily": 10, "monthly": 100}
    assert handler.process(TaskView(id=1), StepSequence(), StepView(id=1, name="s")) == {
        "region": "eu"
    }


# -- views ------------------------------------------------------------------------------


def _sequence() -> StepSequence:
    steps = [
        StepView(id=10, name="validate", status="complete", results={"ok": True}),
        StepView(id=11, name="fraud", status="resolved_manually", results=None),
        StepView(id=12, name="notify", status="error", results={"partial": 1}),
        StepView(id=13, name="charge", status="in_progress"),
        StepView(id=14, name="ship", status="pending"),
    ]
    return StepSequence(steps=steps, current=steps[3])  # type: ignore[arg-type]


def test_step_results_only_from_finished_steps():
    sequence = _sequence()
    assert sequence.step_results == {"validate": {"ok": True}, "fraud": {}}
    sequence.step_results["validate"] = {}
    assert sequence.step_results["validate"] == {"ok": True}


def test_find_step_position_and_total():
    sequence = _sequence()
    assert isinstance(sequence.steps, tuple)
    assert sequence.find_step_by_name("notify").id == 12  # type: ignore[union-attr]
    assert sequence.find_step_by_name("missing") is None
    assert sequence.total_steps == 5
    assert sequence.current_position == 4
    assert StepSequence(steps=sequence.steps).current_position == 0
    assert StepSequence().total_steps == 0


def test_partial_sequence_uses_task_totals():
    parent = StepView(id=1, name="parent", status="complete", results={"x": 1})
    current = StepView(id=5, name="current", status="in_progress")
    sequence = StepSequence(
        steps=(parent, current), current=current, task_id=9, task_total_steps=40, current_index=7
    )
    assert sequence.total_steps == 40
    assert sequence.current_position == 8
    assert sequence.step_results == {"parent": {"x": 1}}


def test_views_are_frozen_and_have_ruby_aliases():
    task = TaskView(id=123, context={"amount": 100}, name="payment")
    step = StepView(id=456, name="charge", inputs={"amount": 100})
    assert task.task_id == 123
    assert step.workflow_step_id == 456
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.id = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.status = "complete"  # type: ignore[misc]


# -- discovery --------------------------------------------------------------------------

CHARGE = "tests.test_handlers.ChargeHandler"


def test_autodiscover_registers_settings_handlers(reg):
    handlers = [
        {
            "name": "charge_eu",
            "class": CHARGE,
            "config": {"region": "eu"},
            "namespace": "payments",
            "version": "1.0.0",
            "aliases": ["PaymentProcessing::StepHandler::ChargeEu"],
        },
        {"name": "charge_us", "class": CHARGE, "config": {"region": "us"}},
    ]
    with override_settings(TASKER={"HANDLERS": handlers}):
        autodiscover()
        autodiscover()  # idempotent
    eu = reg.get("charge_eu", namespace="payments")
    assert eu.handler_class is ChargeHandler
    assert eu.config == {"region": "eu"}
    assert eu.version == "1.0.0"
    assert eu.source == "settings"
    assert reg.resolve("PaymentProcessing::StepHandler::ChargeEu") == eu
    assert reg.get("charge_us").namespace == "default"
    handler = reg.resolve("charge_us").instantiate()
    assert handler.process(TaskView(id=1), StepSequence(), StepView(id=1, name="s")) == {
        "region": "us"
    }
    assert len(reg.list()) == 2


def test_settings_entry_without_name_configures_class_registration(reg, monkeypatch):
    cls = define("SelfRegistered")
    path = "shop.handlers.SelfRegistered"
    # ``define`` classes are not importable: point import_string at the class.
    original = discovery.import_string
    monkeypatch.setattr(discovery, "import_string", lambda p: cls if p == path else original(p))
    with override_settings(TASKER={"HANDLERS": [{"class": path, "config": {"k": 1}}]}):
        autodiscover()
    assert len(reg.list()) == 1
    assert reg.get("SelfRegistered").config == {"k": 1}


def test_autodiscover_registers_handlers_file(reg, tmp_path):
    handlers_file = tmp_path / "handlers.yaml"
    handlers_file.write_text(
        textwrap.dedent(
            f"""
            handlers:
              - name: validate_payment
                class: {CHARGE}
                namespace: payments
                version: "1.10.0"
                aliases: [PaymentProcessing::StepHandler::ValidatePaymentHandler]
                config:
                  region: eu
                  limits: {{daily: 5}}
            """
        )
    )
    with override_settings(TASKER={"HANDLERS_FILE": str(handlers_file)}):
        autodiscover()
        assert check_handler_settings() == []
    entry = reg.resolve("PaymentProcessing::StepHandler::ValidatePaymentHandler", "payments")
    assert entry.name == "validate_payment"
    assert entry.version == "1.10.0"
    assert entry.source == "file"
    assert entry.instantiate({"limits": {"weekly": 9}}).config == {
        "region": "eu",
        "limits": {"daily": 5, "weekly": 9},
    }


def test_autodiscover_imports_handler_modules(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(discovery, "autodiscover_modules", seen.append)
    with override_settings(TASKER={"HANDLER_MODULE": "my_handlers"}):
        autodiscover()
    with override_settings(TASKER={"HANDLER_MODULE": None}):
        autodiscover()
    autodiscover()
    assert seen == ["my_handlers", "tasker_handlers"]


def test_autodiscover_default_settings_is_harmless(reg):
    autodiscover()
    assert reg.list() == []


BAD_ENTRIES = [
    ("not a dict", "must be a mapping"),
    ({"name": "x"}, "'class' is required"),
    ({"name": "x", "class": "no_such_module_xyz.Handler"}, "cannot import"),
    ({"name": "x", "class": "tests.test_handlers.NotAHandler"}, "not a StepHandler subclass"),
    ({"name": "x", "class": "tests.test_handlers.AbstractPaymentHandler"}, "abstract"),
    ({"name": "x", "class": CHARGE, "handler_class": "y"}, "unknown keys"),
    ({"name": "x", "class": CHARGE, "config": ["a"]}, "'config' must be a mapping"),
    ({"name": "", "class": CHARGE}, "'name' must be a non-empty string"),
    ({"name": "x", "class": CHARGE, "version": 1.1}, "quote it in YAML"),
    ({"name": "x", "class": CHARGE, "aliases": "y"}, "'aliases' must be a list"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_bad_settings_entries_raise_configuration_error(reg, entry, message):
    good = {"name": "good", "class": CHARGE}
    with override_settings(TASKER={"HANDLERS": [good, entry]}):
        with pytest.raises(HandlerConfigurationError) as excinfo:
            autodiscover()
        problems = check_handler_settings()
    assert "TASKER['HANDLERS'][1]" in str(excinfo.value)
    assert message in str(excinfo.value)
    assert len(problems) == 1
    assert message in problems[0]
    assert not reg.contains("good")  # nothing is registered when an entry is bad


def test_conflicting_settings_entry(reg):
    define("Taken")
    with override_settings(TASKER={"HANDLERS": [{"name": "Taken", "class": CHARGE}]}):
        with pytest.raises(HandlerConfigurationError, match="already registered"):
            autodiscover()
        assert len(check_handler_settings()) == 1
    assert reg.get("Taken").handler_class.__name__ == "Taken"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("handlers: [\n", "not valid YAML"),
        ("- a\n- b\n", "top-level 'handlers:' list"),
        ("handlers: {a: 1}\n", "must be a list"),
        ("handlers: []\nextra: 1\n", "unknown top-level keys"),
        ("handlers:\n  - {name: x}\n", "handlers[0]"),
        (
            "handlers:\n  - {name: x, class: tests.test_handlers.ChargeHandler, version: 1.0}\n",
            "1.0",
        ),
    ],
)
def test_bad_handlers_file(reg, tmp_path, content, message):
    path = tmp_path / "handlers.yaml"
    path.write_text(content)
    with override_settings(TASKER={"HANDLERS_FILE": str(path)}):
        with pytest.raises(HandlerConfigurationError) as excinfo:
            autodiscover()
        problems = check_handler_settings()
    assert message in str(excinfo.value)
    assert len(problems) == 1


def test_missing_handlers_file_and_bad_shapes(reg, tmp_path):
    missing = {"HANDLERS_FILE": str(tmp_path / "missing.yaml")}
    with (
        override_settings(TASKER=missing),
        pytest.raises(HandlerConfigurationError, match="cannot be read"),
    ):
        autodiscover()
    with override_settings(TASKER={"HANDLERS": {"name": "x"}, "HANDLERS_FILE": 5}):
        problems = check_handler_settings()
    assert len(problems) == 2
    assert "TASKER['HANDLERS'] must be a list" in problems[0]
    assert "TASKER['HANDLERS_FILE'] must be a file path" in problems[1]


def test_empty_handlers_file(reg, tmp_path):
    path = tmp_path / "handlers.yaml"
    path.write_text("# nothing yet\n")
    with override_settings(TASKER={"HANDLERS_FILE": str(path)}):
        autodiscover()
        assert check_handler_settings() == []
    assert reg.list() == []


def test_handlers_package_imports_no_models():
    code = (
        "import sys, tasker_django.handlers, tasker_django.handlers.discovery; "
        "assert 'tasker_django.models' not in sys.modules, 'models imported'; "
        "assert 'django_q' not in sys.modules, 'django_q imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
