"""A large entry encoded without holding the GIL while its large values are copied.

``msgpack.packb`` copies every value into its buffer, then the buffer into
the bytes it returns, holding the GIL throughout: for a transaction of
128 MiB that was ~0.9 s in which no other thread of the leader ran (reads
of other clients answered 1-2 s late; see bench/RESULTS.md, thirty-second
session). :func:`pack_in_parts` gives the same bytes: the entry's structure
and small values packed by msgpack, its large strings and bytes put in
place by one ``bytes.join``, which copies with the GIL released.
"""

import struct

import msgpack

#: Values at least this long are copied by the final join rather than by msgpack
#: (2 ** 16: from there on msgpack's header gives the length in 32 bits).
LARGE_VALUE = 2 ** 16

_BIN_32 = b"\xc6"  # msgpack's headers for the lengths LARGE_VALUE and over take (bin 32, str 32)
_STR_32 = b"\xdb"
_LENGTH_32 = struct.Struct(">I")


def pack_in_parts(value):
    """``msgpack.packb(value, use_bin_type=True)``, with values of LARGE_VALUE bytes or more copied once, GIL-free."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = []
    _add(parts, value, packer)
    return b"".join(parts)


def _add(parts, value, packer):
    if isinstance(value, dict):
        parts.append(packer.pack_map_header(len(value)))
        for key, item in value.items():
            _add(parts, key, packer)
            _add(parts, item, packer)
    elif isinstance(value, (list, tuple)):
        parts.append(packer.pack_array_header(len(value)))
        for item in value:
            _add(parts, item, packer)
    elif isinstance(value, (bytes, bytearray, memoryview)) and _length(value) >= LARGE_VALUE:
        parts.append(_BIN_32 + _LENGTH_32.pack(_length(value)))
        parts.append(value)
    elif isinstance(value, str) and len(value) >= LARGE_VALUE:
        data = value.encode("utf-8")  # (as msgpack encodes text, lone surrogates refused alike)
        parts.append(_STR_32 + _LENGTH_32.pack(len(data)))
        parts.append(data)
    else:
        parts.append(packer.pack(value))


def _length(value):
    return value.nbytes if isinstance(value, memoryview) else len(value)
