import functools

import numpy as np
import pytest

from agents.rollout.actors import expert_actor_factory
from agents.rollout.pool import run_episodes
from agents.utils import episode_seed
from envs import make_env

ENV = "kinodiff/PointObstacle-v0"


def _jobs(n):
    return [(i, episode_seed(0, i)) for i in range(n)]


def _run(workers, n=4):
    results = run_episodes(functools.partial(make_env, ENV), expert_actor_factory(ENV, "scripted"),
                           _jobs(n), workers=workers, progress=False)
    return {r.index: r for r in results}


def test_in_process_rollouts_are_reproducible_and_alternate_modes():
    a, b = _run(0), _run(0)
    assert sorted(a) == [0, 1, 2, 3]
    for i in a:
        assert np.array_equal(a[i].steps["obs"], b[i].steps["obs"])
        assert a[i].seed == episode_seed(0, i) and a[i].success
    assert [a[i].mode for i in range(4)] == ["left", "right", "left", "right"]


@pytest.mark.slow
def test_ray_workers_give_the_same_episodes_as_in_process():
    import ray

    try:
        local, remote = _run(0), _run(2)
    finally:
        ray.shutdown()
    assert sorted(remote) == sorted(local)
    for i in local:
        assert np.array_equal(local[i].steps["action"], remote[i].steps["action"])


def test_negative_worker_count_is_named():
    with pytest.raises(ValueError, match="workers=-1"):
        list(run_episodes(functools.partial(make_env, ENV), expert_actor_factory(ENV, "scripted"),
                          _jobs(1), workers=-1, progress=False))


def test_calls_shrink_towards_the_tail_so_the_workers_finish_together():
    from agents.rollout.pool_config import split_calls

    jobs = [(i, 100 + i) for i in range(20)]
    calls = split_calls(jobs, per_call=4, workers=2)
    # ceil(remaining / 4) jobs per call, at most 4: the last calls are single episodes.
    assert [len(c) for c in calls] == [4, 4, 3, 3, 2, 1, 1, 1, 1]
    assert [job for call in calls for job in call] == jobs  # every job once, in order
    # One worker has no one to balance against: fixed calls.
    assert [len(c) for c in split_calls(jobs, per_call=4, workers=1)] == [4] * 5
    # Calls are multiples of the worker's env count, so no env idles in a call's last round.
    assert [len(c) for c in split_calls(jobs, per_call=16, workers=2, min_call=4)] == [4] * 5
    assert [len(c) for c in split_calls(jobs, per_call=8, workers=2, min_call=2)] == [4, 4] + [2] * 6
    assert [len(c) for c in split_calls(jobs[:3], per_call=4, workers=2)] == [1, 1, 1]
    assert split_calls([], per_call=4, workers=2) == []


def test_calls_go_to_the_least_loaded_worker_first():
    from collections import deque

    from agents.rollout.pool_config import assign_calls, split_calls

    # Two calls for two workers: one each, not both to worker 0.
    calls = deque([[(0, 0)] * 10, [(1, 1)] * 10])
    load = [0, 0]
    sent = assign_calls(calls, load, [0, 1])
    assert [(w, len(c)) for w, c in sent] == [(0, 10), (1, 10)]
    assert load == [1, 1] and not calls

    # Calls 4, 4, 3, 3, 2, ...: each worker holds two (4 then 3); the rest wait in the queue.
    calls = deque(split_calls([(i, i) for i in range(20)], per_call=4, workers=2))
    load = [0, 0]
    sent = assign_calls(calls, load, [0, 1])
    assert [(w, len(c)) for w, c in sent] == [(0, 4), (1, 4), (0, 3), (1, 3)]
    assert load == [2, 2] and len(calls) == 5

    # A worker that finished a call is topped up; a worker left out (restarting) gets nothing.
    load[1] -= 1
    assert [w for w, _ in assign_calls(calls, load, [1])] == [1]
    assert load == [2, 2] and len(calls) == 4
