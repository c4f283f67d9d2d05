"""The in-memory store: the reference implementation of the Store contract (store/base.py).

It backs application tests and `conveyor.testing`, and every other store is checked against the same conformance
suite, so it aims to be obviously correct first and reasonably fast second:

* Jobs live as `Job` objects that only this module changes, in place, under the lock; callers get copies
  (`_clone`, generated from the Job's field list by conveyor.codec), so a new Job field needs nothing here.
* Small indexes (pending jobs per (namespace, queue, task) in claim order — per task so that a claim skips the
  jobs of tasks it does not serve without walking them —, lanes, processing sets, unique keys, status counts) are
  kept in step by the only two functions that touch them, `index_job` and `unindex_job`: every change un-indexes a
  record, mutates it, and indexes it again. No method awaits in the middle of a change, and a `threading.Lock`
  guards each data set, so every state change is atomic even when several event loops (threads) share one
  named store.
* `memory://NAME` URLs share one data set per NAME within the process (a class-level registry, dropped with
  `MemoryStore.forget(url)`); `memory://` alone is private to its store object.

Readings of the contract where base.py is silent (the conformance suite does not pin these, so other stores may
differ; they are written down here so that the choice is deliberate):

* A lane's head is chosen across all of the lane's queues, as base.py says; so a head in a queue that this claim
  does not serve, or in a paused queue, holds the lane back.
* `claim_user` ignores queue pauses (base.py) and queue concurrency caps (Run executes in the caller's process).
* `rescue(now=…)` uses that `now` for everything: the expiry test, the attempt's finished_at and the new run_at.
* A Finish to pending without `run_at` (not a release) retries at once (run_at = now). A release keeps
  `last_error` unless the Finish carries an error; started_at is kept until the next claim.
* Requeue of a job whose unique key is now held by another active job raises InvalidTransition (two active jobs
  never share a key).
* `put_namespace` on replace keeps the stored `created`; on create it stores the given revision.
* Queue concurrency 0 means nothing is claimed from that queue; a negative limit is a ValidationError.

Modules: store.py (`MemoryStore`: lifecycle, enqueue, the worker's calls, maintenance), admin.py (inspection and
management, namespaces, queues, workers, election, key-value), data.py (one data set and its indexes).
"""

from __future__ import annotations

from conveyor.store.memory.store import MemoryStore

__all__ = ["MemoryStore"]
