"""The public listing as a sorted, block-indexed file: answered by reading a few KB, never loaded.

A warm `audit` asks about 10,000 names of a listing of 800,000 projects; parsing the
whole cached listing (tens of MB) for that cost more than every other step together.
So the cache file *is* the index, built once per download:

    <header JSON>\\n
    <first line of block 0>\\n<first line of block 1>\\n ...        (the block index)
    <offset of block 0>,<offset of block 1>, ...,<end>\\n          (relative to the lines)
    <ultranormalised key>\\t<canonical name>\\t<serial>\\n ...        (sorted; the lines)

The header records the sections' CRC32 (``crc32``), checked whenever the file is opened:
a damaged byte anywhere (a line's tab, a digit of an offset) makes the file unreadable
rather than a wrong answer.  zlib's CRC reads the 30 MB of an 800,000-project listing in
about 10 ms, the one cost of opening it that grows with its size.

The lines are sorted (``\\t`` sorts before every character of a name, so all the
projects of one ultranormalised key are adjacent) and cut into blocks of
`BLOCK_LINES`.  A question is a binary search over the block index (in memory, a
few thousand entries) and then over one block of a memory-mapped file.  Every
byte is ASCII (project names are; see `listing._VALID_NAME`).
"""

from __future__ import annotations

import bisect
import json
import mmap
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

#: Lines per block: a question reads one block (~2 KB) after a search of the block index.
BLOCK_LINES = 64
_CANONICAL = re.compile(r"\t([^\t\n]*)\t")


class PackedLines:
    """Sorted ``key\\tname\\tserial`` lines in one buffer (bytes, or a read-only mmap)."""

    def __init__(self, data: bytes | mmap.mmap, base: int, firsts: list[bytes],
                 offsets: list[int], count: int) -> None:
        self._data = data
        self._base = base  # where the lines begin in ``data``
        self._firsts = firsts  # the first line of each block
        self._offsets = offsets  # block i is lines[offsets[i]:offsets[i + 1]]; one more than blocks
        self.count = count

    @classmethod
    def pack(cls, lines: Sequence[str]) -> PackedLines:
        """Sorted ``lines`` (ASCII) packed in memory, as `write` writes them."""
        blocks = ["\n".join(lines[i:i + BLOCK_LINES]) + "\n"
                  for i in range(0, len(lines), BLOCK_LINES)]
        offsets = [0]
        for block in blocks:
            offsets.append(offsets[-1] + len(block))
        data = "".join(blocks).encode("ascii")
        firsts = [line.encode("ascii") for line in lines[::BLOCK_LINES]]
        return cls(data, 0, firsts, offsets, len(lines))

    def write(self, out: IO[bytes], header: dict[str, Any]) -> None:
        """The file: ``header`` (one JSON line, with the section sizes added), index, lines."""
        index = b"".join(first + b"\n" for first in self._firsts)
        offsets = ",".join(map(str, self._offsets)).encode("ascii") + b"\n"
        lines = self._data[self._base:self._base + self._offsets[-1]]
        crc = zlib.crc32(lines, zlib.crc32(offsets, zlib.crc32(index)))
        head = {**header, "blocks": len(self._firsts), "index_bytes": len(index),
                "offsets_bytes": len(offsets), "count": self.count, "crc32": crc}
        out.write(json.dumps(head).encode("ascii") + b"\n")
        out.write(index)
        out.write(offsets)
        out.write(lines)

    @classmethod
    def open(cls, path: Path) -> tuple[dict[str, Any], PackedLines] | None:
        """(header, lines) of the file ``path``; None when it is missing, damaged or truncated."""
        try:
            with path.open("rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
            return None
        try:
            parsed = cls._parse(data)
        except (ValueError, KeyError, TypeError):
            parsed = None
        if parsed is None:
            data.close()
        return parsed

    @classmethod
    def _parse(cls, data: mmap.mmap) -> tuple[dict[str, Any], PackedLines] | None:
        end = data.find(b"\n")
        if end < 0:
            return None
        header = json.loads(data[:end])
        if not isinstance(header, dict):
            return None
        index_at = end + 1
        offsets_at = index_at + int(header["index_bytes"])
        base = offsets_at + int(header["offsets_bytes"])
        firsts = data[index_at:offsets_at].split(b"\n")[:-1]
        offsets = [int(o) for o in data[offsets_at:base].split(b",")]
        blocks, count = int(header["blocks"]), int(header["count"])
        if (len(firsts) != blocks or len(offsets) != blocks + 1 or offsets[0] != 0
                or len(data) != base + offsets[-1] or (count == 0) != (blocks == 0)):
            return None  # truncated, or a crash between the writes of its parts
        if _crc32(data, index_at) != int(header["crc32"]):
            return None  # damaged: a changed byte could make a project seem absent
        return header, cls(data, base, firsts, offsets, count)

    def held(self, key: str) -> list[tuple[str, str]]:
        """(canonical name, serial) of every line whose ultranormalised key is ``key``."""
        prefix = key.encode("ascii", "replace") + b"\t"
        block = max(bisect.bisect_left(self._firsts, prefix) - 1, 0)
        found: list[tuple[str, str]] = []
        while block < len(self._firsts):
            lines = self._block(block)
            i = bisect.bisect_left(lines, prefix)
            while i < len(lines) and lines[i].startswith(prefix):
                _, name, serial = lines[i].decode("ascii").split("\t")
                found.append((name, serial))
                i += 1
            if i < len(lines):  # a line past the key: no later block holds it
                break
            block += 1  # the key's lines may go on in the next block
        return found

    def _block(self, block: int) -> list[bytes]:
        start = self._base + self._offsets[block]
        lines = self._data[start:self._base + self._offsets[block + 1]].split(b"\n")
        lines.pop()  # every line ends with "\n"
        return lines

    def canonical_names(self) -> Iterator[str]:
        """Every canonical name, in the order of their lines (one pass over the whole buffer)."""
        text = self._data[self._base:self._base + self._offsets[-1]].decode("ascii")
        return iter(_CANONICAL.findall(text))


def _crc32(data: mmap.mmap, start: int) -> int:
    """zlib's CRC32 of ``data[start:]``, read in place (a slice would copy 30 MB)."""
    with memoryview(data) as view, view[start:] as rest:
        return zlib.crc32(rest)
