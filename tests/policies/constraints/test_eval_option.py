"""``EvalConfig.constraint_method``: the evaluator hands the task's spec to the policy."""

import numpy as np
import pytest

import envs
from agents.evaluate import EvalConfig, evaluate
from agents.rollout.actors import PolicyActorFactory
from agents.rollout.guarded_actor import GuardedActor
from policies.diffusion.policy import DiffusionConfig, DiffusionPolicy
from policies.io import save_policy


@pytest.fixture(scope="module")
def arm_policy(tmp_path_factory):
    policy = DiffusionPolicy(DiffusionConfig(obs_dim=13, action_dim=3, hidden_dims=(32, 32)))
    rng = np.random.default_rng(0)
    policy.fit_normalizers(rng.normal(size=(100, 13)), rng.uniform(-1, 1, size=(100, 3)))
    return save_policy(policy, tmp_path_factory.mktemp("p") / "policy", {"env_id": "kinodiff/ArmReach-v0"})


def test_the_factory_gives_the_policy_the_task_spec(arm_policy):
    env = envs.make_env("kinodiff/ArmReach-v0")
    guarded = PolicyActorFactory(str(arm_policy), "p", constraint_method="clip")(env)
    # With a method, the actions also pass the runtime dynamics guard.
    assert isinstance(guarded, GuardedActor)
    actor = guarded.actor
    assert actor.policy._constraint is not None and actor.policy._constraint.config.method == "clip"
    plain = PolicyActorFactory(str(arm_policy), "p")(env)
    assert plain.policy._constraint is None


def test_evaluate_with_a_constraint_method_runs_and_bad_names_are_refused(arm_policy):
    summary, results = evaluate(EvalConfig(run=str(arm_policy), env="kinodiff/ArmReach-v0", episodes=1,
                                           video=False, constraint_method="clip"), progress=False)
    actions = results[0].steps["action"]
    assert summary["episodes"] == 1 and len(actions) > 0 and np.all(np.abs(actions) <= 1.0)
    with pytest.raises(ValueError, match="bogus"):
        EvalConfig(run=str(arm_policy), constraint_method="bogus")
