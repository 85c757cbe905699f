"""Read what a ROS 1 bag cut short still holds (its index at the end of the file is lost).

``rosbag record`` writes the connection and chunk index last; a bag whose recorder was killed, or a copy
that stopped early, has none, and indexed readers (``rosbags``, ``rosbag`` itself) refuse it until
``rosbag reindex`` rebuilt it. The chunks before the cut are intact, though: ``SalvagedRosbag1`` walks
the file's records from the start (bag format 2.0: ``header_len, header fields, data_len, data``),
opening each chunk (uncompressed, bz2 or lz4; a cut chunk is read up to its last complete record) and
collecting connection and message records until the data ends. Messages come out in file order (the
order the recorder wrote them).

The object mimics the part of ``rosbags.highlevel.AnyReader`` that ``bag_reader.BagReader`` uses
(``connections``, ``messages``, ``start_time``, ``end_time``, ``close``) plus ``typestore`` built from the
message definitions the bag carries, ``stopped_reason``, ``messages_read`` and ``repair_hint``.
"""
from __future__ import annotations

import bz2
import logging
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

LOG = logging.getLogger(__name__)

MAGIC = b"#ROSBAG V2.0\n"
OP_MESSAGE, OP_BAG_HEADER, OP_INDEX, OP_CHUNK, OP_CHUNK_INFO, OP_CONNECTION = 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
# A record header or chunk larger than this is damage, not data.
MAX_HEADER_BYTES = 1 << 20


class _Truncated(Exception):
    """The bytes end inside a record."""


@dataclass
class SalvagedConnection:
    """A connection record found before the cut (the fields ``BagReader`` reads)."""

    id: int
    topic: str
    msgtype: str
    msgcount: int
    msgdef: str


def _fields(blob: bytes) -> dict[str, bytes]:
    """``name=value`` fields of a record header."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ValueError("record header field length cut")
        (size,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        field = blob[pos:pos + size]
        if len(field) != size or b"=" not in field:
            raise ValueError("malformed record header field")
        name, _, value = field.partition(b"=")
        out[name.decode("ascii", "replace")] = value
        pos += size
    return out


def _records(data, start: int = 0) -> Iterator[tuple[dict[str, bytes], bytes, bool]]:
    """``(header fields, data, complete)`` of each record in ``data`` (bytes or mmap) from ``start``.

    The last record may be cut: it is yielded with the part of its data that exists and ``complete``
    False, then ``_Truncated`` is raised; so is a cut inside a record's header.
    """
    pos = start
    while pos < len(data):
        if pos + 4 > len(data):
            raise _Truncated()
        (header_len,) = struct.unpack_from("<I", data, pos)
        if header_len > MAX_HEADER_BYTES:
            raise ValueError(f"record header of {header_len} bytes at offset {pos}")
        if pos + 4 + header_len + 4 > len(data):
            raise _Truncated()
        header = _fields(data[pos + 4:pos + 4 + header_len])
        (data_len,) = struct.unpack_from("<I", data, pos + 4 + header_len)
        body_start = pos + 8 + header_len
        body = data[body_start:body_start + data_len]
        pos = body_start + data_len
        yield header, body, len(body) == data_len
        if len(body) != data_len:
            raise _Truncated()


def _connection_type(fields: dict[str, bytes]) -> tuple[str, str]:
    from rosbags.typesys.msg import normalize_msgtype

    return normalize_msgtype(fields["type"].decode()), fields.get("message_definition", b"").decode("utf-8", "replace")


class SalvagedRosbag1:
    """The readable prefix of a ROS 1 bag without an index.

    Args:
        path: the ``.bag`` file.

    Raises:
        ValueError: not a ROS 1 bag 2.0, or no connection record before the cut.
    """

    def __init__(self, path: Path) -> None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        self.path = Path(path)
        self.files = [self.path]
        self.repair_hint = f"rebuild its index with `rosbag reindex {self.path}` (ROS 1)"
        self.connections: list[SalvagedConnection] = []
        self._by_id: dict[int, SalvagedConnection] = {}
        self.stopped_reason: str | None = None
        self.messages_read = 0
        self.start_time = self.end_time = 0
        with open(self.path, "rb") as handle:
            if handle.read(len(MAGIC)) != MAGIC:
                raise ValueError(f"{self.path} is not a ROS 1 bag (format 2.0)")
            # Mapped, not read: a cut bag can be gigabytes; pages are loaded as the records are walked.
            self._blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        times = []
        for conn, t_ns, _ in self._scan(count=True):
            times.append(t_ns)
        if not self.connections:
            raise ValueError(f"no connection record before the cut ({self.stopped_reason})")
        self.messages_read = len(times)
        if times:
            self.start_time, self.end_time = min(times), max(times) + 1
        self.typestore = get_typestore(Stores.EMPTY)
        for conn in self.connections:
            if conn.msgtype not in self.typestore.fielddefs:
                try:
                    self.typestore.register(get_types_from_msg(conn.msgdef, conn.msgtype))
                except Exception as exc:  # an unparsable definition only matters if its topic is read
                    LOG.warning("bag %s: cannot register type %s: %s", self.path, conn.msgtype, exc)

    def deserialize(self, raw: bytes, msgtype: str):
        return self.typestore.deserialize_ros1(raw, msgtype)

    def _add_connection(self, fields: dict[str, bytes], body: bytes, count: bool) -> None:
        conn_id = struct.unpack("<I", fields["conn"])[0]
        if conn_id in self._by_id or not count:
            return
        msgtype, msgdef = _connection_type(_fields(body))
        conn = SalvagedConnection(conn_id, fields["topic"].decode(), msgtype, 0, msgdef)
        self._by_id[conn_id] = conn
        self.connections.append(conn)

    def _messages_in(self, data: bytes, count: bool) -> Iterator[tuple[SalvagedConnection, int, bytes]]:
        """Connection and message records of one chunk's (possibly cut) uncompressed data."""
        try:
            for fields, body, complete in _records(data):
                if not complete:
                    return
                op = fields.get("op", b"\0")[0]
                if op == OP_CONNECTION:
                    self._add_connection(fields, body, count)
                elif op == OP_MESSAGE:
                    conn = self._by_id.get(struct.unpack("<I", fields["conn"])[0])
                    sec, nsec = struct.unpack("<II", fields["time"])
                    if conn is not None:
                        yield conn, sec * 1_000_000_000 + nsec, body
        except _Truncated:
            return

    def _scan(self, *, count: bool) -> Iterator[tuple[SalvagedConnection, int, bytes]]:
        reason = None
        try:
            for fields, body, complete in _records(self._blob, len(MAGIC)):
                op = fields.get("op", b"\0")[0]
                if not complete and op != OP_CHUNK:
                    raise _Truncated()  # only a cut chunk still holds complete records
                if op == OP_CONNECTION:
                    self._add_connection(fields, body, count)
                elif op == OP_CHUNK:
                    compression = fields.get("compression", b"none").decode()
                    if compression == "none":
                        data = body
                    elif compression == "bz2":
                        # Decompresses what the (possibly cut) stream holds in complete bz2 blocks.
                        data = bz2.BZ2Decompressor().decompress(body)
                    elif compression == "lz4":
                        import lz4.frame  # rosbags' own dependency for lz4 bags

                        data = lz4.frame.LZ4FrameDecompressor().decompress(body)
                    else:
                        reason = f"chunk compression {compression!r} cannot be salvaged here"
                        break
                    for item in self._messages_in(data, count):
                        if count:
                            item[0].msgcount += 1
                        yield item
                elif op in (OP_INDEX, OP_CHUNK_INFO, OP_BAG_HEADER):
                    continue
        except _Truncated:
            reason = f"{self.path.name} ends inside a record ({len(self._blob)} bytes; the index is lost)"
        except (ValueError, KeyError, struct.error, OSError, EOFError, RuntimeError, ImportError) as exc:
            reason = f"{self.path.name} is damaged after the readable part ({type(exc).__name__}: {exc})"
        else:
            reason = reason or f"{self.path.name} has no index (the recorder did not finish it)"
        if count:
            self.stopped_reason = reason

    def messages(self, connections: Sequence[SalvagedConnection] | None = None) -> Iterator[tuple[SalvagedConnection, int, bytes]]:
        """``(connection, log_time_ns, raw ROS 1 bytes)`` in file order, for ``connections`` (all when None)."""
        wanted = None if not connections else {c.id for c in connections}
        for conn, t_ns, body in self._scan(count=False):
            if wanted is None or conn.id in wanted:
                yield conn, t_ns, body

    def close(self) -> None:
        self._blob.close()
