"""Run many seeded episodes locally or on Ray actors; results stream back as they finish."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

from agents.rollout.worker import EpisodeResult, RolloutWorker


def run_episodes(
    env_factory: Callable,
    actor_factory: Callable,
    jobs: list[tuple[int, int]],
    *,
    workers: int = 0,
    ray_address: str | None = None,
    desc: str = "episodes",
    progress: bool = True,
) -> Iterator[EpisodeResult]:
    """Yield one ``EpisodeResult`` per ``(index, seed)`` job, in completion order.

    Args:
        env_factory: Picklable callable returning a fresh env.
        actor_factory: Picklable callable ``env -> Actor``.
        jobs: ``(episode index, reset seed)`` pairs.
        workers: 0 runs in this process; W > 0 starts W Ray actors.
        ray_address: Join this Ray cluster instead of starting a local one.
        desc: Progress bar label.
        progress: Show a progress bar.
    """
    if workers < 0:
        raise ValueError(f"workers={workers}; expected 0 (in-process) or a positive count")
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    try:
        if workers == 0 and ray_address is None:
            worker = RolloutWorker(env_factory, actor_factory)
            try:
                for index, seed in jobs:
                    yield worker.run_episode(index, seed)
                    bar.update()
            finally:
                worker.close()
        else:
            yield from _run_on_ray(env_factory, actor_factory, jobs, max(workers, 1), ray_address, bar)
    finally:
        bar.close()


def _run_on_ray(env_factory, actor_factory, jobs, workers, ray_address, bar):
    import ray

    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, num_cpus=workers, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    # A crashed actor restarts; the episode it held is re-run from its seed (same result).
    remote = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(RolloutWorker)
    actors = [remote.remote(env_factory, actor_factory) for _ in range(workers)]
    pending, queue = {}, list(jobs)
    for actor in actors:
        if queue:
            index, seed = queue.pop(0)
            pending[actor.run_episode.remote(index, seed)] = actor
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        actor = pending.pop(done[0])
        result = ray.get(done[0])
        if queue:
            index, seed = queue.pop(0)
            pending[actor.run_episode.remote(index, seed)] = actor
        bar.update()
        yield result
    for actor in actors:
        ray.kill(actor)
