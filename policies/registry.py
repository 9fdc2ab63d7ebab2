"""The policy registry: a plain dict, ``register_policy`` and ``make_policy``."""

from __future__ import annotations

import dataclasses
from typing import Any

from policies.base import Policy
from policies.diffusion.policy import DiffusionPolicy
from policies.mlp_bc import MlpBcPolicy

POLICIES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Add a policy class under its ``name``."""
    POLICIES[cls.name] = cls
    return cls


register_policy(DiffusionPolicy)
register_policy(MlpBcPolicy)


def policy_class(name: str) -> type[Policy]:
    """The class registered as ``name``; the error lists the valid names."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {sorted(POLICIES)}")
    return POLICIES[name]


def make_policy(name: str, **config: Any) -> Policy:
    """Build policy ``name`` from config fields (unknown fields are rejected by name)."""
    cls = policy_class(name)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"unknown config fields {unknown} for policy {name!r}; "
                         f"expected some of {sorted(fields)}")
    return cls(cls.config_class(**config))
