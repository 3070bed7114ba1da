"""Safe file writing: atomic replacement, no silent overwrites, checksums.

Every writer in cervkit goes through :func:`atomic_path` (or
:func:`atomic_write_bytes`): the data is written to a temporary file in the
destination folder and renamed into place only when writing succeeded, so a
crash or an exception never leaves a half-written file under the final name.
Without ``overwrite=True`` an existing file is never replaced; the final step
uses a hard link, which fails atomically if the name appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}


def check_writable(path: str | PathLike[str], overwrite: bool) -> Path:
    """Check that ``path`` may be written, before any work is done.

    Parameters
    ----------
    path : str or PathLike
        The destination file.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        ``path`` as a Path.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    IsADirectoryError
        ``path`` is an existing folder (never replaced, whatever ``overwrite``).
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target}: is a folder; give a file name to write to")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"{target}: already exists; pass overwrite=True to replace it "
            "(or choose another name)"
        )
    return target


def _full_suffix(name: str) -> str:
    """Return the suffix that decides the format, e.g. ``.nii.gz`` or ``.png``."""
    path = Path(name)
    suffix = path.suffix
    if suffix.lower() in _COMPRESSION_SUFFIXES:
        suffix = Path(path.stem).suffix + suffix
    return suffix


def _default_file_mode() -> int:
    """Return 0o666 masked by the process umask (read without changing it)."""
    umask = 0o022
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
                break
    return 0o666 & ~umask


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished temporary file ``tmp`` to ``target``."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic, and fails if target appeared meanwhile
    except FileExistsError:
        raise FileExistsError(
            f"{target}: already exists; pass overwrite=True to replace it"
        ) from None
    except OSError:  # file system without hard links: check, then rename
        check_writable(target, overwrite=False)
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on success.

    The temporary file exists (empty) when the block starts and keeps the
    destination's format suffix (``.png``, ``.nii.gz``), so libraries that
    choose the format from the file name write the right one. Missing parent
    folders are created. If the block raises, the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or PathLike
        Final destination.
    overwrite : bool, default False
        Replace ``path`` if it exists; otherwise raise FileExistsError (checked
        before the block runs and again, atomically, at the end).

    Yields
    ------
    pathlib.Path
        The temporary file to write to.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> with atomic_path("out/mask.png") as tmp:  # doctest: +SKIP
    ...     PIL.Image.fromarray(labels).save(tmp)
    """
    target = check_writable(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o7777 if target.is_file() else _default_file_mode()
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{_full_suffix(target.name)}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        _commit(tmp, target, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(
    path: str | PathLike[str], data: bytes, *, overwrite: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination file; parent folders are created.
    data : bytes
        The content.
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def sha256_file(path: str | PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Return the SHA-256 hex digest of a file, read in chunks.

    Parameters
    ----------
    path : str or PathLike
        The file to hash.
    chunk_size : int, default 1 MiB
        Bytes read at a time.

    Returns
    -------
    str
        64 lowercase hex characters.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
