"""The project's one cache directory, and safe ways to write into it.

Everything the model layer creates on disk lives under :func:`cache_dir`:

```
<cache_dir>/
    converted/<name>/     offline assets converted once (GGUF → safetensors, renamed state dicts)
    tiny/<name>/          tiny real models built from configs (tests, smoke runs)
    checkpoints/<name>/   checkpoints the project trains itself (verifiers, small CLIP models, …)
    locks/                file locks guarding the writers above
```

The default is ``~/.cache/iterative-consensus``; set ``ENSEMBLE_CACHE`` to move it (tests point it at a
temporary directory). Writers build into a temporary sibling directory and rename it into place under a
file lock, so two processes preparing the same entry never see or leave a half-written directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

CACHE_ENV = "ENSEMBLE_CACHE"
"""Environment variable that overrides the cache location."""

DEFAULT_CACHE = Path("~/.cache/iterative-consensus")
"""Cache location when ``ENSEMBLE_CACHE`` is unset."""

COMPLETE_MARKER = ".complete"
"""File written last into a prepared directory; a directory without it is ignored."""


def cache_dir() -> Path:
    """The cache directory (created if missing).

    Returns:
        ``$ENSEMBLE_CACHE`` if set, else ``~/.cache/iterative-consensus``, as an absolute path.
    """
    raw = os.environ.get(CACHE_ENV) or str(DEFAULT_CACHE)
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir() -> Path:
    """Where project-trained checkpoints live: ``<cache_dir>/checkpoints`` (not created)."""
    return cache_dir() / "checkpoints"


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a directory finished by :func:`prepare_dir`."""
    return (path / COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def file_lock(name: str, timeout: float = 600.0) -> Iterator[None]:
    """Hold an inter-process lock named ``name`` (a file under ``<cache_dir>/locks``).

    Args:
        name: lock name; slashes are replaced so any model name is usable.
        timeout: seconds to wait for another process before raising ``TimeoutError``.
    """
    from filelock import FileLock, Timeout

    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / (name.replace("/", "__") + ".lock")))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as err:
        raise TimeoutError(
            f"waited {timeout:.0f} s for the lock {lock.lock_file!r}; another process is preparing {name!r}. "
            "If no such process is running, delete the lock file."
        ) from err
    try:
        yield
    finally:
        lock.release()


def prepare_dir(
    target: Path, build: Callable[[Path], None], lock_name: str | None = None, replace: bool = False
) -> Path:
    """Create ``target`` once, atomically, by calling ``build(tmp_dir)``.

    If ``target`` is already complete it is returned at once. Otherwise, under a file lock, ``build``
    writes into a fresh temporary directory next to ``target``, a completion marker is added, and the
    directory is renamed onto ``target``. A crash leaves only a stray temporary directory behind.

    Args:
        target: the directory to produce.
        build: writes the directory's content into the path it is given.
        lock_name: lock to hold while building (default: derived from ``target``).
        replace: build even if ``target`` is complete, and swap the new directory in.

    Returns:
        ``target``.
    """
    if is_complete(target) and not replace:
        return target
    with file_lock(lock_name or f"{target.parent.name}/{target.name}"):
        if is_complete(target) and not replace:  # another process finished while we waited
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared with workers
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text("ok\n")
            if target.exists():  # being replaced, or an incomplete leftover from a crashed run
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
