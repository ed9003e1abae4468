"""A command's output files: claimed before the work, written as one set after it.

Claiming checks every path up front (not a directory, its folder writable, not one of the
command's inputs, not already there unless forced, a name the file system accepts) and locks
the set, so a mistake costs no search and a second run to the same files stops at once
instead of silently replacing the first one's result. Writing stages each file as a temporary
in its own folder and renames them into place only once all are complete; on any failure
(disk full, Ctrl-C, an exception) the temporaries go, files that were there are put back, and
nothing half-written is left.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from svtprune.errors import UserError

TEMP_PREFIX = ".svtprune-"  # short and fixed: a long (valid) output name must not make its temporary too long
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)

State = tuple[int, int, int] | None  # (inode, mtime ns, size) of a path, None when absent


def state_of(path: Path) -> State:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def existing_folder(path: Path) -> Path:
    """The nearest folder above ``path`` that exists (where its missing folders would be made)."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    return folder


def same_file(a: Path, b: Path) -> bool:
    if a.absolute().resolve() == b.absolute().resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class OutputSet:
    """The files one run writes; use as a context manager (the lock is released on leaving it)."""

    def __init__(self, paths: Iterable[str | Path], inputs: Iterable[str | Path | None] = (), force: bool = False):
        self.paths = tuple(Path(p) for p in paths)
        self.inputs = tuple(Path(p) for p in inputs if p is not None)
        self.force = force
        self.seen: dict[Path, State] = {}
        self.lock_path: Path | None = None
        self.lock_fd: int | None = None

    @classmethod
    def claim(
        cls, paths: Iterable[str | Path], inputs: Iterable[str | Path | None] = (), force: bool = False
    ) -> OutputSet:
        outputs = cls(paths, inputs, force)
        outputs.check()
        outputs.lock()
        return outputs

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def check(self) -> None:
        """Every reason the set could not be written, found before any work (the first one raised)."""
        named = [p.absolute().resolve() for p in self.paths]
        for path, resolved in zip(self.paths, named, strict=True):
            if named.count(resolved) > 1:
                raise UserError(f"{path} is named for two of this command's outputs; give each its own file")
            self.check_path(path)
            self.seen[path] = state_of(path)

    def check_path(self, path: Path) -> None:
        folder = existing_folder(path)
        if not folder.is_dir():
            raise UserError(f"cannot write {path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"cannot write {path}: {folder} is not writable (read-only, or no permission)")
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        if len(path.name.encode()) > name_max:
            size = len(path.name.encode())
            raise UserError(f"cannot write {path}: its name is {size} bytes, the file system allows {name_max}")
        if path.is_dir():
            raise UserError(f"{path} is a folder; name the file to write")
        for source in self.inputs:
            if same_file(path, source):
                raise UserError(f"{path} is an input of this command; write the result to another file")
        if path.exists() and not self.force:
            raise UserError(f"is not set and {path} already exists", option="force")

    def lock(self) -> None:
        """An exclusive lock for the set, named after its first file, in the folder that holds it."""
        first = self.paths[0].absolute().resolve()
        digest = hashlib.sha1(str(first).encode()).hexdigest()[:16]
        self.lock_path = existing_folder(first) / f"{TEMP_PREFIX}{digest}.lock"
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            self.lock_path = None
            raise UserError(
                f"another svtprune run (pid {holder}) is writing {self.paths[0]}; wait for it or write elsewhere"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.lock_fd = fd

    def release(self) -> None:
        if self.lock_fd is None:
            return
        if self.lock_path is not None:
            self.lock_path.unlink(missing_ok=True)
        os.close(self.lock_fd)  # closing drops the lock
        self.lock_fd, self.lock_path = None, None

    def write(self, contents: Mapping[Path, bytes | str]) -> None:
        """All of ``contents`` into place, or none of it (existing files unchanged)."""
        unknown = set(contents) - set(self.paths)
        if unknown:
            raise ValueError(f"not claimed: {sorted(map(str, unknown))}")
        for path in contents:
            if state_of(path) != self.seen.get(path):
                raise UserError(f"{path} changed while this run worked (another run?); nothing was written")
        staged: dict[Path, str] = {}
        try:
            for path, content in contents.items():
                staged[path] = stage(path, content.encode() if isinstance(content, str) else content)
            swap_in(staged)
        except OSError as exc:
            reason = "no space left on the device" if exc.errno in NO_SPACE else exc.strerror or str(exc)
            raise UserError(f"cannot write {exc.filename or 'the outputs'}: {reason}; nothing was written") from exc
        finally:
            for temporary in staged.values():
                if os.path.exists(temporary):
                    os.unlink(temporary)
        self.seen.update({path: state_of(path) for path in contents})


def stage(path: Path, content: bytes) -> str:
    """``content`` in a complete temporary file beside ``path`` (flushed to disk), with the usual permissions."""
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.absolute().parent, prefix=TEMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600 files
    except BaseException as exc:
        os.unlink(temporary)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise
    return temporary


def swap_in(staged: Mapping[Path, str]) -> None:
    """Rename every temporary into place; if one rename fails, undo the others (old files come back)."""
    done: list[tuple[Path, str | None]] = []
    try:
        for path, temporary in staged.items():
            backup = None
            if path.exists():
                handle, backup = tempfile.mkstemp(dir=path.absolute().parent, prefix=TEMP_PREFIX, suffix=".old")
                os.close(handle)
                os.replace(path, backup)
            done.append((path, backup))
            os.replace(temporary, path)
    except BaseException:
        for path, backup in reversed(done):
            if backup is not None:
                os.replace(backup, path)
            elif path.exists():
                path.unlink()
        raise
    for _path, backup in done:
        if backup is not None:
            os.unlink(backup)
