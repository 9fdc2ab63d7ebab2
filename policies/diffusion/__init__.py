"""Diffusion policies: noise schedules, samplers and denoisers."""
