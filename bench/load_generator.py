"""A load generator in its own process: raw HTTP/1.1 over keep-alive connections, with asyncio.

Usage: ``python load_generator.py PORT PATH MAILS_FILE``. MAILS_FILE holds, as JSON, one list
per connection of hex-encoded request bodies and the connection's correlation id. Every
connection sends its bodies one after another (the next when the previous answer came), sending
back the ``Mail-ID`` of each answer as ``Acknowledge-Mail-ID``, as the clients do. Prints JSON:
``{"seconds": wall time of the whole load, "latencies": [...], "errors": n}``.

It parses only what it needs (status line, Content-Length, Mail-ID): the same work for every
server it drives, so the ratio between two servers is the servers'.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _connection(
    port: int, path: str, bodies: list[bytes], correlation_id: str, latencies: list[float]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    acknowledge: str | None = None
    try:
        for body in bodies:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream"
                f"\r\nContent-Length: {len(body)}\r\nCorrelation-ID: {correlation_id}\r\n"
            )
            if acknowledge is not None:
                head += f"Acknowledge-Mail-ID: {acknowledge}\r\n"
            started = time.perf_counter()
            writer.write(head.encode() + b"\r\n" + body)
            await writer.drain()
            status_line = await reader.readline()
            length, acknowledge_next = 0, None
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "transfer-encoding":
                    raise RuntimeError("chunked answers are not expected: send Content-Length")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "mail-id":
                    acknowledge_next = value.strip()
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors += 1
            acknowledge = acknowledge_next
    finally:
        writer.close()
    return errors


async def _main(port: int, path: str, connections: list[tuple[list[bytes], str]]) -> None:
    latencies: list[float] = []
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(_connection(port, path, bodies, cid, latencies) for bodies, cid in connections)
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "latencies": latencies, "errors": sum(errors)}))


if __name__ == "__main__":
    with open(sys.argv[3]) as file:
        loaded = json.load(file)
    plan = [([bytes.fromhex(body) for body in bodies], cid) for bodies, cid in loaded]
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2], plan))
