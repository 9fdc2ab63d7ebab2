"""``Registered`` class attributes read what ``nn.Module`` registered, through every replacement."""

import copy
import pickle

import pytest
import torch
from torch import nn

from policies import make_policy
from policies.normalizer import RangeNormalizer
from policies.registered import Registered


class _Holder(nn.Module):
    head = Registered("_modules")
    scale = Registered("_buffers")

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)
        self.register_buffer("scale", torch.ones(2))


def test_reads_follow_assignment_dtype_moves_loads_and_deletion():
    m = _Holder()
    assert "head" not in m.__dict__ and m.head is m._modules["head"]  # registered, not shadowed
    new = nn.Linear(2, 2)
    m.head = new  # nn.Module.__setattr__ registers it in the dict the attribute reads
    assert m.head is new and m._modules["head"] is new
    m.double()  # buffers are replaced by new tensors
    assert m.scale.dtype == torch.float64 and m.scale is m._buffers["scale"]
    state = {"head.weight": torch.zeros(2, 2, dtype=torch.float64),
             "head.bias": torch.zeros(2, dtype=torch.float64), "scale": torch.full((2,), 3.0).double()}
    m.load_state_dict(state, assign=True)
    assert m.scale is state["scale"] and torch.equal(m.head.weight, state["head.weight"])
    m.scale = torch.zeros(2)  # assigning a registered buffer's name replaces the buffer
    assert torch.equal(m.scale, torch.zeros(2)) and "scale" not in m.__dict__
    del m.head
    assert not hasattr(m, "head")
    with pytest.raises(AttributeError, match="'_Holder' object has no attribute 'head'"):
        _ = m.head
    copy.deepcopy(m)  # the attribute lives on the class: copies and pickles carry no extra state
    assert torch.equal(pickle.loads(pickle.dumps(m)).scale, torch.zeros(2))


def test_unknown_store_is_named():
    with pytest.raises(ValueError, match="store='_parameters'; expected '_modules' or '_buffers'"):
        Registered("_parameters")


def test_normalizer_and_policy_attributes_are_the_registered_ones():
    n = RangeNormalizer(3)
    n.fit(torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 6.0]]))
    assert n.center is n._buffers["center"] and torch.equal(n.center, torch.tensor([1.0, 2.0, 4.0]))
    p = make_policy("diffusion", obs_dim=4, action_dim=2, hidden_dims=(16,), num_train_timesteps=10,
                    num_inference_steps=2)
    for name in ("obs_normalizer", "action_normalizer", "denoiser", "obs_encoder"):
        assert getattr(p, name) is p._modules[name]
    copy_ = pickle.loads(pickle.dumps(p))
    chunk = copy_.predict_action_chunk(torch.zeros(1, p.config.n_obs_steps, 4))
    assert chunk.shape == (1, p.config.n_action_steps, 2)
    assert copy_._last_chunk.chunk is not None  # the warm start's memory survives a pickle and fills
    copy_.reset()
    assert copy_._last_chunk.chunk is None and copy_._last_chunk.origin is None
