"""Fleet tasks are sent by name (apps/compute/enqueue.py): every name must be a registered task, routed to the
provisioning queue like a direct call of it, or the work it asks for would wait in a queue no worker reads."""

from __future__ import annotations

import pytest

from apps.compute import tasks
from apps.compute.enqueue import TASKS
from celery_app.app import app


@pytest.mark.parametrize("name", TASKS)
def test_each_task_sent_by_name_is_registered_and_routed_like_its_function(name):
    function = getattr(tasks, name.rsplit(".", 1)[-1])
    assert app.tasks[name].name == function.name == name
    assert app.amqp.router.route({}, name)["queue"].name == "provisioning"
