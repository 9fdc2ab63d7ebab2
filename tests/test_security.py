"""No loader runs a pickle payload; no project code deserializes with pickle, eval or exec."""

import ast
import base64
import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("envs", "policies", "planners", "agents", "benchmarks", "sim_assets")


class PickleBomb:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def bomb(tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"weights": PickleBomb(marker)}, buffer)  # the zip+pickle format torch.load reads

    class Bomb:
        path = marker
        raw = pickle.dumps(PickleBomb(marker))
        torch_file = buffer.getvalue()

    yield Bomb
    assert not marker.exists(), "a loader ran the pickle payload"


def test_the_payload_is_live(bomb):
    pickle.loads(bomb.raw)  # what every loader below must never do
    assert bomb.path.exists()
    bomb.path.unlink()


def _tiny_policy():
    from policies import make_policy

    return make_policy("diffusion", obs_dim=3, action_dim=2, horizon=8, n_action_steps=4,
                       hidden_dims=(16, 16))


def _plant(path: Path, payload: bytes, doc_path: Path | None = None, sha_key: str | None = None):
    """Replace ``path`` with ``payload``; optionally record its sha256 so only the parser stands."""
    import hashlib

    path.write_bytes(payload)
    if doc_path is not None:
        doc = json.loads(doc_path.read_text())
        doc[sha_key] = hashlib.sha256(payload).hexdigest()
        doc_path.write_text(json.dumps(doc))


@pytest.mark.parametrize("sha_matches", [False, True])
@pytest.mark.parametrize("payload", ["raw", "torch_file"])
def test_policy_critic_estimator_and_trajectory_loaders_never_unpickle(bomb, tmp_path, payload,
                                                                       sha_matches):
    from planners.trajectory_diffusion import TrajectoryModel, TrajectoryModelConfig
    from policies import load_policy, save_policy
    from policies.critic import ChunkCritic, ChunkCriticConfig, load_critic, save_critic
    from policies.uncertainty import UncertaintyConfig, UncertaintyEstimator
    from policies.uncertainty.io import load_estimator, save_estimator

    data = getattr(bomb, payload)
    policy = _tiny_policy()
    cases = []
    save_policy(policy, tmp_path / "policy")
    cases.append((lambda: load_policy(tmp_path / "policy"), tmp_path / "policy" / "policy.safetensors",
                  tmp_path / "policy" / "policy.json", "weights_sha256"))
    save_critic(ChunkCritic(ChunkCriticConfig(cond_dim=6, chunk_dim=8, hidden_dims=(8,))), tmp_path / "c")
    cases.append((lambda: load_critic(tmp_path / "c"), tmp_path / "c" / "critic.safetensors",
                  tmp_path / "c" / "critic.json", "weights_sha256"))
    save_policy(policy, tmp_path / "u")
    estimator = UncertaintyEstimator(policy, UncertaintyConfig(
        num_samples=2, ensemble_size=2, ensemble_hidden=(8,), rnd_hidden=(8,), rnd_dim=4))
    save_estimator(estimator, tmp_path / "u")
    weights = [p for p in (tmp_path / "u").glob("*.safetensors") if p.name != "policy.safetensors"]
    docs = [p for p in (tmp_path / "u").glob("*.json") if p.name != "policy.json"]
    cases.append((lambda: load_estimator(tmp_path / "u", policy), weights[0], docs[0], "weights_sha256"))
    model = TrajectoryModel(TrajectoryModelConfig(horizon=8, stride=2, hidden_dims=(8,), diffusion_steps=4),
                            -torch.ones(6), torch.ones(6))
    model.save(tmp_path / "t")
    cases.append((lambda: TrajectoryModel.load(tmp_path / "t"), tmp_path / "t" / "model.safetensors",
                  tmp_path / "t" / "model.json", "sha256"))
    for load, target, doc, key in cases:
        _plant(target, data, doc if sha_matches else None, key)
        with pytest.raises(ValueError, match="sha256" if not sha_matches else "not a safetensors"):
            load()
        assert not bomb.path.exists(), f"{target.name} ran the payload"


def test_a_checkpoint_with_a_pickle_payload_never_unpickles(bomb, tiny_store, tmp_path):
    from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
    from agents.train.checkpoint import latest_checkpoint, load_train_state

    run = train_bc(BcRunConfig(data=str(tiny_store), out=str(tmp_path / "run"),
                               policy_config={"hidden_dims": (16, 16)},
                               train=BcTrainConfig(steps=2, batch_size=8, checkpoint_every=2)),
                   progress=False)
    ckpt = latest_checkpoint(run / "checkpoints")
    _plant(ckpt / "train_state.safetensors", bomb.torch_file, ckpt / "train_state.json", "sha256")
    with pytest.raises(ValueError, match="sha256"):
        latest_checkpoint(run / "checkpoints")  # the pointer's own digest catches it first
    with pytest.raises(ValueError, match="not a safetensors"):
        load_train_state(ckpt)  # and without it the parser refuses


def test_an_episode_chunk_holding_a_pickle_is_reported_not_run(bomb, tmp_path):
    from agents.data.episode_store import EpisodeStore
    from agents.data.store_checks import CorruptStoreError

    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, {"obs": ((3,), "float32")}, env_id="t", chunk_steps=4) as store:
        store.add_episode({"obs": np.ones((4, 3), np.float32)}, episode_id=0, seed=0, source="x",
                          success=True)
    (path / "data" / "obs" / "c" / "0" / "0").write_bytes(bomb.raw)
    with pytest.raises(CorruptStoreError, match="data/obs/c/0/0"):
        EpisodeStore.open(path).load()


@pytest.fixture(scope="module")
def sb3_zip(tmp_path_factory):
    from stable_baselines3 import PPO

    path = tmp_path_factory.mktemp("sb3") / "ppo.zip"
    PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, device="cpu").save(path)
    return path


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes]):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, replace.get(item.filename, zin.read(item.filename)))


def test_sb3_zips_are_loaded_without_unpickling(bomb, sb3_zip, tmp_path):
    from stable_baselines3 import PPO

    from agents.rollout.actors import Sb3ExpertActor
    from agents.train.sb3_safe import load_sb3, safe_custom_objects

    model = load_sb3(PPO, sb3_zip)  # a genuine zip loads: every pickled entry was rebuilt
    assert model.observation_space.shape == (3,) and model.action_space.shape == (1,)
    data = json.loads(zipfile.ZipFile(sb3_zip).read("data"))
    pickled = {k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v}
    assert pickled <= set(safe_custom_objects(sb3_zip))  # SB3 unpickles none of them

    encoded = base64.b64encode(bomb.raw).decode()
    for key in ("policy_class", "observation_space", "lr_schedule", "extra_entry"):
        doc = dict(data)
        doc[key] = {**(data.get(key) or {}), ":serialized:": encoded}
        if key == "policy_class":  # names a module outside the allow-list
            doc[key]["__module__"] = "os"
        if key == "observation_space":
            doc[key][":type:"] = "<class 'os.PathLike'>"
        if key == "lr_schedule":
            doc[key]["value_schedule"] = "LinearSchedule(...)"
            doc.pop("learning_rate")
        hostile = tmp_path / f"{key}.zip"
        _rewrite_zip(sb3_zip, hostile, {"data": json.dumps(doc).encode()})
        with pytest.raises(ValueError, match=rf"entry '{key}' is stored as pickled code"):
            load_sb3(PPO, hostile)
        with pytest.raises(ValueError, match="never unpickles"):
            Sb3ExpertActor(str(hostile))
    # Weights are .pth files: SB3 reads them with torch.load(weights_only=True), which refuses code.
    hostile = tmp_path / "weights.zip"
    _rewrite_zip(sb3_zip, hostile, {"policy.pth": bomb.torch_file})
    with pytest.raises(pickle.UnpicklingError):
        load_sb3(PPO, hostile)


def test_an_onnx_file_holding_a_pickle_is_refused(bomb, tmp_path):
    from agents.deploy.runtime import OnnxPolicy

    path = tmp_path / "policy.onnx"
    path.write_bytes(bomb.torch_file)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type; what matters is below
        OnnxPolicy(path)


# -- the grep bar: no unsafe deserialization anywhere in the project code -------------------------

_GREP = re.compile(r"pickle\.loads?\b|cloudpickle\.loads?\b|\bdill\b|torch\.load\(|\beval\(|\bexec\(")
_SB3_LOADERS = re.compile(
    r"^(PPO|SAC|TD3|A2C|DDPG|DQN|VecNormalize|ALGOS\[.*\]|getattr\(stable_baselines3.*\))$")


def _project_files():
    for folder in PROJECT:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _violations(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        where = f"{path.relative_to(ROOT)}:{node.lineno}: {func}(...)"
        if func in ("eval", "exec", "compile", "__import__", "marshal.loads", "shelve.open"):
            found.append(where)
        elif re.fullmatch(r"(c?pickle|cloudpickle|dill|joblib)\.(loads?|Unpickler)", func):
            found.append(where)
        elif func.endswith("torch.load") and keywords.get("weights_only") != "True":
            found.append(where)
        elif func in ("np.load", "numpy.load") and keywords.get("allow_pickle") not in (None, "False"):
            found.append(where)
        elif func == "yaml.load" and "Safe" not in keywords.get("Loader", ""):
            found.append(where)
        elif (isinstance(node.func, ast.Attribute) and node.func.attr == "load"
              and _SB3_LOADERS.match(ast.unparse(node.func.value))
              and path.name != "sb3_safe.py" and "custom_objects" not in keywords):
            found.append(where + "  (SB3 unpickles its zip's data entries: use load_sb3)")
    return found


def test_no_project_code_deserializes_with_pickle_eval_or_exec():
    files = list(_project_files())
    assert len(files) > 100  # the scan really covers the project
    violations = [v for path in files for v in _violations(path)]
    assert violations == []
    # The literal grep, minus torch's model.eval() and ast.literal_eval.
    grep_hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if _GREP.search(line.replace(".eval()", "").replace("literal_eval(", ""))
                 and not line.lstrip().startswith("#")]
    assert [hit for hit in grep_hits if "weights_only=True" not in hit and '"""' not in hit] == []


def test_the_scan_catches_what_it_must(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, torch, numpy as np\nfrom stable_baselines3 import PPO\n"
                   "pickle.loads(b'')\ntorch.load('x')\nnp.load('x', allow_pickle=True)\n"
                   "eval('1')\nexec('1')\nPPO.load('m.zip')\ntorch.load('x', weights_only=True)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = _violations(bad)
    finally:
        ROOT = saved
    assert [v.split(":")[1] for v in found] == ["3", "4", "5", "6", "7", "8"]
