"""Class attributes that read an ``nn.Module``'s submodules and buffers without ``__getattr__``."""

from __future__ import annotations

from typing import Any


class Registered:
    """Reads the submodule or buffer of this attribute's name straight from the module's own dict.

    ``nn.Module`` keeps submodules in ``_modules`` and buffers in ``_buffers`` and finds them in
    ``__getattr__``, a Python fallback that runs after ordinary lookup has failed: ~1 us per read,
    several us on a cache the denoiser's weights have just flushed, and a chunk at batch 1 reads
    ~16 of them (a PushT one-step student's chunk: ~10% of its time). As a class attribute this
    finds the same entry first. Assignment, ``register_buffer``, ``.to``, loads and ``del`` still go
    through ``nn.Module``, which writes the same dicts, so a replaced module or buffer is what the
    next read returns.

    Args:
        store: ``"_modules"`` or ``"_buffers"``.
    """

    def __init__(self, store: str) -> None:
        if store not in ("_modules", "_buffers"):
            raise ValueError(f"store={store!r}; expected '_modules' or '_buffers'")
        self.store = store
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.store][self.name]
        except KeyError:  # not registered (yet): as nn.Module, an AttributeError (hasattr is False)
            raise AttributeError(f"'{type(obj).__name__}' object has no attribute '{self.name}'") from None
