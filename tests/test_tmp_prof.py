import time
from collections import defaultdict
import pytest, yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from tasker_django import create_task
from tasker_django.engine.runner import run_step_loop
from tasker_django.models import WorkflowStep

pytestmark = [pytest.mark.django_db(transaction=True)]

def test_prof(load_template):
    steps = [{"name": f"p{i}", "handler_class": "test.noop"} for i in range(300)]
    load_template(yaml.safe_dump({"name": "wide", "version": "1.0.0", "step_templates": steps}))
    task = create_task("wide")
    ids = list(WorkflowStep.objects.filter(task=task).values_list("pk", flat=True))
    for i in ids[:50]:
        run_step_loop(i, worker="p", eager=False)
    t0 = time.perf_counter()
    for i in ids[50:150]:
        run_step_loop(i, worker="p", eager=False)
    print("per step ms (no capture)", (time.perf_counter() - t0) * 1000 / 100)
    with CaptureQueriesContext(connection) as ctx:
        t0 = time.perf_counter()
        for i in ids[150:250]:
            run_step_loop(i, worker="p", eager=False)
        wall = time.perf_counter() - t0
    per = defaultdict(float)
    for q in ctx.captured_queries:
        per[q["sql"].strip()[:40]] += float(q["time"])
    print("per step ms", wall * 10, "sql total ms per step", sum(per.values()) * 10)
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"{v*10:7.3f} ms  {k}")
