import warnings

import pytest
import torch

from policies.diffusion.transformer import TransformerDenoiser

H, DA, DC = 16, 2, 8


def _small(**kw):
    kw = {"d_model": 32, "n_layers": 2, "n_heads": 4, **kw}
    return TransformerDenoiser(H, DA, DC, **kw).eval()


def _inputs(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, H, DA, generator=g), torch.randint(0, 100, (b,), generator=g),
            torch.randn(b, DC, generator=g))


@pytest.mark.parametrize("batch", [1, 64])
def test_default_model_output_shape(batch):
    model = TransformerDenoiser(H, DA, DC).eval()
    with torch.no_grad():
        out = model(*_inputs(batch))
    assert out.shape == (batch, H, DA) and torch.isfinite(out).all()


@pytest.mark.parametrize("n_cond_tokens", [1, 2])
def test_gradients_are_finite_and_reach_every_parameter(n_cond_tokens):
    model = _small(n_cond_tokens=n_cond_tokens).train()
    x, t, cond = _inputs(4)
    (model(x, t, cond) * torch.randn(4, H, DA)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("k", [0, 5, H - 1])
def test_output_before_step_k_ignores_action_token_k(k):
    model = _small()
    x, t, cond = _inputs(3)
    x2 = x.clone()
    x2[:, k] += torch.randn(3, DA)
    with torch.no_grad():
        out, out2 = model(x, t, cond), model(x2, t, cond)
    assert torch.allclose(out[:, :k], out2[:, :k], atol=1e-6)
    # Step k itself sees its own token: the change must show there.
    assert not torch.allclose(out[:, k], out2[:, k], atol=1e-4)


def test_later_steps_see_earlier_tokens():
    model = _small()
    x, t, cond = _inputs(2)
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        out, out2 = model(x, t, cond), model(x2, t, cond)
    assert not torch.allclose(out[:, H - 1], out2[:, H - 1], atol=1e-4)


def test_rows_of_a_batch_are_independent():
    model = _small()
    x, t, cond = _inputs(2)
    x2, t2, cond2 = x.clone(), t.clone(), cond.clone()
    x2[1], t2[1], cond2[1] = torch.randn(H, DA), (t[1] + 37) % 100, torch.randn(DC)
    with torch.no_grad():
        out, out2, alone = model(x, t, cond), model(x2, t2, cond2), model(x[:1], t[:1], cond[:1])
    assert torch.allclose(out[0], out2[0], atol=1e-6)
    assert torch.allclose(out[0], alone[0], atol=1e-5)
    assert not torch.allclose(out[1], out2[1], atol=1e-4)


def test_timestep_and_condition_change_the_output():
    model = _small()
    x, t, cond = _inputs(2)
    with torch.no_grad():
        out = model(x, t, cond)
        # Small effects at initialisation (N(0, 0.02) weights), but they must be there.
        assert (out - model(x, (t + 50) % 100, cond)).abs().max() > 1e-6
        assert (out - model(x, t, cond + 1.0)).abs().max() > 1e-6


def test_causal_mask_is_a_buffer_left_out_of_the_state_dict():
    model = _small()
    assert model.causal_mask.shape == (H, H)
    assert torch.isinf(model.causal_mask[0, 1]) and model.causal_mask[1, 0] == 0
    assert "causal_mask" not in model.state_dict()


def test_trace_generalises_to_other_batch_sizes():
    # Tracing is what torch.onnx.export(dynamo=False) does: no data-dependent branches may be frozen.
    model = _small()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _inputs(1), check_trace=False)
    with torch.no_grad():
        args = _inputs(5, seed=1)
        assert torch.allclose(traced(*args), model(*args), atol=1e-6)


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _small()
    path = tmp_path / "denoiser.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, _inputs(1), str(path), dynamo=False, input_names=["x", "t", "cond"],
                          output_names=["out"], opset_version=17,
                          dynamic_axes={n: {0: "B"} for n in ("x", "t", "cond", "out")})
    x, t, cond = _inputs(3, seed=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy(), "t": t.numpy(), "cond": cond.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x, t, cond), atol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"d_model": 30, "n_heads": 4}, "d_model=30"),
    ({"n_cond_tokens": 3}, "n_cond_tokens=3"),
    ({"n_layers": 0}, "n_layers=0"),
    ({"dropout": 1.0}, "dropout=1.0"),
])
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerDenoiser(H, DA, DC, **kwargs)


def test_wrong_input_shapes_raise_naming_the_shape():
    model = _small()
    x, t, cond = _inputs(2)
    with pytest.raises(ValueError, match=r"\(2, 8, 2\)"):
        model(x[:, :8], t, cond)
    with pytest.raises(ValueError, match=r"\(2, 7\)"):
        model(x, t, cond[:, :7])
