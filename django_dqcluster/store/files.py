"""Small file-system steps the store's durable writes share."""

import os


def flush_directory(path):
    """Make the directory entry of ``path`` durable (after creating, renaming or removing it)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_if_present(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_durably(path, data):
    """Replace ``path`` with ``data`` (bytes or text), on disk before this returns (file and directory entry)."""
    with open(path + ".tmp", "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)
    flush_directory(path)
