"""One dependency-aware scheduler for the batches (the figure gallery, the evidence plan).

A batch is a graph of named jobs, each with the jobs it needs and a call to make; :func:`run_graph`
runs them with :class:`graphlib.TopologicalSorter` (``get_ready`` / ``done``), at most ``workers``
at a time, the highest ``priority`` of the ready ones first, in worker processes (or in this
process, one at a time, with ``inline``). What a failed job does to the rest is the caller's
choice, :class:`FailureRule`:

- ``STOP``: start nothing more; the running jobs finish; the rest are reported as not started
  (the gallery: a failed training leaves no model for the notebooks after it).
- ``SKIP_DEPENDENTS``: every job that needs the failed one, directly or not, is skipped; the
  others go on (the evidence plan: a failed seed loses its own measurements only).

A job that needs a name that is neither a job of the graph nor already finished, and a cycle,
are a :class:`ScheduleError` before anything runs.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import enum
import graphlib
import multiprocessing
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any


class ScheduleError(RuntimeError):
    """The graph cannot be run: a cycle, or a job needing a name that nothing provides."""


class FailureRule(enum.Enum):
    STOP = "stop"  # start nothing after a failure
    SKIP_DEPENDENTS = "skip-dependents"  # skip what needs a failed job, run the rest


@dataclasses.dataclass(frozen=True)
class Node:
    """One job: the names it waits for, what to call (``(function, *args)``; picklable when it
    runs in a worker process) and its priority (higher starts first among the ready jobs)."""

    needs: tuple[str, ...] = ()
    call: tuple = ()
    priority: float = 0.0


@dataclasses.dataclass
class Outcome:
    """What :func:`run_graph` did. ``times``: (start, end) seconds from the start of each job
    that ran (failed ones included); ``failed``: job -> its exception, in the order seen;
    ``skipped``: jobs not run because a job they need failed (``SKIP_DEPENDENTS``);
    ``not_started``: jobs not run because the batch stopped (``STOP``)."""

    times: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    failed: dict[str, BaseException] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)
    not_started: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.skipped or self.not_started)


def _call(call: tuple) -> Any:
    fn, *args = call
    return fn(*args)


def sorter(graph: Mapping[str, Node], finished: Collection[str] = ()) -> graphlib.TopologicalSorter:
    """The prepared :class:`graphlib.TopologicalSorter` of ``graph``; needs in ``finished`` are
    met already. Raises :class:`ScheduleError` on a cycle or a need nothing provides."""
    missing = {name: sorted(set(node.needs) - set(graph) - set(finished))
               for name, node in graph.items()}
    missing = {name: m for name, m in missing.items() if m}
    if missing:
        raise ScheduleError("jobs wait for names that are neither jobs nor finished: "
                            + "; ".join(f"{n!r} needs {m}" for n, m in missing.items()))
    ts = graphlib.TopologicalSorter({name: [n for n in node.needs if n in graph]
                                     for name, node in graph.items()})
    try:
        ts.prepare()
    except graphlib.CycleError as e:
        raise ScheduleError(f"the jobs' needs form a cycle: {' -> '.join(e.args[1])}") from None
    return ts


def dependents(graph: Mapping[str, Node], name: str) -> list[str]:
    """Every job that needs ``name``, directly or through others, in the graph's order."""
    found, frontier = set(), {name}
    while frontier:
        frontier = {n for n, node in graph.items() if set(node.needs) & frontier} - found
        found |= frontier
    return [n for n in graph if n in found]


class _Inline(cf.Executor):
    """Runs each call at once, here: a finished future either way."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - handed to the scheduler like a worker's
            fut.set_exception(e)
        return fut


def _executor(workers: int, inline: bool, initializer, initargs) -> cf.Executor:
    if inline:
        if workers != 1:
            raise ValueError(f"inline runs one job at a time, not {workers}")
        return _Inline()
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=initializer, initargs=initargs)


def run_graph(graph: Mapping[str, Node], *, workers: int = 1,
              failure: FailureRule = FailureRule.STOP, finished: Collection[str] = (),
              inline: bool = False, executor: cf.Executor | None = None,
              initializer: Callable | None = None, initargs: tuple = (),
              on_done: Callable[[str, Any], None] | None = None,
              on_failed: Callable[[str, BaseException], None] | None = None,
              on_skipped: Callable[[str], None] | None = None) -> Outcome:
    """Run every job of ``graph`` once the jobs it needs are done, at most ``workers`` at a time,
    by priority (ties: the graph's order). Jobs run in ``executor`` when given (the caller shuts
    it down), else in this process (``inline``), else in a pool of ``workers`` spawned processes
    started with ``initializer(*initargs)``. ``on_done(name, result)``, ``on_failed(name,
    exception)`` and ``on_skipped(name)`` are called here as that happens; ``failure`` decides
    what a failed job does to the others (:class:`FailureRule`)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    ts = sorter(graph, finished)
    order = {name: i for i, name in enumerate(graph)}
    outcome, ready, stopped = Outcome(), [], False
    pool = executor or _executor(workers, inline, initializer, initargs)
    running: dict[cf.Future, tuple[str, float]] = {}
    start = time.perf_counter()
    try:
        while True:
            ready += [n for n in ts.get_ready() if n not in outcome.skipped]
            ready.sort(key=lambda n: (-graph[n].priority, order[n]))
            while not stopped and ready and len(running) < workers:
                name = ready.pop(0)
                running[pool.submit(_call, graph[name].call)] = (name, time.perf_counter() - start)
            if not running:
                break
            finished_now, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in sorted(finished_now, key=lambda f: running[f][1]):
                name, began = running.pop(fut)
                outcome.times[name] = (began, time.perf_counter() - start)
                if fut.exception() is None:
                    ts.done(name)
                    if on_done is not None:
                        on_done(name, fut.result())
                    continue
                outcome.failed[name] = fut.exception()
                if on_failed is not None:
                    on_failed(name, fut.exception())
                if failure is FailureRule.STOP:
                    stopped = True
                    continue
                for skip in dependents(graph, name):
                    if skip not in outcome.skipped:
                        outcome.skipped.append(skip)
                        if on_skipped is not None:
                            on_skipped(skip)
    finally:
        if executor is None:
            pool.shutdown(wait=True, cancel_futures=True)
    done = set(outcome.times) | set(outcome.skipped)
    outcome.not_started = [n for n in graph if n not in done]
    return outcome
