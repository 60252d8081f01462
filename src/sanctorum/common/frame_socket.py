"""The socket edge of the framed protocol, shared by the host and the enclave process.

The codec (:mod:`sanctorum.common.frames`) stays sans-IO; this is the little I/O both ends do
the same way.
"""

from __future__ import annotations

import socket

from sanctorum.common.frames import Frame, frame_header

RECEIVE_SIZE = 256 << 10
"""Bytes read at most per ``recv_into``, into one buffer allocated once per connection (a
fresh ``recv(1 << 20)`` buffer costs an mmap and munmap per call; a frame larger than this is
read in several pieces, the decoder joining them)."""

_JOIN_LIMIT = 8 << 10
"""Payloads below this are joined to their header and sent in one ``sendall``; larger ones go
out with ``sendmsg`` from where they are (joining would copy them)."""


def send_frame(connection: socket.socket, frame: Frame) -> None:
    """Send ``frame`` whole; a large payload is not copied to join it to its header."""
    payload = frame.payload
    if len(payload) < _JOIN_LIMIT:
        connection.sendall(frame_header(frame) + payload)
        return
    header = frame_header(frame)
    sent = connection.sendmsg((header, payload))
    if sent < len(header):  # a partial send (a timeout, a signal): rare, finish it plainly
        connection.sendall(header[sent:])
        sent = len(header)
    if sent < len(header) + len(payload):
        with memoryview(payload) as view:
            connection.sendall(view[sent - len(header) :])
