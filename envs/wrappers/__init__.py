"""Wrappers shared by every task.

Observation history is Gymnasium's own ``FrameStackObservation``; the rest are ours because
Gymnasium has no equivalent (action chunks, action noise for DART, domain randomization) or needs
moviepy (video).
"""

from gymnasium.wrappers import FrameStackObservation

from envs.wrappers.action_chunk import ActionChunk
from envs.wrappers.action_noise import ActionNoise
from envs.wrappers.domain_randomization import SHIFT_PRESETS, DomainRandomization, ShiftSpec
from envs.wrappers.video import VideoRecorder

__all__ = ["SHIFT_PRESETS", "ActionChunk", "ActionNoise", "DomainRandomization", "FrameStackObservation",
           "ShiftSpec", "VideoRecorder"]
