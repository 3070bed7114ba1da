"""Tests of cervkit.core.files: atomic writes, overwrite protection, checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from cervkit.core.files import (
    atomic_path,
    atomic_write_bytes,
    check_writable,
    sha256_file,
)


def test_atomic_write_bytes_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "a.bin"  # parents are created
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second", overwrite=True)
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]  # no temp files left


def test_atomic_path_keeps_suffix_and_same_folder(tmp_path: Path) -> None:
    target = tmp_path / "mask.v2.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".nii.gz") and tmp != target
        assert tmp.exists() and not target.exists()  # nothing under the final name yet
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x" and not tmp.exists()


def test_atomic_path_failure_leaves_nothing_and_keeps_original(tmp_path: Path) -> None:
    new = tmp_path / "new.png"
    with pytest.raises(RuntimeError):
        with atomic_path(new) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert not new.exists()
    old = tmp_path / "old.png"
    old.write_bytes(b"original")
    with pytest.raises(RuntimeError):
        with atomic_path(old, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert old.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]


def test_atomic_path_refuses_file_that_appears_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "race.txt"
    with pytest.raises(FileExistsError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"someone else's")
    assert target.read_bytes() == b"someone else's"


def test_check_writable(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "free.txt", overwrite=False) == tmp_path / "free.txt"
    (tmp_path / "taken.txt").write_text("x")
    with pytest.raises(FileExistsError, match="taken.txt"):
        check_writable(tmp_path / "taken.txt", overwrite=False)
    check_writable(tmp_path / "taken.txt", overwrite=True)
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path, overwrite=True)


def test_new_files_follow_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = atomic_write_bytes(tmp_path / "perm.bin", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_sha256_known_vector_and_chunking(tmp_path: Path) -> None:
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")  # FIPS 180-2 test vector
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    data = os.urandom(3000)
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(data).hexdigest()


@pytest.mark.realdata
def test_sha256_matches_real_manifest(real_manifest_path: Path) -> None:
    manifest = pd.read_csv(real_manifest_path)
    for row in manifest.head(3).itertuples():
        assert sha256_file(real_manifest_path.parent / row.image) == row.sha256
