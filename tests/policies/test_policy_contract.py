"""The policy contract, run over every registered policy (and each diffusion denoiser)."""

import numpy as np
import pytest
import torch

from policies import POLICIES, load_policy, make_policy, save_policy
from policies.diffusion.policy import DENOISERS

SMALL = {"mlp": {"hidden_dims": (32, 32)},
         "diffusion": {"hidden_dims": (32, 32), "unet_dims": (16, 32), "d_model": 32, "n_layers": 1,
                       "num_train_timesteps": 20,
                       "num_inference_steps": 4}}
SAMPLER_SETS = [{"objective": "ddpm", "sampler": "ddim"}, {"objective": "ddpm", "sampler": "ddpm"},
                {"objective": "ddpm", "sampler": "ddim", "adaptive_tol": 0.05},
                {"objective": "ddpm", "sampler": "ddpm", "prediction_type": "epsilon"},
                {"objective": "flow", "sampler": "euler"}, {"objective": "flow", "sampler": "heun"},
                {"objective": "flow", "sampler": "heun", "adaptive_tol": 0.05},
                {"objective": "flow", "sampler": "heun", "flow_prediction": "sample"},
                {"objective": "ddpm", "sampler": "onestep", "teacher": "TEACHER"},
                {"objective": "ddpm", "sampler": "onestep", "teacher": "TEACHER", "warm_start": 0.5}]
# Every sampler x denoiser combination, plus the MLP baseline.
VARIANTS = [("mlp", {})] + [("diffusion", {"denoiser": d, **s}) for d in DENOISERS for s in SAMPLER_SETS]
IDS = [f"{n}-{'-'.join(str(v) for k, v in kw.items() if k != 'teacher') or 'default'}"
       for n, kw in VARIANTS]
DO, DA, TO, H, TA = 5, 3, 2, 8, 4


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """Saved small teachers (one per denoiser) for the one-step students."""
    root = tmp_path_factory.mktemp("teachers")
    for denoiser in DENOISERS:
        save_policy(_policy("diffusion", denoiser=denoiser).eval(), root / denoiser)
    return root


@pytest.fixture
def resolve(teacher_dir):
    def fn(kw):
        return {k: str(teacher_dir / kw.get("denoiser", "mlp")) if v == "TEACHER" else v
                for k, v in kw.items()}
    return fn


def _policy(name, **kw):
    p = make_policy(name, obs_dim=DO, action_dim=DA, n_obs_steps=TO, horizon=H, n_action_steps=TA,
                    **{**SMALL.get(name, {}), **kw})
    g = torch.Generator().manual_seed(0)
    p.fit_normalizers(torch.randn(100, DO, generator=g) * 3 + 1,
                      torch.rand(100, DA, generator=g) * 2 - 1)
    return p


def _batch(B=6):
    g = torch.Generator().manual_seed(1)
    return {"obs": torch.randn(B, TO, DO, generator=g), "action": torch.rand(B, H, DA, generator=g)}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_builds_from_defaults(name):
    p = make_policy(name, obs_dim=DO, action_dim=DA)
    assert sum(t.numel() for t in p.parameters()) > 0


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_loss_and_gradients_are_finite(resolve, name, kw):
    p = _policy(name, **resolve(kw))
    loss, metrics = p.compute_loss(_batch())
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and metrics
    grads = [t.grad for t in p.parameters() if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_chunk_shapes_and_input_not_mutated(resolve, name, kw):
    p = _policy(name, **resolve(kw)).eval()
    obs = _batch(B=7)["obs"]
    before = obs.clone()
    chunk = p.predict_action_chunk(obs)
    assert chunk.shape == (7, TA, DA) and torch.isfinite(chunk).all()
    assert torch.equal(obs, before)
    with pytest.raises(ValueError, match=r"\[B, 2, 5\]"):
        p.predict_action_chunk(torch.zeros(7, 3, DO))


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_save_load_gives_identical_actions(resolve, name, kw, tmp_path):
    p = _policy(name, **resolve(kw)).eval()
    save_policy(p, tmp_path / "p", metadata={"env_id": "x"})
    q, meta = load_policy(tmp_path / "p")
    assert meta["env_id"] == "x" and type(q) is type(p)
    obs = _batch()["obs"]
    p.reset(seed=3)
    q.reset(seed=3)
    assert torch.equal(p.predict_action_chunk(obs), q.predict_action_chunk(obs))


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_select_action_serves_a_chunk_of_ta_steps(resolve, name, kw):
    p = _policy(name, **resolve(kw)).eval()
    calls = []
    original = p.predict_action_chunk
    p.predict_action_chunk = lambda o: calls.append(o.shape) or original(o)
    p.reset(seed=0)
    obs = np.zeros(DO, np.float32)
    actions = [p.select_action(obs) for _ in range(2 * TA + 1)]
    assert len(calls) == 3 and calls[0] == (1, TO, DO)
    assert all(a.shape == (DA,) for a in actions)
    p.reset()
    assert p.select_action(np.zeros((4, DO), np.float32)).shape == (4, DA)  # many envs, one call


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_normalizer_is_saved_inside_the_policy(name, tmp_path):
    p = _policy(name)
    save_policy(p, tmp_path / "p")
    q, _ = load_policy(tmp_path / "p")
    assert torch.equal(q.obs_normalizer.center, p.obs_normalizer.center)
    assert torch.equal(q.action_normalizer.half_range, p.action_normalizer.half_range)


def test_corrupt_weights_fail_the_checksum_before_parsing(tmp_path):
    p = _policy("mlp")
    save_policy(p, tmp_path / "p")
    w = tmp_path / "p" / "policy.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_policy(tmp_path / "p")


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="sampler='euler'"):
        make_policy("diffusion", obs_dim=2, action_dim=2, sampler="euler")  # euler needs flow
    with pytest.raises(ValueError, match="adaptive_tol=-1"):
        make_policy("diffusion", obs_dim=2, action_dim=2, adaptive_tol=-1)
    with pytest.raises(ValueError, match="n_action_steps=9"):
        make_policy("mlp", obs_dim=2, action_dim=2, horizon=8, n_action_steps=9)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope", obs_dim=2, action_dim=2)
    with pytest.raises(ValueError, match="unknown config fields"):
        make_policy("mlp", obs_dim=2, action_dim=2, widths=3)


def test_a_onestep_student_learns_to_reproduce_its_teacher(resolve):
    student = _policy("diffusion", **resolve({"sampler": "onestep", "teacher": "TEACHER"}))
    teacher = student._teacher()
    assert torch.equal(student.obs_normalizer.center, teacher.obs_normalizer.center)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    batch = _batch(B=64)
    first = None
    for _ in range(150):
        loss, _ = student.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < 0.5 * first
    assert "_teacher_policy" not in dict(student.named_modules())  # never saved with the student


def test_adaptive_sampling_stops_early_and_stays_close():
    p = _policy("diffusion", objective="flow", sampler="euler", num_inference_steps=16).eval()
    calls = []
    forward = p.denoiser.forward
    p.denoiser.forward = lambda *a: calls.append(1) or forward(*a)
    obs = _batch()["obs"]
    noise = torch.randn(6, H, DA, generator=torch.Generator().manual_seed(0))
    full = p.predict_normalized_chunk(obs, noise=noise)
    n_full = len(calls)
    p.config.adaptive_tol = 10.0  # loose: stops at the second step
    early = p.predict_normalized_chunk(obs, noise=noise)
    assert n_full == 16 and len(calls) - n_full == 2
    assert early.shape == full.shape and torch.isfinite(early).all()


def test_temporal_ensembling_averages_overlapping_chunks():
    p = _policy("mlp", temporal_ensemble=0.5).eval()
    p.reset()
    chunks = []
    original = p.predict_action_chunk
    p.predict_action_chunk = lambda o: chunks.append(original(o)) or chunks[-1]
    obs = [np.full(DO, v, np.float32) for v in (0.0, 1.0, 2.0)]
    actions = [p.select_action(o) for o in obs]
    assert len(chunks) == 3  # one prediction per step
    # Step 2 (hand-written): chunk0[2], chunk1[1], chunk2[0] weighted exp(0), exp(-0.5), exp(-1).
    w = np.exp(-0.5 * np.arange(3))
    expected = (w[0] * chunks[0][0, 2] + w[1] * chunks[1][0, 1] + w[2] * chunks[2][0, 0]) / w.sum()
    assert np.allclose(actions[2], expected.numpy(), atol=1e-6)
    assert np.allclose(actions[0], chunks[0][0, 0].numpy())


@pytest.mark.parametrize("objective,sampler", [("ddpm", "ddim"), ("flow", "euler")])
def test_warm_start_runs_only_the_remaining_steps(objective, sampler):
    p = _policy("diffusion", objective=objective, sampler=sampler, num_inference_steps=4,
                warm_start=0.5).eval()
    calls = []
    forward = p.denoiser.forward
    p.denoiser.forward = lambda *a: calls.append(1) or forward(*a)
    p.reset(seed=0)
    obs = _batch(B=2)["obs"]
    p.predict_action_chunk(obs)
    p.predict_action_chunk(obs)
    assert len(calls) == 4 + 2  # a cold chunk, then half the steps from the last chunk's tail
    p.reset()
    p.predict_action_chunk(obs)
    assert len(calls) == 10  # reset forgets the last chunk


# Image observations (PushTImage-v0's dict): the image encoder in front of each denoiser.
IMG, CROP = (32, 32, 3), (28, 28)  # 28 -> a 2x2 map after four stride-2 convs
IMAGE_KW = {"obs_encoder": "image", "image_shape": IMG, "crop_shape": CROP, "image_features": 8,
            "encoder_channels": (8, 8, 8, 8), "num_keypoints": 4}
IMAGE_VARIANTS = [{"denoiser": d, **s} for d in DENOISERS for s in SAMPLER_SETS[:1] + SAMPLER_SETS[4:5]]
IMAGE_IDS = [f"image-{kw['denoiser']}-{kw['sampler']}" for kw in IMAGE_VARIANTS]
P = 2  # agent_pos features


def _image_policy(**kw):
    p = make_policy("diffusion", obs_dim=P, action_dim=DA, n_obs_steps=TO, horizon=H, n_action_steps=TA,
                    **{**SMALL["diffusion"], **IMAGE_KW, **kw})
    g = torch.Generator().manual_seed(0)
    p.fit_normalizers({"agent_pos": torch.rand(100, P, generator=g) * 500}, torch.rand(100, DA, generator=g))
    return p


def _image_obs(B, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (B, TO, *IMG), dtype=torch.uint8, generator=g),
            "agent_pos": torch.rand(B, TO, P, generator=g) * 500}


def test_image_config_builds_from_defaults_with_96px_frames():
    p = make_policy("diffusion", obs_dim=P, action_dim=DA, obs_encoder="image")
    assert p.config.image_shape == (96, 96, 3) and p.config.crop_shape == (84, 84)
    assert sum(t.numel() for t in p.obs_encoder.parameters()) > 0


@pytest.mark.parametrize("kw", IMAGE_VARIANTS, ids=IMAGE_IDS)
def test_image_loss_and_gradients_reach_the_encoder(kw):
    p = _image_policy(**kw)
    loss, _ = p.compute_loss({"obs": _image_obs(6), "action": torch.rand(6, H, DA)})
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    grads = [t.grad for t in p.parameters() if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # Trained end to end: the CNN's first convolution gets a gradient from the denoising loss.
    assert p.obs_encoder.backbone[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kw", IMAGE_VARIANTS, ids=IMAGE_IDS)
def test_image_chunk_shapes_one_encoder_call_and_input_not_mutated(kw):
    p = _image_policy(**kw).eval()
    obs = _image_obs(7)
    before = {k: v.clone() for k, v in obs.items()}
    calls = []
    p.obs_encoder.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    chunk = p.predict_action_chunk({k: v.numpy() for k, v in obs.items()})  # numpy in, as from envs
    assert chunk.shape == (7, TA, DA) and torch.isfinite(chunk).all()
    assert calls == [(7 * TO, 3, *CROP)]  # all B * To frames in one call, centre-cropped
    assert all(torch.equal(obs[k], before[k]) for k in obs)
    with pytest.raises(ValueError, match=r"\[B, 2, 32, 32, 3\]"):
        p.predict_action_chunk({"image": obs["image"][:, :1], "agent_pos": obs["agent_pos"]})
    with pytest.raises(ValueError, match="'image' and 'agent_pos'"):
        p.predict_action_chunk(obs["agent_pos"])


@pytest.mark.parametrize("kw", IMAGE_VARIANTS, ids=IMAGE_IDS)
def test_image_save_load_gives_identical_actions(kw, tmp_path):
    p = _image_policy(**kw).eval()
    save_policy(p, tmp_path / "p")
    q, _ = load_policy(tmp_path / "p")
    assert q.config == p.config  # tuples survive the JSON round trip
    obs = _image_obs(5)
    p.reset(seed=3)
    q.reset(seed=3)
    assert torch.equal(p.predict_action_chunk(obs), q.predict_action_chunk(obs))


def test_image_select_action_serves_chunks_for_one_or_many_envs():
    p = _image_policy().eval()
    p.reset(seed=0)
    one = {"image": np.zeros(IMG, np.uint8), "agent_pos": np.zeros(P, np.float32)}
    assert [p.select_action(one).shape for _ in range(TA + 1)] == [(DA,)] * (TA + 1)
    p.reset()
    many = {"image": np.zeros((4, *IMG), np.uint8), "agent_pos": np.zeros((4, P), np.float32)}
    assert p.select_action(many).shape == (4, DA)


def test_image_observation_fields_come_from_the_dict_shapes():
    from policies.diffusion.policy import DiffusionConfig

    fields = DiffusionConfig.observation_fields({"image": (96, 96, 3), "agent_pos": (2,)})
    assert fields == {"obs_encoder": "image", "image_key": "image", "state_key": "agent_pos",
                      "image_shape": (96, 96, 3), "obs_dim": 2}
    assert DiffusionConfig.observation_fields((5,)) == {"obs_dim": 5}
    with pytest.raises(ValueError, match="one \\(H, W, 3\\) image key"):
        DiffusionConfig.observation_fields({"a": (2,), "b": (3,)})
    with pytest.raises(ValueError, match="flat observations only"):
        POLICIES["mlp"].config_class.observation_fields({"image": (96, 96, 3), "agent_pos": (2,)})
    with pytest.raises(ValueError, match="crop_shape=\\(90, 90\\)"):
        make_policy("diffusion", obs_dim=2, action_dim=2, obs_encoder="image", image_shape=(64, 64, 3),
                    crop_shape=(90, 90))
