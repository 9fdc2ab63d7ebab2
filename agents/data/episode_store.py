"""The zarr v3 episode store: time-major data, all-or-nothing episode commits, a per-episode table.

Layout::

    data/<key>          (T, ...) every step of every committed episode, time-major
    meta/episode_ends   (E,) exclusive end index of each episode in data/*; written last
    meta/episode_id     (E,) deterministic id, e.g. derived from (run seed, episode index)
    meta/seed           (E,) the env reset seed
    meta/length         (E,) steps
    meta/success        (E,) bool
    meta/source         (E,) str, who produced the episode (expert name, policy run)
    attrs               format, version, env_id, provenance

Commit protocol: episodes are buffered in memory and flushed in whole chunks; a flush writes data,
then the table, then ``episode_ends``. A reader trusts only the prefix of ``episode_ends`` that is
strictly increasing and covered by data and table (zarr 3 writes a new shape before the chunks, so
a torn append reads back as fill values, which that check rejects). Opening for append repairs a
torn tail by truncating everything to the last committed episode.

Damage and hostile input (see ``store_checks``): a store is opened only after its metadata passed a
codec allow-list (no pickle codec ever decodes); every chunk of the committed content must be on
disk (zarr would read a missing one as zeros) and is written even when it holds only zeros; chunks
carry a crc32c, so a truncated or flipped chunk fails to decode and is reported by key. A write
that fails (a full disk) raises one clear error and leaves the committed episodes as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from agents.data.store_checks import CorruptStoreError, bad_chunk, check_codecs, missing_chunks

FORMAT = "kinodiff.episodes"
VERSION = 2  # 2: crc32c on every chunk, zero chunks written, every committed chunk checked
HASH_SLICE_BYTES = 1 << 24  # bytes of a data array content_hash reads at once (whole chunks, >= 1)

_TABLE = {"episode_id": np.int64, "seed": np.int64, "length": np.int64, "success": np.bool_}
_LOCK = ".writer.lock"
# zarr skips chunks that hold only the fill value; then a deleted chunk and a zero one look alike.
_WRITE_ALL_CHUNKS = {"array.write_empty_chunks": True}
_COMPRESSORS = (ZstdCodec(), Crc32cCodec())


def _committed_count(ends: np.ndarray, data_len: int, table_len: int) -> int:
    """Number of leading episodes whose commit finished. ends: (E,) int."""
    if ends.size == 0:
        return 0
    ok = np.concatenate([[ends[0] > 0], np.diff(ends) > 0]) & (ends <= data_len)
    bad = np.flatnonzero(~ok)
    n = int(bad[0]) if bad.size else int(ends.size)
    return min(n, table_len)


class EpisodeStore:
    """Reader and buffered writer of one zarr episode store. Use ``create`` or ``open``."""

    def __init__(self, group: zarr.Group, path: Path, writable: bool) -> None:
        self._g = group
        self.path = path
        self.writable = writable
        self._buffer: list[tuple[dict[str, np.ndarray], dict[str, Any]]] = []
        self._buffered_steps = 0
        self._lock_held = False
        self.chunk_steps = int(group.attrs.get("chunk_steps", 4096))
        self._refresh()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        specs: Mapping[str, tuple[tuple[int, ...], str]],
        *,
        env_id: str,
        provenance: Mapping[str, Any] | None = None,
        chunk_steps: int = 4096,
    ) -> EpisodeStore:
        """Create an empty store; refuses to overwrite an existing path.

        Args:
            path: Folder of the store (``*.zarr``).
            specs: ``key -> (per-step shape, dtype)``, e.g. ``{"obs": ((4,), "float32")}``.
            env_id: The task the episodes come from.
            provenance: Free-form JSON-serializable facts (versions, command, config).
            chunk_steps: Steps per chunk along time; writes are buffered to whole chunks.
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"dataset {str(path)!r} already exists; expected a new path")
        # Built beside its final path and renamed into place whole: a writer killed mid-create
        # leaves a ``.creating`` folder, never a store that can be neither opened nor re-created.
        staging = path.with_name(f"{path.name}.creating-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        g = zarr.open_group(str(staging), mode="w-")
        g.attrs.update(
            {
                "format": FORMAT,
                "version": VERSION,
                "env_id": env_id,
                "chunk_steps": int(chunk_steps),
                "provenance": json.loads(json.dumps(dict(provenance or {}), default=str)),
            }
        )
        for key, (shape, dtype) in specs.items():
            g.create_array(f"data/{key}", shape=(0, *shape), chunks=(chunk_steps, *shape),
                           dtype=dtype, compressors=_COMPRESSORS)
        g.create_array("meta/episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=0,
                       compressors=_COMPRESSORS)
        for key, dtype in _TABLE.items():
            g.create_array(f"meta/{key}", shape=(0,), chunks=(4096,), dtype=dtype,
                           compressors=_COMPRESSORS)
        g.create_array("meta/source", shape=(0,), chunks=(4096,), dtype=str,
                       compressors=_COMPRESSORS)
        (staging / _LOCK).write_text(str(os.getpid()))  # locked before anyone can see it
        os.replace(staging, path)
        store = cls(zarr.open_group(str(path), mode="r+"), path, writable=True)
        store._lock_held = True
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> EpisodeStore:
        """Open a store for reading (``"r"``) or appending (``"a"``, repairs a torn tail)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode {mode!r} is not supported; expected 'r' or 'a'")
        if not (path / "zarr.json").is_file():
            raise FileNotFoundError(f"dataset {str(path)!r} not found; expected a kinodiff .zarr store")
        check_codecs(path)  # before zarr parses anything: no pickle codec may ever decode
        try:
            g = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
        except Exception as exc:  # zarr raises several types for a malformed store
            raise ValueError(f"dataset {str(path)!r} is not a readable zarr store: {exc}") from exc
        if g.attrs.get("format") != FORMAT:
            raise ValueError(
                f"dataset {str(path)!r} has format {g.attrs.get('format')!r}; expected {FORMAT!r}"
            )
        store = cls(g, path, writable=mode == "a")
        if int(g.attrs.get("version", 1)) >= 2:  # version 1 skipped zero chunks: absence was legal
            store._check_chunks()
        if mode == "a":
            store._acquire_lock()
            store._repair()
        return store

    # -- reading ---------------------------------------------------------------------------
    def _read(self, name: str, stop: int | None = None, start: int = 0) -> np.ndarray:
        """Rows ``start:stop`` of array ``name``; a chunk that fails to decode is named."""
        arr = self._g[name]
        try:
            return np.asarray(arr[start:stop])
        except Exception as exc:  # noqa: BLE001 - codecs raise many types; the key is what matters
            key = bad_chunk(arr, arr.shape[0] if stop is None else stop) or name
            raise CorruptStoreError(f"dataset {str(self.path)!r}: chunk {key!r} is truncated or "
                                    f"corrupt ({type(exc).__name__}: {exc})") from exc

    def _check_chunks(self) -> None:
        """Every chunk of the committed content must be on disk (zarr would read zeros)."""
        ends = self._g["meta/episode_ends"]
        last_chunk_start = (max(ends.shape[0] - 1, 0) // ends.chunks[0]) * ends.chunks[0]
        lost = missing_chunks(self.path, ends, last_chunk_start)  # the last may be a torn tail
        for _, arr in self._data_arrays():
            lost += missing_chunks(self.path, arr, self.n_steps)
        for key in ("episode_ends", *_TABLE, "source"):
            lost += missing_chunks(self.path, self._g[f"meta/{key}"], self._n)
        if lost:
            raise CorruptStoreError(
                f"dataset {str(self.path)!r}: chunks {lost[:5]}{' ...' if len(lost) > 5 else ''} of "
                f"committed episodes are missing; expected every chunk on disk (restore them from "
                "a copy; zarr would read them as zeros)")

    def _refresh(self) -> None:
        ends = self._read("meta/episode_ends").astype(np.int64)
        data_len = min((a.shape[0] for _, a in self._data_arrays()), default=0)
        table_len = min(self._g[f"meta/{k}"].shape[0] for k in (*_TABLE, "source"))
        self._n = _committed_count(ends, data_len, table_len)
        self._ends = ends[: self._n]

    def _data_arrays(self):
        return self._g["data"].arrays()

    @property
    def env_id(self) -> str:
        """The task the episodes come from."""
        return str(self._g.attrs["env_id"])

    @property
    def attrs(self) -> dict[str, Any]:
        """Store attributes (format, env_id, provenance)."""
        return dict(self._g.attrs)

    @property
    def keys(self) -> list[str]:
        """Names of the per-step arrays."""
        return sorted(name for name, _ in self._data_arrays())

    def step_shape(self, key: str) -> tuple[int, ...]:
        """Per-step shape of the array ``key`` (e.g. ``(4,)`` for 4-D observations)."""
        if key not in self.keys:
            raise ValueError(f"dataset {str(self.path)!r} has no key {key!r}; it has {self.keys}")
        return tuple(self._g[f"data/{key}"].shape[1:])

    @property
    def n_episodes(self) -> int:
        """Committed episodes."""
        return self._n

    @property
    def n_steps(self) -> int:
        """Committed steps."""
        return int(self._ends[-1]) if self._n else 0

    @property
    def episode_ends(self) -> np.ndarray:
        """(E,) exclusive end index of each committed episode."""
        return self._ends.copy()

    def table(self) -> dict[str, np.ndarray]:
        """The per-episode table of committed episodes: id, seed, length, success, source."""
        return {k: self._read(f"meta/{k}", self._n) for k in (*_TABLE, "source")}

    def content_hash(self) -> str:
        """sha256 of the committed content: every data array and the per-episode table.

        Provenance (paths, command line, versions) is left out, so the same seed list gives the same
        hash wherever and whenever it is collected.
        """
        digest, table = hashlib.sha256(), self.table()
        for key in sorted({*self.keys, *table}):
            if key in table:
                values = np.ascontiguousarray(table[key])
                digest.update(f"{key}:{values.dtype.str}:{values.shape}".encode())
                digest.update("\x00".join(values.tolist()).encode() if values.dtype.kind in "OTU"
                              else values.tobytes())
                continue
            # Streamed in whole-chunk slices: the bytes of the whole array's tobytes(), not its memory.
            arr = self._g[f"data/{key}"]
            digest.update(f"{key}:{arr.dtype.str}:{(self.n_steps, *arr.shape[1:])}".encode())
            chunk_bytes = arr.chunks[0] * arr.dtype.itemsize * int(np.prod(arr.shape[1:]))
            step = arr.chunks[0] * max(1, HASH_SLICE_BYTES // max(chunk_bytes, 1))
            for start in range(0, self.n_steps, step):
                rows = self._read(f"data/{key}", min(start + step, self.n_steps), start)
                digest.update(np.ascontiguousarray(rows).tobytes())
        return digest.hexdigest()

    def load(self, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All committed steps of ``keys`` (default: every key) as numpy arrays."""
        keys = keys or self.keys
        missing = sorted(set(keys) - set(self.keys))
        if missing:
            raise ValueError(f"dataset {str(self.path)!r} has no keys {missing}; it has {self.keys}")
        return {k: self._read(f"data/{k}", self.n_steps) for k in keys}

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """One committed episode's steps."""
        if not 0 <= index < self._n:
            raise IndexError(f"episode {index} out of range; the store has {self._n}")
        start = int(self._ends[index - 1]) if index else 0
        end = int(self._ends[index])
        return {k: self._read(f"data/{k}", end, start) for k in self.keys}

    # -- writing ---------------------------------------------------------------------------
    def add_episode(
        self,
        steps: Mapping[str, np.ndarray],
        *,
        episode_id: int,
        seed: int,
        source: str,
        success: bool,
    ) -> None:
        """Buffer one episode; it is committed by the flush that follows (whole chunks)."""
        if not self.writable:
            raise PermissionError(f"dataset {str(self.path)!r} is open read-only")
        if sorted(steps) != self.keys:
            raise ValueError(f"episode has keys {sorted(steps)}; expected {self.keys}")
        lengths = {k: len(v) for k, v in steps.items()}
        if len(set(lengths.values())) != 1 or not next(iter(lengths.values())):
            raise ValueError(f"episode arrays have lengths {lengths}; expected one equal length > 0")
        for k, v in steps.items():
            expected = self.step_shape(k)
            if tuple(np.shape(v)[1:]) != expected:
                raise ValueError(f"episode {k!r} has step shape {np.shape(v)[1:]}; expected {expected}")
        meta = {"episode_id": int(episode_id), "seed": int(seed), "source": str(source),
                "success": bool(success), "length": next(iter(lengths.values()))}
        self._buffer.append(({k: np.asarray(v) for k, v in steps.items()}, meta))
        self._buffered_steps += meta["length"]
        if self._buffered_steps >= self.chunk_steps:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered episodes: data first, then the table, ``episode_ends`` last.

        Raises:
            OSError: A write failed (e.g. the disk is full). The buffered episodes are dropped, the
                committed ones are untouched, and the message says how many the store keeps.
        """
        if not self._buffer:
            return
        e0 = self._n
        e1 = e0 + len(self._buffer)
        try:
            with zarr.config.set(_WRITE_ALL_CHUNKS):
                self._write_buffer()
        except OSError as exc:
            self._buffer.clear()
            self._buffered_steps = 0
            self._refresh()
            try:
                self._repair()
            except OSError:
                pass  # readers ignore the torn tail anyway; the next writer repairs it
            raise OSError(exc.errno, f"dataset {str(self.path)!r}: committing episodes {e0}..{e1 - 1} "
                          f"failed ({exc.strerror or exc}); the store keeps its {self._n} committed "
                          "episodes (free space, then continue with --resume)") from exc
        self._buffer.clear()
        self._buffered_steps = 0
        self._refresh()

    def _write_buffer(self) -> None:
        t0, e0 = self.n_steps, self._n
        lengths = np.array([m["length"] for _, m in self._buffer], dtype=np.int64)
        t1, e1 = t0 + int(lengths.sum()), e0 + len(self._buffer)
        for key in self.keys:
            arr = self._g[f"data/{key}"]
            arr.resize((t1, *arr.shape[1:]))
            arr[t0:t1] = np.concatenate([steps[key] for steps, _ in self._buffer])
        for key in (*_TABLE, "source"):
            arr = self._g[f"meta/{key}"]
            arr.resize((e1,))
            arr[e0:e1] = np.array([m[key] for _, m in self._buffer])
        ends = self._g["meta/episode_ends"]
        ends.resize((e1,))
        ends[e0:e1] = t0 + np.cumsum(lengths)

    def _repair(self) -> None:
        """Truncate every array to the last committed episode (a torn write leaves extra rows)."""
        n, t = self._n, self.n_steps
        for _, arr in self._data_arrays():
            if arr.shape[0] != t:
                arr.resize((t, *arr.shape[1:]))
        for key in ("episode_ends", *_TABLE, "source"):
            arr = self._g[f"meta/{key}"]
            if arr.shape[0] != n:
                arr.resize((n,))

    def _acquire_lock(self) -> None:
        lock = self.path / _LOCK
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = lock.read_text().strip()
            if pid.isdigit() and _alive(int(pid)):
                raise BlockingIOError(
                    f"dataset {str(self.path)!r} is being written by process {pid}; "
                    "expected a single writer"
                ) from None
            lock.unlink(missing_ok=True)  # stale lock of a dead writer
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        self._lock_held = True

    def close(self) -> None:
        """Flush what is buffered and release the writer lock (also when the flush fails)."""
        try:
            if self.writable:
                self.flush()
        finally:
            if self._lock_held:
                (self.path / _LOCK).unlink(missing_ok=True)
                self._lock_held = False

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, OSError):
            self._buffer.clear()  # the write already failed; do not fail the same way twice
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
