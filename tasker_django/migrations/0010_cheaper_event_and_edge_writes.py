"""Fewer indexes written per step and per new task.

* ``tasker_step_task_named`` goes: a new task's edges join its steps by (task, name),
  the unique constraint's index.
* The event log's step column loses its index: a step's events are read with its
  task's, and deleted with the task (``on_delete=DO_NOTHING``; there is no database
  constraint, see 0007).
* The step-edge foreign keys lose their own indexes: ``from_step`` is the leading
  column of the unique (from_step, to_step) index, and ``to_step`` has
  ``tasker_step_edge_to``.

Only indexes are dropped (the foreign-key constraints stay as they are, so nothing is
re-validated); the same statements work on PostgreSQL and SQLite.
"""

import django.db.models.deletion
from django.db import migrations, models


def _drop(index: str, table: str, column: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f'DROP INDEX IF EXISTS "{index}"',
        reverse_sql=f'CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" ("{column}")',
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tasker_django", "0009_cheaper_step_writes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="workflowstep",
            name="tasker_step_task_named",
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                _drop("tasker_task_event_step_id_a3f1e299", "tasker_task_event", "step_id"),
                _drop(
                    "tasker_workflow_step_edge_from_step_id_5a5a7cc2",
                    "tasker_workflow_step_edge",
                    "from_step_id",
                ),
                _drop(
                    "tasker_workflow_step_edge_to_step_id_bec841ce",
                    "tasker_workflow_step_edge",
                    "to_step_id",
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="taskevent",
                    name="step",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="events",
                        to="tasker_django.workflowstep",
                    ),
                ),
                migrations.AlterField(
                    model_name="workflowstepedge",
                    name="from_step",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="child_edges",
                        to="tasker_django.workflowstep",
                    ),
                ),
                migrations.AlterField(
                    model_name="workflowstepedge",
                    name="to_step",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="parent_edges",
                        to="tasker_django.workflowstep",
                    ),
                ),
            ],
        ),
    ]
