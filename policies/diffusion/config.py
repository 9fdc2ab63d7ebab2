"""The diffusion policy's configuration: objectives, samplers, denoisers and their checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.base import PolicyConfig
from policies.constraints import METHODS as CONSTRAINT_METHODS
from policies.diffusion.angles import check_angle_features, check_body_keypoints
from policies.diffusion.relative import check_relative_origin
from policies.diffusion.warm import WARM_PADS

ETA = {"ddim": 0.0, "ddpm": 1.0}  # DDPM-objective samplers -> eta of the shared update
SAMPLERS = {"ddpm": ("ddpm", "ddim", "onestep"), "flow": ("euler", "heun", "onestep")}
OBJECTIVES = tuple(SAMPLERS)
DENOISERS = ("mlp", "unet", "transformer")
PREDICTION_TYPES = ("epsilon", "sample")
FLOW_PREDICTIONS = ("velocity", "sample")
OBS_ENCODERS = ("state", "image")
# Batches up to this size get ``small_batch_threads``: the MLP's matmuls are still matrix-vector
# products there, bound by reading the weights rather than by arithmetic.
SMALL_BATCH = 8
# The time fed to the denoiser for flow matching: s in [0, 1] scaled to the DDPM step range, so one
# timestep embedding serves both objectives.
FLOW_TIME_SCALE = 100.0


@dataclass(kw_only=True)
class DiffusionConfig(PolicyConfig):
    """Diffusion policy: DDPM or flow-matching training; DDPM, DDIM, Euler, Heun or one-step sampling."""

    denoiser: str = "mlp"
    """Denoiser network: ``mlp`` (fast on a CPU), ``unet`` (1-D temporal U-Net, FiLM) or
    ``transformer`` (causal over the chunk, cross-attending to the condition)."""
    hidden_dims: tuple[int, ...] = (512, 512, 512)
    """Hidden widths of the MLP denoiser."""
    unet_dims: tuple[int, ...] = (64, 128, 256)
    """Channel widths per level of the U-Net denoiser."""
    d_model: int = 128
    """Width of the transformer denoiser."""
    n_layers: int = 4
    """Decoder layers of the transformer denoiser."""
    num_train_timesteps: int = 100
    """T: diffusion steps of the training schedule (cosine)."""
    objective: str = "ddpm"
    """Training objective: ``ddpm`` (denoising) or ``flow`` (rectified flow matching)."""
    num_inference_steps: int = 10
    """K: denoising / integration steps at inference, 1 <= K <= T."""
    sampler: str = "ddim"
    """``ddim`` or ``ddpm`` (objective ddpm), ``euler`` or ``heun`` (objective flow), or ``onestep``:
    a student distilled from ``teacher`` that maps noise to the teacher's sample in one call."""
    adaptive_tol: float = 0.0
    """Stop integrating once successive clean-chunk estimates differ by less than this (max abs,
    normalized units); 0 turns it off."""
    warm_start: float = 0.0
    """Start each chunk from the tail of the last one (shifted by Ta), noised to the level reached
    after this fraction of the steps, and run only the remaining steps; 0 turns it off. For
    ``sampler=onestep`` (objective ddpm): one call from that level, which the student must have
    learnt (``kinodiff train distill --warm-start``, ``policies.diffusion.distill.warm_pairs``)."""
    warm_pad: str = "hold"
    """With ``warm_start``: how the tail's last Ta steps, which the last chunk did not plan, are
    filled: ``hold`` (its last action) or ``extrapolate`` (continued at its last step's velocity).
    Held, the tail plans a stop that the warm start keeps: PushT-v0 with relative actions (H=8,
    warm start 0.5) fell from 0.50 to 0.27 success at Ta=4, 0.47 extrapolated
    (``policies.diffusion.warm``). A warm student learns the pad of its teacher's config."""
    teacher: str = ""
    """For ``sampler=onestep``: folder of the saved teacher policy whose deterministic sampler the
    student learns to reproduce (Luhman & Luhman 2021, knowledge distillation of the sampler)."""
    prediction_type: str = "sample"
    """What the denoiser predicts: ``sample`` (the clean chunk) or ``epsilon`` (the noise).

    ``sample`` is the default: on PointObstacle-v0 with 3,000 steps it reached 1.0 success with
    both sides used, where ``epsilon`` stayed near 0.3 (see BENCHMARKS.md)."""
    flow_prediction: str = "velocity"
    """For ``objective=flow``: what the network predicts, ``velocity`` (``x1 - x0``, as in Liu et
    al. 2022) or ``sample`` (the clean chunk ``x1``; the integrator uses the velocity
    ``(x1_hat - x_s) / (1 - s)``). ``sample`` helps the way it does for DDPM: see BENCHMARKS.md."""
    clip_sample: bool = True
    """Clip the clean-chunk estimate to the normalized range [-1, 1] at every step."""
    constraint_method: str = "none"
    """How a constraint spec given by ``set_constraints`` is enforced while sampling: ``none``,
    ``clip``, ``project``, ``guidance``, ``cbf`` or ``final`` (see ``policies.constraints``)."""
    angle_features: tuple[int, ...] = ()
    """``obs_encoder=state``: indices of observation features that are angles (radians). The
    encoder sees each as its sine and cosine, so a wrap from pi to -pi is no jump (PushT-v0: 4,
    the block angle); the normalized observations elsewhere keep their ``Do`` features."""
    body_keypoints: tuple[float, ...] = ()
    """``obs_encoder=state``: flattened (x, y) points fixed on a rigid body whose pose is the
    ``body_pose`` features; the encoder also sees their world positions (Diffusion Policy's PushT
    state is keypoints of the T). Empty: none."""
    body_pose: tuple[int, ...] = (2, 3, 4)
    """Indices of the rigid body's ``(x, y, angle)`` observation features (PushT-v0: 2, 3, 4)."""
    relative_action_origin: tuple[int, ...] = ()
    """Observation indices, one per action feature (of ``state_key``'s features for images), the
    actions are measured from: chunks are denoised as offsets from the latest step's values,
    normalized with the offsets' own range, and the origin is added back (PushT-v0: 0, 1, the
    pusher; ``policies.diffusion.relative``). Empty: absolute actions."""
    relative_action_quantile: float = 0.0
    """With ``relative_action_origin``: fit the offsets' range to their [q, 1 - q] quantiles, not
    their min and max (0), so a few large offsets (PushT: an episode's first step, the pusher far
    from its target) do not shrink the rest; ``clip_sample`` then clips the offsets outside.
    PushT-v0 (H=8): min-max spans +-0.38 m and trained worse than absolute actions; q=0.03
    (+-0.10 m, clipping mostly the unexecuted end of the chunk) best (see BENCHMARKS.md)."""
    obs_encoder: str = "state"
    """Observation encoder, trained with the denoiser: ``state`` (the [B, To, Do] history,
    flattened) or ``image`` (a dict observation: a small CNN over ``image_key`` frames, concatenated
    with the ``state_key`` features, which are ``obs_dim`` wide and range-normalized)."""
    image_key: str = "image"
    """``obs_encoder=image``: key of the uint8 [H, W, 3] frames in the observation dict."""
    state_key: str = "agent_pos"
    """``obs_encoder=image``: key of the low-dim [Do] features in the observation dict."""
    image_shape: tuple[int, ...] = (96, 96, 3)
    """``obs_encoder=image``: (H, W, 3) of one frame, as the env gives it."""
    crop_shape: tuple[int, ...] = (84, 84)
    """``obs_encoder=image``: (h, w) crop, random in training and centred at inference (Diffusion
    Policy crops 84 of 96 pixels); the full frame turns cropping off."""
    image_features: int = 64
    """``obs_encoder=image``: features per frame after the spatial soft-argmax."""
    encoder_channels: tuple[int, ...] = (32, 64, 128, 128)
    """``obs_encoder=image``: widths of the CNN's four stride-2 convolutions (multiples of 8)."""
    num_keypoints: int = 32
    """``obs_encoder=image``: keypoints of the spatial soft-argmax."""
    small_batch_threads: int = 0
    """Torch intra-op threads while sampling a chunk for at most ``SMALL_BATCH`` observations (the
    process setting is restored after); 0 leaves the process setting alone. Off by default: on an
    idle 2-core machine the default MLP chunk at batch 1 is faster on 2 threads (each core keeps
    half of the weights in its L2: best 0.72 ms vs 1.11 ms), but when another process loads a
    core, 1 thread avoids waiting for the second one (p99 12 ms instead of 231 ms under such
    load). The setting is process-wide while the chunk runs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        self.unet_dims = tuple(int(h) for h in self.unet_dims)
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.crop_shape = tuple(int(s) for s in self.crop_shape)
        self.encoder_channels = tuple(int(s) for s in self.encoder_channels)
        # One index may come bare (``--set angle_features=4``).
        dims = self.angle_features
        self.angle_features = (int(dims),) if isinstance(dims, int) else tuple(int(d) for d in dims)
        self.body_keypoints = tuple(float(v) for v in self.body_keypoints)
        self.body_pose = tuple(int(d) for d in self.body_pose)
        origin = self.relative_action_origin
        self.relative_action_origin = (int(origin),) if isinstance(origin, int) else tuple(
            int(i) for i in origin)
        if len(self.image_shape) != 3 or self.image_shape[2] != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape={self.image_shape} is invalid; expected (H, W, 3)")
        if len(self.crop_shape) != 2 or not all(
                1 <= c <= s for c, s in zip(self.crop_shape, self.image_shape, strict=False)):
            raise ValueError(f"crop_shape={self.crop_shape} is invalid; expected (h, w) with 1 <= h <= "
                             f"{self.image_shape[0]} and 1 <= w <= {self.image_shape[1]}")
        for name, value, valid in (("denoiser", self.denoiser, DENOISERS),
                                   ("obs_encoder", self.obs_encoder, OBS_ENCODERS),
                                   ("objective", self.objective, OBJECTIVES),
                                   ("sampler", self.sampler, SAMPLERS.get(self.objective, ())),
                                   ("prediction_type", self.prediction_type, PREDICTION_TYPES),
                                   ("flow_prediction", self.flow_prediction, FLOW_PREDICTIONS)):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is invalid; expected one of {list(valid)}")
        if self.constraint_method not in CONSTRAINT_METHODS:
            raise ValueError(f"constraint_method={self.constraint_method!r} is invalid; expected one "
                             f"of {list(CONSTRAINT_METHODS)}")
        check_angle_features(self.angle_features, int(self.obs_dim))
        check_body_keypoints(self.body_keypoints, self.body_pose, int(self.obs_dim))
        check_relative_origin(self.relative_action_origin, int(self.action_dim), int(self.obs_dim))
        if not 0.0 <= self.relative_action_quantile < 0.5:
            raise ValueError(f"relative_action_quantile={self.relative_action_quantile}; expected "
                             "0 <= q < 0.5 (0 = min and max)")
        if (self.angle_features or self.body_keypoints) and self.obs_encoder != "state":
            raise ValueError(f"angle_features={self.angle_features} and body_keypoints need "
                             f"obs_encoder='state'; got {self.obs_encoder!r}")
        if not 0.0 <= self.warm_start < 1.0:
            raise ValueError(f"warm_start={self.warm_start}; expected 0 <= fraction < 1")
        skipped = round(self.warm_start * self.num_inference_steps)
        if self.warm_start > 0 and not 1 <= skipped < self.num_inference_steps:
            raise ValueError(f"warm_start={self.warm_start} skips {skipped} of num_inference_steps="
                             f"{self.num_inference_steps}; expected 1 <= skipped < K")
        if self.warm_start > 0 and self.objective == "ddpm" and skipped == self.num_inference_steps - 1:
            # The strided schedule's last step is at timestep 0 (noise scale 0.025 of the cosine
            # schedule at T=100): the tail comes back nearly unchanged, so the plan never follows the
            # observations (PushT-v0, DDIM-2 at 0.5: 0.00 success, DDIM-2 cold 0.33).
            raise ValueError(f"warm_start={self.warm_start} skips {skipped} of num_inference_steps="
                             f"{self.num_inference_steps}, leaving only the step from timestep 0, "
                             "where the tail gets almost no noise; expected skipped < K - 1")
        if self.warm_pad not in WARM_PADS:
            raise ValueError(f"warm_pad={self.warm_pad!r} is invalid; expected one of {list(WARM_PADS)}")
        if self.warm_start > 0 and self.sampler == "onestep" and self.objective != "ddpm":
            raise ValueError(f"warm_start={self.warm_start} with sampler='onestep' needs objective="
                             f"'ddpm'; got {self.objective!r}")
        if self.adaptive_tol < 0:
            raise ValueError(f"adaptive_tol={self.adaptive_tol}; expected >= 0 (0 = off)")
        if int(self.small_batch_threads) < 0:
            raise ValueError(f"small_batch_threads={self.small_batch_threads}; expected >= 0 (0 = off)")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps={self.num_inference_steps}; expected 1 <= K <= "
                             f"num_train_timesteps={self.num_train_timesteps}")

    @classmethod
    def observation_fields(cls, shapes):
        """Config fields for per-step observation ``shapes``.

        A Box observation gives ``obs_dim``; a Dict of one (H, W, 3) image key and one (Do,) key
        gives the image encoder's fields (``obs_encoder``, ``image_key``, ``image_shape``,
        ``state_key``, ``obs_dim``).
        """
        if not isinstance(shapes, Mapping):
            return super().observation_fields(shapes)
        images = sorted(k for k, s in shapes.items() if len(s) == 3 and s[-1] == 3)
        states = sorted(k for k, s in shapes.items() if len(s) == 1)
        if len(images) != 1 or len(states) != 1 or len(shapes) != 2:
            raise ValueError(f"dict observation {dict(shapes)} is not supported; expected one "
                             "(H, W, 3) image key and one (Do,) low-dim key")
        return {"obs_encoder": "image", "image_key": images[0], "state_key": states[0],
                "image_shape": tuple(shapes[images[0]]), "obs_dim": int(shapes[states[0]][0])}
