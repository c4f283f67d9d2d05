"""The test project's tasks: declared for the `default` backend, sent to the others with `.using(backend=...)`."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

try:
    from django.tasks import TaskContext, task  # Django 6
except ImportError:
    from django_tasks import TaskContext, task

from conveyor import Fail
from shop.errors import PaymentDeclined
from shop.models import Order


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": args, "kwargs": kwargs}  # a tuple: Django's normalize_json makes it a list


@task()
def boom(message: str) -> None:
    raise ValueError(message)


@task()
def declined() -> None:
    raise PaymentDeclined("card declined")


@task()
def fail_now() -> None:
    raise Fail("no such customer", status_code=404)


@task(takes_context=True)
def flaky(context: TaskContext) -> int:
    if context.attempt == 1:
        raise RuntimeError("the first try fails")
    return context.attempt


@task(takes_context=True)
def whoami(context: TaskContext, tag: str) -> dict[str, Any]:
    result = context.task_result
    return {
        "id": result.id,
        "attempt": context.attempt,
        "status": str(result.status),
        "tag": tag,
        "args": result.args,
        "worker_ids": result.worker_ids,
    }


@task()
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task()
async def async_count(database: str) -> int:
    return await Order.objects.using(database).acount()


@task()
def read_order(order_id: int, database: str) -> str:
    return Order.objects.using(database).get(pk=order_id).item


@task()
def started(label: str) -> dict[str, Any]:
    return {"label": label, "pid": os.getpid()}


@task()
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task()
def not_json() -> object:
    return object()


@task()
def enqueue_child(a: int, backend: str) -> str:
    return add.using(backend=backend).enqueue(a, 1).id
