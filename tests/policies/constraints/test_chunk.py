"""Every enforcement method through a diffusion policy, on ArmReach's spec with tightened limits."""

import numpy as np
import pytest
import torch

import envs
from policies.constraints import METHODS, ChunkConstraint, ChunkConstraintConfig, TorchRobot
from policies.diffusion.policy import DiffusionConfig, DiffusionPolicy

H, TA = 16, 8


@pytest.fixture(scope="module")
def setting():
    env = envs.make_env("kinodiff/ArmReach-v0")
    base = env.unwrapped.constraint_spec
    spec = base.replace(ctrl_low=[-0.6] * 3, ctrl_high=[0.6] * 3, action_rate_limit=[0.3] * 3,
                        joint_velocity_limit=base.joint_velocity_limit * 0.5)
    obs, _ = env.reset(seed=0)
    return spec, obs


def _policy(method="none", seed=0):
    torch.manual_seed(seed)
    policy = DiffusionPolicy(DiffusionConfig(obs_dim=13, action_dim=3, horizon=H, n_action_steps=TA,
                                             hidden_dims=(32, 32), constraint_method=method))
    rng = np.random.default_rng(0)
    policy.fit_normalizers(rng.normal(size=(100, 13)), rng.uniform(-1, 1, size=(100, 3)))
    return policy


def _executed(policy, obs, n_chunks=3):
    """Chunks predicted from a moving start (the twin advances the state between chunks)."""
    policy.reset(seed=0)
    chunks = [policy.predict_action_chunk(torch.as_tensor(np.stack([obs, obs]))[None].float())[0]
              for _ in range(n_chunks)]
    return torch.cat(chunks).double()


@pytest.mark.parametrize("method", [m for m in METHODS if m != "none"])
def test_every_method_holds_the_hard_limits_of_the_executed_actions(setting, method):
    spec, obs = setting
    policy = _policy()
    policy.set_constraints(spec.to_dict(), method=method)
    policy.reset(seed=0)
    chunk = policy.predict_action_chunk(torch.as_tensor(np.stack([obs, obs]))[None].float())[0].double()
    assert chunk.shape == (TA, 3)
    a = chunk.numpy()
    assert np.all(a >= spec.ctrl_low) and np.all(a <= spec.ctrl_high)
    rate = np.abs(np.diff(np.concatenate([np.zeros((1, 3)), a]), axis=0))  # the episode starts at 0
    assert np.all(rate <= spec.action_rate_limit)
    # the twin (equal to MuJoCo away from contacts) keeps every joint under its speed limit
    robot = TorchRobot(spec.to_dict()["robot"])
    q, v = robot.state_from_obs(torch.as_tensor(obs)[None])
    for step in chunk:
        q, v = robot.step(q, v, step[None])
        assert torch.all(v.abs() <= torch.tensor(spec.joint_velocity_limit)), (method, v)


def test_none_and_no_spec_give_the_unconstrained_actions(setting):
    spec, obs = setting
    plain, constrained = _policy(), _policy()
    constrained.set_constraints(spec.to_dict(), method="none")
    torch.testing.assert_close(_executed(plain, obs, 1), _executed(constrained, obs, 1))
    constrained.set_constraints(spec.to_dict(), method="clip")
    constrained.set_constraints(None)
    torch.testing.assert_close(_executed(plain, obs, 1), _executed(constrained, obs, 1))


def test_the_config_method_is_the_default_and_bad_input_is_named(setting):
    spec, _ = setting
    policy = _policy("final")
    policy.set_constraints(spec.to_dict())
    assert policy._constraint.config.method == "final"
    with pytest.raises(ValueError, match="bogus"):
        DiffusionConfig(obs_dim=13, action_dim=3, constraint_method="bogus")
    with pytest.raises(ValueError, match="robot"):
        policy.set_constraints({**spec.to_dict(), "robot": None}, method="clip")
    with pytest.raises(ValueError, match="cbf_gamma"):
        ChunkConstraintConfig(method="cbf", cbf_gamma=0.0)


def _clearance(spec, obs, chunk):
    robot = TorchRobot(spec.to_dict()["robot"])
    from policies.constraints import Obstacles

    obstacles = Obstacles(spec.to_dict()["obstacles"])
    q, v = robot.state_from_obs(torch.as_tensor(obs)[None])
    worst = float((obstacles.signed_distance(robot.collision_points(q)) - robot.point_radius[:, None]).min())
    for step in chunk:
        q, v = robot.step(q, v, step[None])
        d = obstacles.signed_distance(robot.collision_points(q)) - robot.point_radius[:, None]
        worst = min(worst, float(d.min()))
    return worst


@pytest.mark.parametrize("method", ["project", "cbf", "final", "guidance"])
def test_obstacle_methods_keep_clear_of_an_obstacle_in_the_way(setting, method):
    spec, obs = setting
    spec = spec.replace(joint_velocity_limit=spec.joint_velocity_limit * 2)
    obs = obs.copy()
    obs[6] = 1.2  # joint 1 already turning: the end effector sweeps counter-clockwise
    free = _policy()
    free.set_constraints(spec.to_dict(), method="clip")
    chunk = _executed(free, obs, 1)
    # Put a sphere where the clip-only chunk's end effector is after 6 steps.
    robot = TorchRobot(spec.to_dict()["robot"])
    q, v = robot.state_from_obs(torch.as_tensor(obs)[None])
    for step in chunk[:6]:
        q, v = robot.step(q, v, step[None])
    tip = robot.end_effector(q)[0].numpy()
    from envs.constraints import Obstacle

    blocked = spec.with_obstacles(Obstacle(name="extra", kind="sphere", position=[*tip, 0.0],
                                           size=[0.04, 0, 0], rotation=np.eye(3)))
    assert _clearance(blocked, obs, chunk[:0]) > 0.05  # clear at the start
    assert _clearance(blocked, obs, chunk) < -0.03  # the clip-only chunk runs into it
    policy = _policy()
    policy.set_constraints(blocked.to_dict(), method=method)
    kept = _clearance(blocked, obs, _executed(policy, obs, 1))
    if method == "guidance":
        # A cost gradient only nudges: this untrained denoiser redraws its clean estimate at every
        # step, so only the last steps' nudges survive. It must still move away from the sphere.
        assert kept > _clearance(blocked, obs, chunk) + 0.005
    else:
        assert kept > 0.0, method


def test_chunk_constraint_rejects_mismatched_shapes(setting):
    spec, _ = setting
    with pytest.raises(ValueError, match="action_dim=2"):
        ChunkConstraint(spec.to_dict(), torch.zeros(2), torch.ones(2), H, TA,
                        ChunkConstraintConfig(method="clip"))



@pytest.mark.parametrize("scale", [1e3, 1e200, float("inf")])
def test_a_runaway_continuation_does_not_turn_the_chunk_into_nan(setting, scale):
    """The chunk is linearized along the last chunk's predicted continuation, whose bias (Coriolis
    and centrifugal forces) grows with its speeds and feeds the next prediction: after an unguarded
    impact at 1.9x the speed limit (benchmark seed 5235, t = 224) it grew chunk after chunk until
    the actions came out NaN. A continuation far too fast (or not finite) must not do that."""
    spec, obs = setting
    policy = _policy()
    policy.set_constraints(spec.to_dict(), method="cbf")
    policy.reset(seed=0)
    x = torch.as_tensor(np.stack([obs, obs]))[None].float()
    policy.predict_action_chunk(x)
    constraint = policy._constraint
    q_nom, v_nom = constraint._nominal
    constraint._nominal = (q_nom, v_nom + scale)
    chunk = policy.predict_action_chunk(x)
    assert torch.isfinite(chunk).all()
    a = chunk[0].double().numpy()
    assert np.all(a >= spec.ctrl_low) and np.all(a <= spec.ctrl_high)
