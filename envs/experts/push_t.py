"""Sampling MPC expert for PushT: push primitives scored by rolling the MuJoCo model forward.

Each plan samples push primitives: a contact point on the T's outline, a push direction near the
face's inward normal, a push length and speed. A primitive's pusher targets are a collision-free
transit (straight when clear, otherwise out to a circle around the block, along it and in along
the face normal) followed by the push and a short hold. All candidates are rolled out in one
``mujoco.rollout`` call from a copy of the env's true state (its own ``MjData``, never the env's),
then a second round refines the best few (cross-entropy style), and the best ones seed the next
plan. The primitive that removes the most pose error (RMS displacement of the T's points from the
goal, measured once the block is at rest) per control step is executed, unless one reaches the
success coverage: the earliest such one wins. Push lengths are sampled in proportion to the
current error, so the pushes get finer as the block closes in. The rollouts start from the exact
state with the exact model, so the executed plan lands where predicted; the expert checks that on
every step and replans at once if reality drifts (``drifts`` counts those).

Its action depends on the observation's time step only through the env's true state, read from
the env object it was built with (read only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np
from mujoco import rollout

from envs.push_t_geometry import (
    CoverageFn,
    away_from_shape,
    distance_to_shape,
    outline_faces,
    pose_error,
    rotation,
)
from envs.push_t_v0 import PushTEnv

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


@dataclass(frozen=True, kw_only=True)
class PushTMPCConfig:
    """Settings of the MPC expert."""

    samples: int = 48
    """Primitives sampled in the first round of each plan."""
    refine: int = 32
    """Perturbations of the best first-round primitives in the second round."""
    elites: int = 4
    """How many first-round primitives the second round perturbs."""
    transit_speed: float = 0.4
    """Speed of the pusher target during transit, m/s."""
    push_speeds: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    """Push speeds to sample from, m/s."""
    max_push: float = 0.12
    """Longest push, metres."""
    push_per_error: float = 2.5
    """Pushes are sampled up to this many times the current pose error (plus 15 mm) long."""
    max_angle: float = 0.6
    """Largest angle between the push direction and the face's inward normal, radians."""
    hold_steps: int = 2
    """Control steps the target is held after a push, so the score is taken at rest."""
    max_steps: int = 45
    """Longest primitive (transit + push + hold), control steps."""
    clearance: float = 0.012
    """Gap kept between the pusher and the block during transit, metres."""
    overhead_steps: float = 4.0
    """Steps added to each primitive's length when scoring its rate (the next one's set-up)."""
    nthread: int = 1
    """Threads for ``mujoco.rollout``."""
    replan_every: int = 0
    """0: execute each chosen primitive to its end (replanning early only on drift); k > 0:
    replan after at most k steps of it."""
    markov: bool = False
    """Draw every plan's samples from a fresh generator seeded with ``markov_seed`` and never warm
    start from the last plan, so a plan is a function of the env's state alone (the episode rng is
    unused). With ``replan_every`` this makes the expert's labels (nearly) a function of the
    observation, which a policy can learn; the default expert's depend on the primitive it is in
    the middle of."""
    markov_seed: int = 0
    """Seed of the fixed sample set of ``markov`` plans."""

    def __post_init__(self) -> None:
        for name in ("samples", "refine", "elites", "max_steps", "nthread"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 1")
        if self.replan_every < 0:
            raise ValueError(f"replan_every {self.replan_every} must be >= 0 (0 = whole primitives)")
        if self.elites > self.samples:
            raise ValueError(f"elites {self.elites} must be <= samples {self.samples}")
        if self.transit_speed <= 0 or min(self.push_speeds) <= 0 or self.max_push <= 0:
            raise ValueError(
                f"speeds and max_push must be > 0; got transit_speed={self.transit_speed}, "
                f"push_speeds={self.push_speeds}, max_push={self.max_push}"
            )


class PushTMPCExpert:
    """Sampling MPC over push primitives with the env's own MuJoCo model.

    Args:
        env: The unwrapped PushT env (state is read from it, never written).
        config: Planner settings.
    """

    name = "mpc"

    def __init__(self, env: PushTEnv, config: PushTMPCConfig | None = None) -> None:
        self.env = env
        self.config = config or PushTMPCConfig()
        self.model = env.model
        self.layout = env.layout
        self.frame_skip = env.frame_skip
        self.dt = env.dt
        self._datas = [mujoco.MjData(self.model) for _ in range(self.config.nthread)]
        self._state = np.zeros(mujoco.mj_stateSize(self.model, _FULL))
        # Offsets of qpos in a full-physics state vector: time comes first.
        self._qpos_at = mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_TIME)
        self._coverage = CoverageFn(self.layout.shape, self.layout.goal)
        self._faces = outline_faces(self.layout.shape.centers, self.layout.shape.halves)
        lengths = np.linalg.norm(self._faces[1] - self._faces[0], axis=1)
        self._face_p = lengths / lengths.sum()
        self._lo, self._hi = self.layout.pusher_range[:, 0], self.layout.pusher_range[:, 1]
        self._safe_radius = self.layout.shape.radius + self.layout.pusher_radius + self.config.clearance
        self._rng = np.random.default_rng(0)
        self._plan = np.zeros((0, 2), dtype=np.float32)
        self._expected = np.zeros((0, 6))
        self._check: np.ndarray | None = None
        self._elites = np.zeros((0, 5))
        self.plans = 0
        """Plans made this episode."""
        self.drifts = 0
        """Times this episode the env's state differed from the prediction (forcing a replan)."""

    @property
    def mode(self) -> str | None:
        """The expert is unimodal."""
        return None

    def reset(self, episode_index: int, rng: np.random.Generator) -> None:
        """Start an episode; ``rng`` drives the sampling."""
        self._rng = rng
        self._plan = np.zeros((0, 2), dtype=np.float32)
        self._expected = np.zeros((0, 6))
        self._check = None
        self._elites = np.zeros((0, 5))
        self.plans = self.drifts = 0

    def act(self, obs) -> np.ndarray:
        """Next pusher target; replans when the plan is used up or reality left the prediction."""
        if self._check is not None and not np.allclose(
            self.env.data.qpos, self._check, rtol=0.0, atol=1e-9
        ):
            self.drifts += 1
            self._plan = self._plan[:0]
        if not len(self._plan):
            self._plan, self._expected = self.plan()
            if self.config.replan_every:
                k = self.config.replan_every
                self._plan, self._expected = self._plan[:k], self._expected[:k]
        action, self._check = self._plan[0], self._expected[0]
        self._plan, self._expected = self._plan[1:], self._expected[1:]
        return action.copy()

    # -- planning -------------------------------------------------------------------------------
    def plan(self) -> tuple[np.ndarray, np.ndarray]:
        """Choose the next primitive from the env's current state.

        Returns:
            (T, 2) float32 pusher targets and the (T, nq) predicted qpos after each.
        """
        cfg = self.config
        self.plans += 1
        mujoco.mj_getState(self.model, self.env.data, self._state, _FULL)
        warm = self.env.data.qacc_warmstart.copy()
        qpos = self._state[self._qpos_at:self._qpos_at + self.model.nq]
        pusher = qpos[:2].copy()
        block = np.array([qpos[2], qpos[3], qpos[5]])
        error = float(pose_error(self.layout.shape, block, self.layout.goal))
        rng = np.random.default_rng(cfg.markov_seed) if cfg.markov else self._rng
        params = self._sample(rng, cfg.samples, error)
        if len(self._elites) and not cfg.markov:
            # Warm start: the last plan's best primitives (often the push to continue).
            params[: len(self._elites)] = self._elites
        first = self._evaluate(params, pusher, block, error, warm)
        elites = params[np.argsort(first["score"])[: cfg.elites]]
        second_params = self._perturb(rng, elites, cfg.refine)
        second = self._evaluate(second_params, pusher, block, error, warm)
        all_params = np.concatenate([params, second_params])
        scores = np.concatenate([first["score"], second["score"]])
        order = np.argsort(scores, kind="stable")
        self._elites = all_params[order[: cfg.elites]]
        best = int(order[0])
        r, i = (first, best) if best < len(params) else (second, best - len(params))
        n = int(r["length"][i])
        return r["controls"][i, :n], r["qpos"][i, :n]

    def _sample(self, rng: np.random.Generator, n: int, error: float) -> np.ndarray:
        """(n, 5) primitives: face, position along it, angle offset, push length, push speed."""
        cfg = self.config
        longest = min(cfg.max_push, cfg.push_per_error * error + 0.015)
        face = rng.choice(len(self._face_p), size=n, p=self._face_p)
        return np.stack([
            face,
            rng.uniform(0.0, 1.0, n),
            rng.uniform(-cfg.max_angle, cfg.max_angle, n),
            rng.uniform(0.0, longest, n),
            rng.choice(np.array(cfg.push_speeds), size=n),
        ], axis=1)

    def _perturb(self, rng: np.random.Generator, elites: np.ndarray, n: int) -> np.ndarray:
        cfg = self.config
        base = elites[rng.integers(0, len(elites), n)].copy()
        base[:, 1] = np.clip(base[:, 1] + rng.normal(0.0, 0.08, n), 0.0, 1.0)
        base[:, 2] = np.clip(base[:, 2] + rng.normal(0.0, 0.1, n), -cfg.max_angle, cfg.max_angle)
        base[:, 3] = np.clip(base[:, 3] * np.exp(rng.normal(0.0, 0.3, n)), 0.0, cfg.max_push)
        return base

    def _evaluate(self, params, pusher, block, error, warm) -> dict[str, np.ndarray]:
        """Roll out primitives ``params`` from the current state; ``error`` is its pose error."""
        cfg = self.config
        n = len(params)
        controls = np.empty((n, cfg.max_steps, 2), dtype=np.float32)
        lengths = np.empty(n, dtype=np.int64)
        for k, p in enumerate(params):
            targets = self._primitive(p, pusher, block)
            m = min(len(targets), cfg.max_steps)
            controls[k, :m] = targets[:m]
            controls[k, m:] = targets[m - 1]
            lengths[k] = m
        # Controls go through float32 as the env's actions do, so predictions match bit for bit.
        ctrl = np.repeat(controls.astype(np.float64), self.frame_skip, axis=1)
        states, _ = rollout.rollout(
            self.model, self._datas, self._state[None], ctrl, initial_warmstart=warm[None]
        )
        q = states[:, self.frame_skip - 1 :: self.frame_skip, self._qpos_at:self._qpos_at + self.model.nq]
        poses = q[..., [2, 3, 5]]
        err = pose_error(self.layout.shape, poses, self.layout.goal)  # (n, T)
        final = err[np.arange(n), lengths - 1]
        # Score: pose error removed per control step, at rest after the push; lower is better.
        score = -(error - final) / (lengths + cfg.overhead_steps)
        # The env ends the episode on the first step that reaches the success coverage: such a
        # primitive is cut there and beats every other one (the earliest success first). Poses
        # covering 95 % of the goal are within ~2.7 mm RMS of it, so only those below 6 mm are
        # measured exactly.
        seen = set()
        for k, t in zip(*np.nonzero(err < 0.006), strict=True):
            if k in seen or t >= lengths[k]:
                continue
            if self._coverage(*poses[k, t]) >= self.env.success_coverage:
                seen.add(k)
                lengths[k] = t + 1
                score[k] = -1e3 + (t + 1)
        return {"controls": controls, "qpos": q, "length": lengths, "score": score}

    def _primitive(self, p: np.ndarray, pusher: np.ndarray, block: np.ndarray) -> np.ndarray:
        """(T, 2) pusher targets for one primitive: transit, push, hold."""
        cfg, lay = self.config, self.layout
        face, u, delta, length, speed = int(p[0]), p[1], p[2], p[3], p[4]
        s, e, nrm = self._faces[0][face], self._faces[1][face], self._faces[2][face]
        rot = rotation(block[2])
        contact = block[:2] + rot @ (s + u * (e - s))
        normal = rot @ nrm
        pre = contact + normal * (lay.pusher_radius + 0.004)
        path = self._transit(pusher, pre, normal, block)
        direction = rotation(delta) @ -normal
        step = speed * self.dt
        n_push = max(1, math.ceil(length / step))
        push = pre + direction * np.minimum(step * np.arange(1, n_push + 1), length)[:, None]
        targets = np.concatenate([self._walk(path, cfg.transit_speed * self.dt), push,
                                  np.repeat(push[-1:], cfg.hold_steps, axis=0)])
        return np.clip(targets, self._lo, self._hi)

    def _transit(self, start: np.ndarray, pre: np.ndarray, normal: np.ndarray, block: np.ndarray):
        """Waypoints from the pusher to the pre-contact point that keep clear of the block."""
        lay = self.layout
        clear = lay.pusher_radius + 0.5 * self.config.clearance
        seg = start + np.linspace(0.0, 1.0, 16)[:, None] * (pre - start)
        if distance_to_shape(lay.shape, block, seg[:-1]).min() >= clear:
            return np.array([start, pre])
        centre, radius = block[:2], self._safe_radius
        # Leave along the direction away from the block's nearest point, out to the safe circle.
        away = self._away(start, block)
        out = start + away * self._exit_distance(start - centre, away, radius)
        stage = pre + normal * self._exit_distance(pre - centre, normal, radius)
        a0 = math.atan2(*(out - centre)[::-1])
        a1 = math.atan2(*(stage - centre)[::-1])
        sweep = (a1 - a0 + math.pi) % (2.0 * math.pi) - math.pi
        k = max(1, int(abs(sweep) / 0.3))
        arc = centre + radius * np.stack(
            [np.cos(a0 + sweep * np.arange(1, k) / k), np.sin(a0 + sweep * np.arange(1, k) / k)], axis=1
        )
        return np.concatenate([start[None], out[None], arc, stage[None], pre[None]])

    def _away(self, point: np.ndarray, block: np.ndarray) -> np.ndarray:
        """Unit direction from the T's nearest point to ``point``."""
        return away_from_shape(self.layout.shape, point, block[:2], rotation(block[2]))

    @staticmethod
    def _exit_distance(rel: np.ndarray, direction: np.ndarray, radius: float) -> float:
        """Smallest s >= 0 with ``|rel + s * direction| >= radius``."""
        b = float(rel @ direction)
        c = float(rel @ rel) - radius**2
        if c >= 0.0:
            return 0.0
        return -b + math.sqrt(b * b - c)

    @staticmethod
    def _walk(path: np.ndarray, step: float) -> np.ndarray:
        """Points every ``step`` metres along a polyline, ending at its last point."""
        seg = np.diff(path, axis=0)
        seg_len = np.linalg.norm(seg, axis=1)
        total = float(seg_len.sum())
        if total < 1e-9:
            return path[-1:].copy()
        dist = np.minimum(step * np.arange(1, math.ceil(total / step) + 1), total)
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        return np.stack([np.interp(dist, cum, path[:, 0]), np.interp(dist, cum, path[:, 1])], axis=1)


class PushTMarkovMPCExpert(PushTMPCExpert):
    """The MPC expert as a (near) Markov labeller: a fixed sample set, replanning every 8 steps.

    Each plan draws the same 48 + 32 primitive parameters (in the block's frame) and starts no
    warm start, so the plan is a function of the state; only its first 8 steps (the diffusion
    policy's action chunk) are executed. From one state its 16-step plans are identical, and
    under 1 mm / 0.01 rad state jitter they differ by a median ~9 mm (the default expert's differ
    by ~25 mm across sampling seeds): labels a policy can fit. The price is robustness: without
    the episode's randomness it can circle near the goal, so it solved 176 of 200 collection
    seeds within 300 steps (the default expert all 200) and misses seed 0 (0.93 coverage at step
    300); it is therefore not registered as a task expert (the contract test runs seed 0).

    Args:
        env: The unwrapped PushT env (state is read from it, never written).
        config: Planner settings; default ``PushTMPCConfig(replan_every=8, markov=True)``.
    """

    name = "mpc_markov"

    def __init__(self, env: PushTEnv, config: PushTMPCConfig | None = None) -> None:
        super().__init__(env, config or PushTMPCConfig(replan_every=8, markov=True))
