"""security.encryption: task context and step results encrypted at rest (AES-256-GCM)."""

from __future__ import annotations

import base64
import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from tasker_django import PermanentError, StepHandler, create_task
from tasker_django.models import StepAttempt, StepStatus, Task, TaskStatus, WorkflowStep
from tasker_django.security import crypto
from tasker_django.security.crypto import EncryptionError, EncryptionNotConfigured
from tasker_django.services import operations
from tasker_django.testing import run_task_to_completion

pytestmark = pytest.mark.django_db

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
CARD = "4111111111111111"
SEEN: list[dict[str, Any]] = []


class RecordContext(StepHandler, name="sec.record"):
    """Records what it sees; returns the card and the parents' results."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        SEEN.append(
            {"step": step.name, "context": dict(task.context), "parents": sequence.step_results}
        )
        if self.config.get("fail"):
            raise PermanentError(f"declined card {task.context.get('card_number')}")
        return {"token_for": task.context.get("card_number"), "from": step.name}


TEMPLATE = """
name: {name}
version: "1.0.0"
step_templates:
  - name: charge
    handler_class: sec.record
  - name: confirm
    handler_class: sec.record
    depends_on_steps: [charge]
    handler_config: {{fail: {fail}}}
security:
  encryption:
    enabled: {enabled}
    algorithm: "AES-256"
"""


def template(load_template: Any, name: str = "enc", enabled: bool = True, fail: bool = False):
    return load_template(
        TEMPLATE.format(name=name, enabled=str(enabled).lower(), fail=str(fail).lower())
    )


def raw(sql: str, params: list[Any]) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [
            row[0] if isinstance(row[0], str) else json.dumps(row[0]) for row in cursor.fetchall()
        ]


def raw_context(task: Task) -> str:
    return raw(f"SELECT context FROM {Task._meta.db_table} WHERE id = %s", [task.pk])[0]


def raw_results(task: Task) -> list[str]:
    return raw(
        f"SELECT results FROM {WorkflowStep._meta.db_table} WHERE task_id = %s "
        "AND results IS NOT NULL",
        [task.pk],
    )


@pytest.fixture(autouse=True)
def _seen() -> Any:
    SEEN.clear()
    with override_settings(TASKER={"ENCRYPTION_KEYS": [KEY_A]}):
        yield


def test_context_and_results_are_ciphertext_in_the_database(load_template: Any) -> None:
    template(load_template)
    task = create_task("enc", context={"card_number": CARD, "amount": 12})
    assert task.context == {"card_number": CARD, "amount": 12}  # the caller sees plain
    stored = raw_context(task)
    assert CARD not in stored and "amount" not in stored
    assert json.loads(stored)[crypto.MARKER] == "v1"
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    results = raw_results(task)
    assert len(results) == 2
    assert all(CARD not in r and "token_for" not in r and crypto.MARKER in r for r in results)
    # Handlers saw plain values, and the child saw its parent's decrypted results.
    assert SEEN[0]["context"]["card_number"] == CARD
    assert SEEN[1]["parents"]["charge"] == {"token_for": CARD, "from": "charge"}
    # The ORM reads plain values.
    assert Task.objects.get(pk=task.pk).context["card_number"] == CARD
    confirm = WorkflowStep.objects.get(task=task, name="confirm")
    assert confirm.results == {"token_for": CARD, "from": "confirm"}
    assert WorkflowStep.objects.filter(task=task).values_list("results", flat=True)[0]


def test_template_without_encryption_stores_plain(load_template: Any) -> None:
    template(load_template, "plain", enabled=False)
    task = run_task_to_completion(create_task("plain", context={"card_number": CARD}))
    assert CARD in raw_context(task)
    assert all(crypto.MARKER not in r for r in raw_results(task))


def test_no_keys_refuses_to_create(load_template: Any) -> None:
    template(load_template)
    with (
        override_settings(TASKER={"ENCRYPTION_KEYS": []}),
        pytest.raises(EncryptionNotConfigured, match=r"ENCRYPTION_KEYS'\] is empty"),
    ):
        create_task("enc", context={"card_number": CARD})
    assert not Task.objects.exists()


def test_missing_key_fails_the_step_with_a_clear_error(load_template: Any) -> None:
    template(load_template)
    task = create_task("enc", context={"card_number": CARD})
    with override_settings(TASKER={"ENCRYPTION_KEYS": [KEY_B]}):
        # The step fails; reading the task back through the ORM is refused as clearly.
        with pytest.raises(EncryptionError, match="not in TASKER"):
            run_task_to_completion(task)
        attempt = StepAttempt.objects.get(task=task, step__name="charge")
    status = Task.objects.values_list("status", flat=True).get(pk=task.pk)
    assert status == TaskStatus.ERROR
    assert attempt.error_code == "DECRYPTION_FAILED"
    assert "encrypted with key" in attempt.error_message and "configured key ids" in (
        attempt.error_message
    )
    assert not SEEN  # the handler never ran with an empty context


def test_tampered_value_is_an_authentication_error() -> None:
    envelope = crypto.encrypt({"a": 1}, "context")
    data = bytearray(base64.b64decode(envelope["data"]))
    data[-1] ^= 1
    envelope["data"] = base64.b64encode(bytes(data)).decode()
    with pytest.raises(EncryptionError, match="authentication failed"):
        crypto.decrypt(envelope, "context")
    # A context cannot be passed off as results (associated data).
    with pytest.raises(EncryptionError, match="authentication failed"):
        crypto.decrypt(crypto.encrypt({"a": 1}, "context"), "results")


def test_bad_key_setting_is_refused_without_echoing_it() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with (
        override_settings(TASKER={"ENCRYPTION_KEYS": ["c2hvcnQ="]}),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        crypto.keys()
    assert "c2hvcnQ=" not in str(info.value) and "32 bytes" in str(info.value)


def test_rotation_reads_old_key_and_reencrypts(load_template: Any) -> None:
    template(load_template)
    old = run_task_to_completion(create_task("enc", context={"card_number": CARD}))
    old_kid = json.loads(raw_context(old))["kid"]
    rotated = {"ENCRYPTION_KEYS": [KEY_B, KEY_A]}
    with override_settings(TASKER=rotated):
        # Old data still reads; new data uses the newest key.
        assert Task.objects.get(pk=old.pk).context["card_number"] == CARD
        new = create_task("enc", context={"card_number": CARD})
        new_kid = json.loads(raw_context(new))["kid"]
        assert new_kid != old_kid
        out = StringIO()
        call_command("tasker_reencrypt", "--dry-run", stdout=out)
        assert "3 value(s) to re-encrypt" in out.getvalue()  # old context + 2 results
        assert json.loads(raw_context(old))["kid"] == old_kid  # dry run changed nothing
        out = StringIO()
        call_command("tasker_reencrypt", "--batch-size", "1", stdout=out)
        assert "re-encrypted 3 value(s)" in out.getvalue()
        assert json.loads(raw_context(old))["kid"] == new_kid
        assert all(json.loads(r)["kid"] == new_kid for r in raw_results(old))
        out = StringIO()
        call_command("tasker_reencrypt", stdout=out)  # resumable: nothing left
        assert "re-encrypted 0 value(s)" in out.getvalue()
    # The old key alone no longer reads the re-encrypted rows.
    with pytest.raises(EncryptionError):
        Task.objects.get(pk=old.pk)
    with override_settings(TASKER={"ENCRYPTION_KEYS": [KEY_B]}):
        assert Task.objects.get(pk=old.pk).context == {"card_number": CARD}


def test_operator_results_are_encrypted_and_retry_keeps_them_encrypted(
    load_template: Any,
) -> None:
    template(load_template, "op", fail=True)
    task = run_task_to_completion(create_task("op", context={"card_number": CARD}))
    assert task.status == TaskStatus.ERROR
    confirm = WorkflowStep.objects.get(task=task, name="confirm")
    operations.resolve_step(confirm.pk, results={"manual": CARD}, reason="by hand")
    assert all(CARD not in r for r in raw_results(task))
    assert WorkflowStep.objects.get(pk=confirm.pk).results == {"manual": CARD}
    # The action event does not carry the plain results.
    event = task.events.get(name="action.resolve_step")
    assert event.payload["results"] == "(encrypted)"
    # Retrying a finished step writes the (decrypted, re-sealed) results back encrypted.
    charge = WorkflowStep.objects.get(task=task, name="charge")
    assert charge.status == StepStatus.COMPLETE
    operations.retry_step(confirm.pk, reset_downstream=True, reason="again")
    assert all(CARD not in r for r in raw_results(task))
