"""The batches' one scheduler (workbench.experiments.scheduler): dependencies before dependants,
at most ``workers`` at a time, the two failure rules, and a graph that cannot run refused."""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time

import pytest

from workbench.experiments.scheduler import FailureRule, Node, ScheduleError, dependents, run_graph

LOG: list[str] = []
LOCK = threading.Lock()
ACTIVE = {"now": 0, "most": 0}


def note(name: str, seconds: float = 0.0) -> str:
    """A job: logs its start, counts how many run at once, sleeps."""
    with LOCK:
        LOG.append(name)
        ACTIVE["now"] += 1
        ACTIVE["most"] = max(ACTIVE["most"], ACTIVE["now"])
    time.sleep(seconds)
    with LOCK:
        ACTIVE["now"] -= 1
    return name.upper()


def fail(name: str) -> None:
    LOG.append(name)
    raise ValueError(f"{name} broke")


@pytest.fixture(autouse=True)
def _fresh():
    LOG.clear()
    ACTIVE.update(now=0, most=0)


def job(name: str, *needs: str, priority: float = 0.0, seconds: float = 0.0) -> Node:
    return Node(needs, (note, name, seconds), priority)


def diamond() -> dict[str, Node]:
    # a -> (b, c) -> d; e stands alone
    return {"d": job("d", "b", "c"), "b": job("b", "a"), "c": job("c", "a", priority=5),
            "a": job("a"), "e": job("e", priority=-1)}


def test_dependencies_first_then_priority_then_the_graphs_order():
    done = []
    out = run_graph(diamond(), inline=True, on_done=lambda n, r: done.append((n, r)))
    # c (priority 5) before b; e (priority -1) after everything it does not wait for
    assert LOG == ["a", "c", "b", "d", "e"]
    assert done == [(n, n.upper()) for n in LOG] and out.ok
    assert set(out.times) == set(diamond())
    for name, node in diamond().items():
        for need in node.needs:
            assert out.times[need][1] <= out.times[name][0]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_at_most_workers_at_a_time(workers):
    graph = {f"j{i}": job(f"j{i}", seconds=0.05) for i in range(7)}
    graph["last"] = job("last", *list(graph), seconds=0.0)
    with cf.ThreadPoolExecutor(8) as pool:  # more threads than workers: the bound is ours
        out = run_graph(graph, workers=workers, executor=pool)
    assert ACTIVE["most"] == workers and out.ok
    assert LOG[-1] == "last"
    starts = sorted(a for a, _ in out.times.values())
    ends = sorted(b for _, b in out.times.values())
    for t in starts:  # never more than `workers` started and not yet ended
        assert sum(a <= t for a in starts) - sum(b <= t for b in ends) <= workers


def test_stop_rule_starts_nothing_after_a_failure():
    graph = {"bad": Node((), (fail, "bad"), priority=9), "slow": job("slow", seconds=0.2),
             "after": job("after", "bad"), "other": job("other", priority=-5)}
    failed = []
    with cf.ThreadPoolExecutor(2) as pool:
        out = run_graph(graph, workers=2, failure=FailureRule.STOP, executor=pool,
                        on_failed=lambda n, e: failed.append((n, str(e))))
    assert failed == [("bad", "bad broke")] and isinstance(out.failed["bad"], ValueError)
    assert sorted(LOG) == ["bad", "slow"]  # the running one finished, nothing else began
    assert out.not_started == ["after", "other"] and out.skipped == [] and not out.ok


def test_stop_rule_inline_runs_nothing_after_the_failure():
    graph = {"bad": Node((), (fail, "bad"), priority=1), "free": job("free")}
    out = run_graph(graph, inline=True)
    assert LOG == ["bad"] and out.not_started == ["free"]


def test_skip_dependents_rule_skips_what_waits_for_the_failure_and_runs_the_rest():
    graph = {"a": job("a"), "bad": Node(("a",), (fail, "bad")), "child": job("child", "bad"),
             "grandchild": job("grandchild", "child", "a"), "sibling": job("sibling", "a"),
             "free": job("free")}
    events = []
    out = run_graph(graph, inline=True, failure=FailureRule.SKIP_DEPENDENTS,
                    on_failed=lambda n, e: events.append(("failed", n)),
                    on_skipped=lambda n: events.append(("skipped", n)))
    assert events == [("failed", "bad"), ("skipped", "child"), ("skipped", "grandchild")]
    assert sorted(LOG) == ["a", "bad", "free", "sibling"]
    assert out.skipped == ["child", "grandchild"] and list(out.failed) == ["bad"]
    assert out.not_started == []
    assert dependents(graph, "a") == ["bad", "child", "grandchild", "sibling"]


def test_a_cycle_is_a_clear_error_before_anything_runs():
    graph = {"a": job("a", "c"), "b": job("b", "a"), "c": job("c", "b"), "free": job("free")}
    with pytest.raises(ScheduleError, match="cycle: .*a.*->"):
        run_graph(graph, inline=True)
    assert LOG == []


def test_a_missing_dependency_is_a_clear_error_unless_it_is_finished():
    graph = {"a": job("a"), "b": job("b", "a", "ghost")}
    with pytest.raises(ScheduleError, match=r"'b' needs \['ghost'\]"):
        run_graph(graph, inline=True)
    assert LOG == []
    out = run_graph(graph, inline=True, finished={"ghost"})  # done in an earlier invocation
    assert LOG == ["a", "b"] and out.ok


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        run_graph({"a": job("a")}, workers=0)
    with pytest.raises(ValueError, match="one job at a time"):
        run_graph({"a": job("a")}, workers=2, inline=True)


def _set_env(value: str) -> None:
    os.environ["SCHEDULER_TEST"] = value


def _env_and_pid() -> tuple[str | None, int]:
    return os.environ.get("SCHEDULER_TEST"), os.getpid()


def test_worker_processes_are_started_with_the_initializer():
    results = {}
    out = run_graph({"a": Node((), (_env_and_pid,)), "b": Node(("a",), (_env_and_pid,))},
                    workers=2, initializer=_set_env, initargs=("set",),
                    on_done=lambda n, r: results.setdefault(n, r))
    assert out.ok and {env for env, _ in results.values()} == {"set"}
    assert all(pid != os.getpid() for _, pid in results.values())
