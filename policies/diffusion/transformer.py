"""A causal transformer denoiser: action tokens attend to each other causally and to condition tokens.

The time-series transformer of Diffusion Policy (Chi et al. 2023, Sec. III-B), minGPT style: one token per
step of the noisy chunk, a causal mask over the chunk, and cross-attention to a short memory of condition
tokens ``[timestep token, observation token(s)]``.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.layers import SinusoidalEmbedding


class TransformerDenoiser(nn.Module):
    """Causal transformer over the chunk, conditioned by cross-attention (Chi et al. 2023, Sec. III-B).

    Every action step is one token (linear embedding + learned positional embedding). The tokens go through
    ``torch.nn.TransformerDecoder`` (pre-norm): causal self-attention over the chunk, so the output at step
    ``h`` depends on ``x[:, :h + 1]`` only, and full cross-attention to the memory
    ``[timestep token, observation tokens]``. A final LayerNorm and a linear head map back to Da.

    The observation condition ``cond [B, Dc]`` is split into ``n_cond_tokens`` equal consecutive slices,
    each embedded as one token. With a flattened history ``[B, To * Do]`` (see ``policies.encoders``, which
    keep each step's features contiguous), ``n_cond_tokens=To`` gives one token per observation step, as in
    Diffusion Policy; the default, 1, embeds the whole condition as a single token.

    The forward pass has no data-dependent Python control flow and the causal mask is a (non-persistent)
    buffer, so the module traces for ``torch.onnx.export(..., dynamo=False)``.

    Args:
        horizon: H, tokens in the chunk.
        action_dim: Da.
        cond_dim: Dc.
        d_model: Token width.
        n_layers: Decoder layers.
        n_heads: Attention heads; must divide ``d_model``.
        dropout: Dropout on the embeddings, attention and feed-forward layers.
        time_dim: Width of the sinusoidal timestep embedding before its projection to ``d_model``.
        n_cond_tokens: Observation tokens the condition is split into; must divide ``cond_dim``.
    """

    def __init__(self, horizon: int, action_dim: int, cond_dim: int, d_model: int = 128, n_layers: int = 4,
                 n_heads: int = 4, dropout: float = 0.0, time_dim: int = 64, n_cond_tokens: int = 1) -> None:
        super().__init__()
        for name, value in (("horizon", horizon), ("action_dim", action_dim), ("cond_dim", cond_dim),
                            ("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads),
                            ("time_dim", time_dim), ("n_cond_tokens", n_cond_tokens)):
            if int(value) < 1:
                raise ValueError(f"{name}={value} is invalid; expected an integer >= 1")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if cond_dim % n_cond_tokens:
            raise ValueError(f"cond_dim={cond_dim} is not divisible by n_cond_tokens={n_cond_tokens}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} is invalid; expected 0 <= dropout < 1")
        self.horizon, self.action_dim, self.cond_dim = horizon, action_dim, cond_dim
        self.n_cond_tokens = n_cond_tokens

        self.input_emb = nn.Linear(action_dim, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(1, horizon, d_model))
        self.time_emb = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, d_model))
        self.cond_emb = nn.Linear(cond_dim // n_cond_tokens, d_model)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, 1 + n_cond_tokens, d_model))
        # Diffusion Policy's memory encoder when it uses no encoder layers: a per-token MLP.
        self.memory_encoder = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.Mish(),
                                            nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerDecoderLayer(d_model, n_heads, dim_feedforward=4 * d_model, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, action_dim)
        # Additive float mask: -inf above the diagonal, so step h attends to steps <= h. Built once; not
        # saved in checkpoints because it is a function of the horizon.
        mask = torch.full((horizon, horizon), float("-inf")).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)
        self.apply(_init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict the noise (or the clean chunk) for every step of the noisy chunk.

        Args:
            x: [B, H, Da] noisy action chunk.
            t: [B] integer diffusion timesteps.
            cond: [B, Dc] observation condition.

        Returns:
            [B, H, Da].
        """
        # A shape check, skipped while tracing (ONNX export), where sizes are traced values.
        if not torch.jit.is_tracing() and (x.shape[1:] != (self.horizon, self.action_dim)
                                           or cond.shape[1:] != (self.cond_dim,)):
            raise ValueError(f"x has shape {tuple(x.shape)} and cond {tuple(cond.shape)}; expected "
                             f"[B, {self.horizon}, {self.action_dim}] and [B, {self.cond_dim}]")
        tokens = self.drop(self.input_emb(x) + self.pos_emb)
        obs_tokens = self.cond_emb(cond.reshape(-1, self.n_cond_tokens, self.cond_dim // self.n_cond_tokens))
        memory = torch.cat([self.time_emb(t).unsqueeze(1), obs_tokens], dim=1)
        memory = self.memory_encoder(self.drop(memory + self.cond_pos_emb))
        # tgt_is_causal=False: the explicit mask is used as is; a None hint would make torch compare the
        # mask with a causal one on every call (a tensor -> bool conversion that breaks tracing).
        h = self.decoder(tokens, memory, tgt_mask=self.causal_mask, tgt_is_causal=False)
        return self.head(self.ln_f(h))


def _init_weights(module: nn.Module) -> None:
    # minGPT / Diffusion Policy initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, std=0.02)
        nn.init.zeros_(module.in_proj_bias)
        nn.init.zeros_(module.out_proj.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
