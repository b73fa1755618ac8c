"""The file-system operations the schema engine and the backup hook need.

Injectable so that tests can make each step fail on purpose. Unlike the seed, whose
default file system was nil (so the backup path crashed unless ``WithFileSystem`` was
given), the default here is the real one.
"""

from __future__ import annotations

import os
import shutil
from typing import IO, Protocol


class FileSystem(Protocol):
    def exists(self, path: str) -> bool: ...

    def open(self, path: str) -> IO[bytes]: ...

    def remove(self, path: str) -> None: ...

    def copy_dir(self, source: str, destination: str) -> None: ...


class RealFileSystem:
    """``FileSystem`` on the local disk."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def open(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def remove(self, path: str) -> None:
        os.remove(path)

    def copy_dir(self, source: str, destination: str) -> None:
        """Copy the tree ``source`` to ``destination``, replacing an older copy.

        The backup is of the state just before an update; a stale ``global.bak`` from a
        previous upgrade must not be merged with it.
        """
        if os.path.exists(destination):
            shutil.rmtree(destination)
        shutil.copytree(source, destination)
