"""Writing files so that a killed run leaves either the old file or the new one, never half of one;
and what reading a damaged saved file raises."""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from pathlib import Path

# What loading a damaged or foreign saved file can raise (a copy cut short, junk bytes, another kind of
# pickle): the loaders of user-given files report each in one line naming the file, not a traceback.
UNREADABLE = (
    RuntimeError,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    pickle.UnpicklingError,
    struct.error,
)


def why_unreadable(err: BaseException) -> str:
    """``Type: first line of the message``, for a one-line error."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class NotAFileError(OSError):
    """An output path that names something other than a file."""


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    ``path`` must be a regular file or not exist: the rename would replace a device such as
    /dev/null, a pipe or an empty folder with a plain file (``NotAFileError``)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise NotAFileError(f"{path}: not a regular file (a folder, device or pipe); give a file path")
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; the file gets what open() would give it
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """An existing file's own mode, else the one ``open()`` would create it with (0666 less the umask)."""
    if path.is_file():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)  # read by setting; put back at once
    os.umask(umask)
    return 0o666 & ~umask


def append_synced(path: str | Path, text: str) -> None:
    """Append ``text`` and fsync, so rows a run reported written survive a crash."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
