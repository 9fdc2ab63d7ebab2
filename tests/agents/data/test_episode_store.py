import numpy as np
import pytest

from agents.data.episode_store import EpisodeStore

SPECS = {"obs": ((3,), "float32"), "action": ((2,), "float32")}


def _episode(length, value):
    return {"obs": np.full((length, 3), value, np.float32),
            "action": np.full((length, 2), -value, np.float32)}


def _store(path, chunk_steps=8):
    return EpisodeStore.create(path, SPECS, env_id="test/Env-v0", chunk_steps=chunk_steps)


def test_round_trip_with_table(tmp_path):
    path = tmp_path / "s.zarr"
    with _store(path) as s:
        for i, n in enumerate([3, 5, 9]):
            s.add_episode(_episode(n, i + 1), episode_id=100 + i, seed=i, source="expert:x",
                          success=i != 1)
    r = EpisodeStore.open(path)
    assert r.n_episodes == 3 and r.n_steps == 17
    assert r.episode_ends.tolist() == [3, 8, 17]
    assert np.array_equal(r.episode(1)["obs"], np.full((5, 3), 2, np.float32))
    t = r.table()
    assert t["episode_id"].tolist() == [100, 101, 102]
    assert t["success"].tolist() == [True, False, True]
    assert t["length"].tolist() == [3, 5, 9] and list(t["source"]) == ["expert:x"] * 3
    assert r.load()["action"].shape == (17, 2)


def test_buffered_episodes_are_invisible_until_flushed(tmp_path):
    path = tmp_path / "s.zarr"
    s = _store(path, chunk_steps=100)
    s.add_episode(_episode(4, 1), episode_id=1, seed=1, source="x", success=True)
    assert EpisodeStore.open(path).n_episodes == 0  # still buffered: not committed
    s.close()
    assert EpisodeStore.open(path).n_episodes == 1


def test_torn_append_is_ignored_by_readers_and_repaired_by_writers(tmp_path):
    path = tmp_path / "s.zarr"
    with _store(path) as s:
        s.add_episode(_episode(4, 1), episode_id=1, seed=1, source="x", success=True)
    # Simulate a crash in the middle of a second commit: data and the shape of episode_ends were
    # written, the episode_ends chunk was not (zarr 3 writes shape first, then chunks).
    raw = EpisodeStore.open(path, mode="a")
    obs = raw._g["data/obs"]
    obs.resize((10, 3))
    obs[4:10] = 7.0
    raw._g["meta/episode_ends"].resize((2,))
    raw.close()
    # Readers trust only the committed episode; the zero-filled end is rejected.
    r = EpisodeStore.open(path)
    assert r.n_episodes == 1 and r.n_steps == 4
    assert np.array_equal(r.load()["obs"], np.ones((4, 3), np.float32))
    # A writer repairs the tail and appends cleanly after it.
    with EpisodeStore.open(path, mode="a") as w:
        assert w._g["data/obs"].shape[0] == 4 and w._g["meta/episode_ends"].shape[0] == 1
        w.add_episode(_episode(2, 3), episode_id=2, seed=2, source="x", success=True)
    r = EpisodeStore.open(path)
    assert r.episode_ends.tolist() == [4, 6]
    assert np.array_equal(r.episode(1)["obs"], np.full((2, 3), 3, np.float32))


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    s = _store(path)
    with pytest.raises(BlockingIOError, match="single writer"):
        EpisodeStore.open(path, mode="a")
    s.close()
    EpisodeStore.open(path, mode="a").close()  # the lock was released


def test_bad_episodes_and_paths_are_named(tmp_path):
    path = tmp_path / "s.zarr"
    with _store(path) as s:
        with pytest.raises(ValueError, match="keys"):
            s.add_episode({"obs": np.zeros((2, 3))}, episode_id=1, seed=0, source="x", success=True)
        with pytest.raises(ValueError, match="step shape"):
            s.add_episode({"obs": np.zeros((2, 4)), "action": np.zeros((2, 2))}, episode_id=1,
                          seed=0, source="x", success=True)
        with pytest.raises(ValueError, match="lengths"):
            s.add_episode({"obs": np.zeros((2, 3)), "action": np.zeros((3, 2))}, episode_id=1,
                          seed=0, source="x", success=True)
    with pytest.raises(FileExistsError, match="already exists"):
        _store(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(ValueError, match="junk.zarr"):
        EpisodeStore.open(tmp_path / "junk.zarr")


def test_same_seeds_give_the_same_content_hash(tmp_path):
    from agents.collect import CollectConfig, collect

    hashes = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        collect(CollectConfig(env="kinodiff/TinyReach-v0", episodes=3, seed=seed,
                              out=str(tmp_path / f"{name}.zarr")), progress=False)
        hashes.append(EpisodeStore.open(tmp_path / f"{name}.zarr").content_hash())
    assert hashes[0] == hashes[1] != hashes[2]


def test_content_hash_streams_the_bytes_of_the_whole_arrays(tmp_path, monkeypatch):
    """Read slice by slice (here one chunk of 8 steps at a time), the hash equals sha256 over each
    key's header and the whole array's bytes, in key order, as it did when everything was loaded."""
    import hashlib

    import agents.data.episode_store as es

    path = tmp_path / "s.zarr"
    with _store(path) as s:
        for i, n in enumerate([3, 11, 9, 6]):
            ep = _episode(n, i + 1)
            ep["obs"] = ep["obs"] + np.arange(n, dtype=np.float32)[:, None]  # rows differ
            s.add_episode(ep, episode_id=100 + i, seed=i, source="expert:x", success=i != 1)
    store = EpisodeStore.open(path)
    expected = hashlib.sha256()
    for key, values in sorted({**store.load(), **store.table()}.items()):
        values = np.ascontiguousarray(values)
        expected.update(f"{key}:{values.dtype.str}:{values.shape}".encode())
        expected.update("\x00".join(values.tolist()).encode() if values.dtype.kind in "OTU"
                        else values.tobytes())
    whole = store.content_hash()
    monkeypatch.setattr(es, "HASH_SLICE_BYTES", 1)
    assert store.content_hash() == whole == expected.hexdigest()
    with _store(tmp_path / "t.zarr") as s:  # one value changed: another hash
        for i, n in enumerate([3, 11, 9, 6]):
            ep = _episode(n, i + 1 + (i == 2) * 1e-3)
            ep["obs"] = ep["obs"] + np.arange(n, dtype=np.float32)[:, None]
            s.add_episode(ep, episode_id=100 + i, seed=i, source="expert:x", success=i != 1)
    assert EpisodeStore.open(tmp_path / "t.zarr").content_hash() != whole
