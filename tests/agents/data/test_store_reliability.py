"""Fault injection on the episode store: killed writers, damaged chunks, a full disk, hostile codecs."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from agents.collect import CollectConfig, collect
from agents.data.episode_store import EpisodeStore
from agents.data.store_checks import CorruptStoreError

ENV = "kinodiff/TinyReach-v0"
EPISODES, SEED, CHUNK = 12, 5, 64
ROOT = Path(__file__).resolve().parents[3]

# Run in a child: small chunks (many commits per collection), and a SIGKILL at the K-th store write,
# so the kill lands between any two file writes of zarr, wherever they fall in the commit protocol.
_KILLED_COLLECTION = textwrap.dedent("""
    import os, signal, sys
    from zarr.storage import LocalStore
    import agents.data.episode_store as es
    from agents.collect import CollectConfig, collect

    kill_at, out = int(sys.argv[1]), sys.argv[2]
    writes = [0]
    _set = LocalStore.set
    async def counting_set(self, key, value):
        writes[0] += 1
        if writes[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return await _set(self, key, value)
    LocalStore.set = counting_set
    _create = es.EpisodeStore.create.__func__
    def create(cls, *args, **kwargs):
        kwargs["chunk_steps"] = {chunk}
        return _create(cls, *args, **kwargs)
    es.EpisodeStore.create = classmethod(create)
    collect(CollectConfig(env="{env}", episodes={episodes}, seed={seed}, out=out), progress=False)
""").format(chunk=CHUNK, env=ENV, episodes=EPISODES, seed=SEED)


def _episodes_by_id(store):
    ids = store.table()["episode_id"].tolist()
    return {eid: store.episode(i) for i, eid in enumerate(ids)}


def _count_writes(monkeypatch, out):
    """Collect the reference store in-process, counting zarr writes; returns (store, writes)."""
    from zarr.storage import LocalStore

    import agents.data.episode_store as es

    writes = [0]
    original_set = LocalStore.set

    async def counting_set(self, key, value):
        writes[0] += 1
        return await original_set(self, key, value)

    original_create = es.EpisodeStore.create.__func__
    monkeypatch.setattr(LocalStore, "set", counting_set)
    monkeypatch.setattr(es.EpisodeStore, "create", classmethod(
        lambda cls, *a, **k: original_create(cls, *a, **{**k, "chunk_steps": CHUNK})))
    collect(CollectConfig(env=ENV, episodes=EPISODES, seed=SEED, out=str(out)), progress=False)
    return EpisodeStore.open(out), writes[0]


@pytest.mark.slow
def test_writer_killed_at_20_random_points_leaves_whole_episodes_and_resumes(tmp_path, monkeypatch):
    reference, total_writes = _count_writes(monkeypatch, tmp_path / "reference.zarr")
    monkeypatch.undo()
    expected = _episodes_by_id(reference)
    assert reference.n_episodes == EPISODES and total_writes > 40
    kill_points = sorted(np.random.default_rng(0).choice(np.arange(1, total_writes), 20, replace=False))
    committed_counts = []
    for k in kill_points:
        out = tmp_path / f"killed_{k}.zarr"
        child = subprocess.run([sys.executable, "-c", _KILLED_COLLECTION, str(k), str(out)],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
        if not (out / "zarr.json").exists():  # killed before the store existed: nothing to lose
            committed_counts.append(0)
            continue
        store = EpisodeStore.open(out)
        # Every committed episode is whole and equal to the reference: no zero-filled rows.
        for eid, steps in _episodes_by_id(store).items():
            for key, values in steps.items():
                np.testing.assert_array_equal(values, expected[eid][key], err_msg=f"kill at {k}")
        committed_counts.append(store.n_episodes)
        # The stale lock of the killed writer is taken over; --resume completes the same content.
        collect(CollectConfig(env=ENV, episodes=EPISODES, seed=SEED, out=str(out), resume=True),
                progress=False)
        assert EpisodeStore.open(out).content_hash() == reference.content_hash(), f"kill at {k}"
    # The kill points span the collection: some before any commit, some after several.
    assert min(committed_counts) < max(committed_counts)


def _three_chunk_store(path):
    with EpisodeStore.create(path, {"obs": ((3,), "float32")}, env_id="test/Env-v0",
                             chunk_steps=4) as store:
        for i in range(3):  # 12 steps: chunks c/0/0, c/1/0, c/2/0 of data/obs
            store.add_episode({"obs": np.full((4, 3), i + 1.0, np.float32)}, episode_id=i,
                              seed=i, source="x", success=True)
    return path


def test_a_deleted_chunk_is_reported_by_key_not_read_as_zeros(tmp_path):
    path = _three_chunk_store(tmp_path / "s.zarr")
    (path / "data" / "obs" / "c" / "1" / "0").unlink()
    with pytest.raises(CorruptStoreError, match=r"data/obs/c/1/0.*missing"):
        EpisodeStore.open(path)
    with pytest.raises(CorruptStoreError, match="missing"):
        EpisodeStore.open(path, mode="a")  # nor is it "repaired" by a writer


def test_an_all_zero_chunk_is_written_and_reads_back(tmp_path):
    # zarr skips chunks equal to the fill value by default; the store writes them, so that absence
    # always means damage.
    path = tmp_path / "z.zarr"
    with EpisodeStore.create(path, {"obs": ((3,), "float32")}, env_id="t", chunk_steps=4) as s:
        s.add_episode({"obs": np.zeros((4, 3), np.float32)}, episode_id=0, seed=0, source="x",
                      success=False)
    assert (path / "data" / "obs" / "c" / "0" / "0").is_file()
    assert EpisodeStore.open(path).load()["obs"].sum() == 0.0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_chunk_is_reported_by_key(tmp_path, damage):
    path = _three_chunk_store(tmp_path / "s.zarr")
    chunk = path / "data" / "obs" / "c" / "2" / "0"
    raw = bytearray(chunk.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    store = EpisodeStore.open(path)
    assert np.array_equal(store.episode(0)["obs"], np.ones((4, 3), np.float32))  # others intact
    with pytest.raises(CorruptStoreError, match=r"data/obs/c/2/0.*(truncated|corrupt)"):
        store.load()
    with pytest.raises(CorruptStoreError, match=r"data/obs/c/2/0"):
        store.episode(2)


_HOLD_WRITER = textwrap.dedent("""
    import sys, time
    from agents.data.episode_store import EpisodeStore
    store = EpisodeStore.open(sys.argv[1], mode="a")
    print("holding", flush=True)
    time.sleep(600)
""")


def test_a_second_writer_process_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    path = _three_chunk_store(tmp_path / "s.zarr")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_WRITER, str(path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(BlockingIOError, match=rf"process {holder.pid}.*single writer"):
            EpisodeStore.open(path, mode="a")
        assert EpisodeStore.open(path).n_episodes == 3  # readers are never blocked
    finally:
        holder.kill()
        holder.wait()
    with EpisodeStore.open(path, mode="a") as store:  # the dead writer's lock is stale
        assert store.n_episodes == 3


# Runs inside a private mount namespace over a 192 KiB tmpfs: collect (64-step chunks, so commits
# are frequent) until the disk is full, then try again through the CLI.
_DISK_FULL = textwrap.dedent("""
    import json, subprocess, sys
    import agents.data.episode_store as es
    from agents.collect import CollectConfig, collect
    out = sys.argv[1] + "/full.zarr"
    _create = es.EpisodeStore.create.__func__
    es.EpisodeStore.create = classmethod(lambda cls, *a, **k: _create(cls, *a, **{{**k, "chunk_steps": 64}}))
    try:
        collect(CollectConfig(env="{env}", episodes=4000, out=out), progress=False)
        first_error = "no error"
    except OSError as exc:
        first_error = str(exc)
    first = es.EpisodeStore.open(out)
    episodes = [first.episode(i) for i in range(first.n_episodes)]
    cli = subprocess.run([sys.argv[2], "-m", "agents.cli.main", "collect", "--env", "{env}",
                          "--episodes", "4000", "--out", out, "--resume"],
                         capture_output=True, text=True)
    after = es.EpisodeStore.open(out)
    same = all((after.episode(i)[k] == v).all() for i, e in enumerate(episodes) for k, v in e.items())
    print(json.dumps({{"first_error": first_error, "committed": first.n_episodes, "rc": cli.returncode,
                      "stderr": cli.stderr, "after": after.n_episodes, "intact": bool(same)}}))
""").format(env=ENV)


def test_a_full_disk_ends_with_a_clean_error_and_earlier_episodes_intact(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to mount a private tmpfs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    script = (f"mount -t tmpfs -o size=192k tmpfs {mount} && "
              f"{sys.executable} -c '{_DISK_FULL}' {mount} {sys.executable}")
    child = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    if child.returncode != 0 and "mount" in child.stderr and "ermission" in child.stderr:
        pytest.skip(f"this kernel refuses an unprivileged tmpfs: {child.stderr.strip()}")
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert "No space left on device" in result["first_error"], result
    assert f"keeps its {result['committed']} committed episodes" in result["first_error"]
    assert result["committed"] > 0
    # The CLI, resuming on the full disk, fails with one line (exit 2), not a traceback.
    assert result["rc"] == 2 and "Traceback" not in result["stderr"], result["stderr"]
    errors = [part.strip() for part in result["stderr"].split("kinodiff: error:")[1:]]
    assert len(errors) == 1 and "No space left on device" in errors[0].splitlines()[0], result["stderr"]
    assert result["after"] >= result["committed"] and result["intact"]


class _Boom:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_store_with_a_pickle_codec_is_refused_before_decoding(tmp_path):
    marker = tmp_path / "pwned"
    path = _three_chunk_store(tmp_path / "s.zarr")
    meta_path = path / "data" / "obs" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"] = [{"name": "numcodecs.pickle"}] + meta["codecs"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptStoreError, match=r"data/obs.*numcodecs.pickle"):
        EpisodeStore.open(path)
    # A zarr v2 array with a pickle filter and a payload chunk (zarr 3.1 happens not to decode
    # object arrays; the store must not rely on that).
    path_v2 = _three_chunk_store(tmp_path / "v2.zarr")
    obs = path_v2 / "data" / "obs"
    shutil.rmtree(obs)
    obs.mkdir()
    (obs / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None,
        "fill_value": None, "filters": [{"id": "pickle", "protocol": 5}], "order": "C"}))
    (obs / "0").write_bytes(pickle.dumps(np.array([_Boom(marker)], dtype=object)))
    with pytest.raises(CorruptStoreError, match="zarr v2 metadata"):
        EpisodeStore.open(path_v2)
    assert not marker.exists()
