"""Checks an episode store passes before anything in it is decoded.

zarr 3 decodes with whatever codecs an array's metadata names, numcodecs' pickle codec included
(decoding it runs code chosen by whoever wrote the store), and it reads a chunk that is not on disk
as the fill value, zeros, without a word. These checks read the metadata as plain JSON and look at
the chunk files, so a hostile or damaged store is refused with the key at fault before zarr touches
its bytes.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

# The codecs kinodiff writes or that decode bytes without running code.
SAFE_CODECS = frozenset({"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose", "vlen-utf8",
                         "vlen-bytes", "sharding_indexed"})


class CorruptStoreError(ValueError):
    """A store whose committed content is missing, truncated or unsafe to decode."""


def _codec_names(codecs: list[Any]) -> set[str]:
    names: set[str] = set()
    for codec in codecs:
        if isinstance(codec, str):
            names.add(codec)
            continue
        if not isinstance(codec, dict):
            names.add(repr(codec))
            continue
        names.add(str(codec.get("name")))
        config = codec.get("configuration") or {}
        for nested in ("codecs", "index_codecs"):  # sharding holds codec lists of its own
            names |= _codec_names(config.get(nested) or [])
    return names


def check_codecs(root: Path) -> None:
    """Refuse a store with zarr v2 metadata or any array whose codecs are not in ``SAFE_CODECS``.

    Raises:
        CorruptStoreError: naming the array and the codecs at fault.
    """
    for meta in sorted(root.rglob(".zarray")):
        raise CorruptStoreError(f"dataset {str(root)!r} holds zarr v2 metadata {str(meta)!r}; "
                                "expected a zarr v3 kinodiff store")
    for meta in sorted(root.rglob("zarr.json")):
        try:
            doc = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptStoreError(f"dataset {str(root)!r}: metadata {str(meta)!r} is not valid "
                                    f"JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("node_type") != "array":
            continue
        name = meta.parent.relative_to(root).as_posix()
        bad = _codec_names(doc.get("codecs") or []) - SAFE_CODECS
        if bad:
            raise CorruptStoreError(
                f"dataset {str(root)!r}: array {name!r} uses codecs {sorted(bad)}; expected only "
                f"{sorted(SAFE_CODECS)} (a pickle-like codec would run code while decoding)")
        if not isinstance(doc.get("data_type"), str):
            raise CorruptStoreError(f"dataset {str(root)!r}: array {name!r} has data type "
                                    f"{doc.get('data_type')!r}; expected a plain zarr v3 type name")


def chunk_keys(array: Any, rows: int) -> list[str]:
    """Store keys of the chunks that hold the first ``rows`` rows of a zarr v3 ``array``."""
    shape, chunks = array.shape, array.chunks
    grid = [range(math.ceil(rows / chunks[0]))]
    grid += [range(max(1, math.ceil(n / c))) for n, c in zip(shape[1:], chunks[1:], strict=True)]
    return [array.metadata.encode_chunk_key(coords) for coords in itertools.product(*grid)]


def missing_chunks(root: Path, array: Any, rows: int) -> list[str]:
    """Keys (``data/obs/c/3/0``) of the chunks of the first ``rows`` rows that are not on disk."""
    folder = root / array.path
    return [f"{array.path}/{key}" for key in chunk_keys(array, rows) if not (folder / key).is_file()]


def bad_chunk(array: Any, rows: int) -> str | None:
    """Key of the first chunk among the first ``rows`` rows that fails to decode, if any."""
    step = array.chunks[0]
    for start in range(0, rows, step):
        try:
            array[start:min(rows, start + step)]
        except Exception:  # noqa: BLE001 - codecs raise many types; the key is what we report
            coords = (start // step,) + (0,) * (array.ndim - 1)
            return f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
    return None
