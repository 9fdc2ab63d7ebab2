"""Experts that write demonstrations: scripted controllers and (later) MPC and SB3 agents."""

from envs.experts.base import Expert

__all__ = ["Expert"]
