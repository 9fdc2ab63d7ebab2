"""Record each episode to an mp4 with imageio (Gymnasium's RecordVideo needs moviepy)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio


class VideoRecorder(gym.Wrapper):
    """Write ``episode_<k>.mp4`` into ``folder`` for every ``every``-th episode.

    Args:
        env: An env built with ``render_mode="rgb_array"``.
        folder: Output folder (created).
        every: Record episodes 0, every, 2*every, ...
    """

    def __init__(self, env: gym.Env, folder: str | Path, every: int = 1) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"render_mode is {env.render_mode!r}; expected 'rgb_array' to record video")
        if every < 1:
            raise ValueError(f"every={every}; expected >= 1")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.episode = -1
        self.frames: list = []
        self.paths: list[Path] = []

    def reset(self, **kwargs):
        """Flush the last episode's video and start the next."""
        self._flush()
        self.episode += 1
        out = self.env.reset(**kwargs)
        if self.episode % self.every == 0:
            self.frames.append(self.env.render())
        return out

    def step(self, action):
        """Step and keep the frame."""
        out = self.env.step(action)
        if self.episode % self.every == 0:
            self.frames.append(self.env.render())
        return out

    def _flush(self) -> None:
        if self.frames:
            path = self.folder / f"episode_{self.episode}.mp4"
            fps = self.env.metadata.get("render_fps", 20)
            imageio.mimsave(path, self.frames, fps=fps, macro_block_size=8)
            self.paths.append(path)
            self.frames = []

    def close(self):
        """Write a pending video, then close the env."""
        self._flush()
        super().close()
