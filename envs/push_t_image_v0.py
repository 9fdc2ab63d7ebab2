"""PushTImage-v0: PushT-v0 observed through a 96 x 96 top camera plus the pusher's position.

As in diffusion-policy's image PushT, the observation is
``Dict(image=Box(0, 255, (96, 96, 3), uint8), agent_pos=Box((2,), float32))``; dynamics, start
distribution, reward and success are PushT-v0's. Frames come from an offscreen
``mujoco.Renderer`` (use ``MUJOCO_GL=egl`` on a headless machine).
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from envs.push_t_v0 import _POS_BOUND, PushTEnv


class PushTImageEnv(PushTEnv):
    """PushT with a rendered image and the pusher's position as the observation.

    Args:
        image_size: Side of the square observation image in pixels.
        block_spread: Half side of the block centroid's start square, metres.
        pusher_spread: Half side of the pusher's start square, metres.
        max_start_coverage: Starts covering more of the goal than this are redrawn.
        success_coverage: Coverage that counts as success.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` frames, apart from observations).
        width: Rendered frame width.
        height: Rendered frame height.
    """

    def __init__(
        self,
        image_size: int = 96,
        block_spread: float = 0.12,
        pusher_spread: float = 0.2,
        max_start_coverage: float = 0.5,
        success_coverage: float = 0.95,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
    ) -> None:
        if not 16 <= int(image_size) <= 320:
            raise ValueError(f"image_size {image_size} is out of range; expected 16 <= size <= 320")
        super().__init__(
            block_spread, pusher_spread, max_start_coverage, success_coverage, render_mode, width,
            height,
        )
        # After the parent's own EzPickle call, so the pickled arguments are this class's.
        EzPickle.__init__(
            self, image_size, block_spread, pusher_spread, max_start_coverage, success_coverage,
            render_mode, width, height,
        )
        self.image_size = int(image_size)
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            "agent_pos": gym.spaces.Box(-_POS_BOUND, _POS_BOUND, (2,), np.float32),
        })
        self._camera_renderer: mujoco.Renderer | None = None

    def _observation(self) -> dict[str, np.ndarray]:
        if self._camera_renderer is None:
            # Created on first use: the GL context must not travel through pickling.
            self._camera_renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._camera_renderer.update_scene(self.data, camera=self._camera)
        image = self._camera_renderer.render()
        # The base ends a diverged episode with nan_to_num(obs), which leaves a dict untouched:
        # keep the position finite here.
        agent_pos = np.clip(np.nan_to_num(self.data.qpos[:2]), -_POS_BOUND, _POS_BOUND).astype(np.float32)
        return {"image": image, "agent_pos": agent_pos}

    def close(self):
        """Release both renderers' GL contexts."""
        if self._camera_renderer is not None:
            self._camera_renderer.close()
            self._camera_renderer = None
        super().close()
