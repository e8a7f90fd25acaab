"""Sweep locations: local paths and object-store URIs (the S3 round trip is test_object_storage)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest
import ray.train

from tauray.storage import (
    RemotePath,
    checkpoint_uri,
    is_uri,
    local_folder,
    location,
    write_text_atomic,
)


def test_uris_become_remote_paths_and_paths_absolute_paths(tmp_path: Path) -> None:
    assert is_uri("s3://bucket/x") and is_uri("gs://bucket") and not is_uri("results")
    assert not is_uri("file:///tmp/x")  # a local file, spelled as a URI
    assert location("s3://bucket/sweeps/") == RemotePath("s3://bucket/sweeps")
    assert location("results", tmp_path) == tmp_path.resolve() / "results"
    assert location("file:///tmp/x") == Path("/tmp/x")
    assert location(tmp_path / "a") == tmp_path / "a"


def test_remote_path_joins_and_splits_like_a_path() -> None:
    sweep = RemotePath("s3://bucket/team/sweep-1")
    assert str(sweep / "plots" / "a.png") == "s3://bucket/team/sweep-1/plots/a.png"
    assert sweep.name == "sweep-1"
    assert sweep.parent == RemotePath("s3://bucket/team")
    assert sweep.parent.parent.parent == RemotePath("s3://bucket")  # the bucket is the top
    assert sweep.resolve() is sweep and sweep.is_absolute()
    assert len({sweep, RemotePath("s3://bucket/team/sweep-1/")}) == 1
    with pytest.raises(ValueError, match="not a storage URI"):
        RemotePath("/tmp/sweep")


def test_local_writes_are_atomic_and_local_folders_are_themselves(tmp_path: Path) -> None:
    target = tmp_path / "clock.json"
    write_text_atomic(target, "1")
    write_text_atomic(target, "2")
    assert target.read_text() == "2"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clock.json"]  # no leftovers
    with local_folder(tmp_path / "plots") as folder:
        (folder / "a.png").write_bytes(b"png")
    assert (tmp_path / "plots" / "a.png").read_bytes() == b"png"


def test_checkpoint_uri_names_the_store(tmp_path: Path) -> None:
    local = ray.train.Checkpoint(path=str(tmp_path))
    assert checkpoint_uri(local) == str(tmp_path)
    # Ray keeps an object store's checkpoint as (filesystem, "bucket/key"): another process
    # could not open "bucket/key" alone.
    s3 = pafs.S3FileSystem(endpoint_override="http://127.0.0.1:9", region="us-east-1")
    remote = ray.train.Checkpoint(path="bucket/sweep/trial/checkpoint_000001", filesystem=s3)
    assert checkpoint_uri(remote) == "s3://bucket/sweep/trial/checkpoint_000001"
    assert checkpoint_uri(None) is None
