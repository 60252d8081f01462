"""A tiny canonical binary codec: big-endian integers and length-prefixed fields.

Sans-IO: :class:`Writer` builds bytes, :class:`Reader` parses them strictly, with a bound on
every length, and raises one caller-chosen error type for any malformed input, so parsers of
untrusted bytes never leak ``struct.error`` or ``IndexError``.
"""

from __future__ import annotations

import struct

from sanctorum.common.errors import SanctorumError

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Appends canonical fields to a buffer."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def u8(self, value: int) -> Writer:
        self._parts.append(_U8.pack(value))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def bytes16(self, data: bytes) -> Writer:
        """Bytes with a 16-bit length prefix."""
        self.u16(len(data))
        self._parts.append(bytes(data))
        return self

    def bytes32(self, data: bytes) -> Writer:
        """Bytes with a 32-bit length prefix."""
        self.u32(len(data))
        self._parts.append(bytes(data))
        return self

    def text16(self, text: str) -> Writer:
        """UTF-8 text with a 16-bit length prefix."""
        return self.bytes16(text.encode("utf-8"))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads canonical fields; any malformed input raises ``error`` with a message."""

    __slots__ = ("_data", "_error", "_offset", "_what")

    def __init__(self, data: bytes, *, error: type[SanctorumError], what: str) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self._error = error
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def fail(self, problem: str) -> SanctorumError:
        """The error to raise for ``problem``, naming what is being parsed."""
        return self._error(f"malformed {self._what}: {problem}")

    def raw(self, size: int, field: str) -> bytes:
        if size > self.remaining:
            raise self.fail(f"truncated in {field} (needs {size} bytes, {self.remaining} left)")
        start = self._offset
        self._offset += size
        return bytes(self._data[start : self._offset])

    def u8(self, field: str) -> int:
        return int(_U8.unpack(self.raw(1, field))[0])

    def u16(self, field: str) -> int:
        return int(_U16.unpack(self.raw(2, field))[0])

    def u32(self, field: str) -> int:
        return int(_U32.unpack(self.raw(4, field))[0])

    def u64(self, field: str) -> int:
        return int(_U64.unpack(self.raw(8, field))[0])

    def bytes16(self, field: str, max_size: int = 0xFFFF) -> bytes:
        size = self.u16(field)
        if size > max_size:
            raise self.fail(f"{field} is {size} bytes, more than the limit of {max_size}")
        return self.raw(size, field)

    def bytes32(self, field: str, max_size: int) -> bytes:
        size = self.u32(field)
        if size > max_size:
            raise self.fail(f"{field} is {size} bytes, more than the limit of {max_size}")
        return self.raw(size, field)

    def text16(self, field: str, max_size: int = 0xFFFF) -> str:
        raw = self.bytes16(field, max_size)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{field} is not valid UTF-8") from None

    def expect_end(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} unexpected bytes after the end")
