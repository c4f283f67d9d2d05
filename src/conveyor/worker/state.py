"""What the worker's parts share: its settings (read live, so a change made before or while it runs is seen, as
it was when the worker was one class) and the run state — the loop, the fetch loop's wake-up, and the flags of a
shutdown. Each part keeps its own data (producer: the prefetch buffer; executor: the slots; completer: the
unreported outcomes) and the others go through its public methods."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from conveyor.runtime import Runtime
    from conveyor.store.base import Store
    from conveyor.tasks import TaskSpec


class WorkerSettings(Protocol):
    """The worker's configuration, as its parts read it (`Worker` provides it)."""

    runtime: Runtime
    store: Store
    worker_id: str
    queues: list[str]
    queue_plan: QueuePlan | None
    namespaces: list[str] | None
    tasks: tuple[str, ...]
    specs: dict[str, TaskSpec]
    concurrency: int
    batch_size: int
    prefetch: int
    buffer_wait: float
    poll_interval: float
    lease: timedelta
    isolation: str
    grace_period: float
    heartbeat_interval: float
    registration_ttl: float


MAX_WEIGHT = 1000


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """The order in which a worker serving several queues claims from them (Sidekiq's weighted and strict
    fetch). None (a plain list of queues) is the default: one claim across all of them, in the store's order.

    - weighted (`queues={"critical": 6, "default": 3, "low": 1}`): each claim draws an order of the queues at
      random, a queue coming first with probability weight / total (a weighted shuffle), and fills the claim from
      the first queue of that order that has claimable jobs, then the next. With every queue full, the share of
      claims of each queue follows its weight; an empty queue is passed over at once, so it never stalls the others.
    - strict (`strict=True`): always in the given order, so a lower queue is taken from only when every higher one
      had no claimable job at that claim."""

    queues: tuple[str, ...]
    weights: tuple[int, ...]
    strict: bool

    @classmethod
    def build(cls, queues: Sequence[str] | Mapping[str, int], strict: bool) -> QueuePlan | None:
        """The plan for a worker's `queues` and `strict` (None: the default, one claim across every queue)."""
        if isinstance(queues, Mapping):
            names = list(queues)
            weights = []
            for name, weight in queues.items():
                if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
                    raise ValueError(f"queue weights are whole numbers from 1 to {MAX_WEIGHT}; {name!r} has {weight!r}")
                weights.append(weight)
        else:
            if isinstance(queues, str):
                queues = [queues]
            names, weights = list(queues), [1] * len(queues)
            if not strict:
                return None
        if len(set(names)) != len(names):
            raise ValueError(f"a queue is named twice in {names}")
        if len(names) < 2:
            return None
        return cls(tuple(names), tuple(weights), strict)

    def order(self, rng: random.Random | None = None) -> list[str]:
        """The queues in the order of this claim."""
        if self.strict:
            return list(self.queues)
        draw = (rng or random).random
        # Efraimidis–Spirakis: sorting by u^(1/w) is a weighted shuffle (first place with probability w / total).
        keyed = sorted(((draw() ** (1.0 / w), q) for q, w in zip(self.queues, self.weights, strict=True)), reverse=True)
        return [q for _, q in keyed]


class RunState:
    """The state of one run of the worker, shared by its parts."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop the worker runs on (set when it starts)."""
        self.wake: asyncio.Event | None = None
        """Set to make the fetch loop claim again."""
        self.stop_event: asyncio.Event | None = None
        self.stopping = False
        """No new claims: a shutdown has begun."""
        self.closed = False
        """The run is over: nothing is scheduled on the loop any more."""
        self.force = False
        """Stop running jobs without waiting for the grace period."""
        self.stop_requested = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wake = asyncio.Event()
        self.stop_event = asyncio.Event()

    def wake_up(self) -> None:
        if self.wake is not None:
            self.wake.set()

    async def sleep_or_stop(self, seconds: float) -> None:
        """Sleep `seconds`, or until the shutdown begins."""
        assert self.stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)
