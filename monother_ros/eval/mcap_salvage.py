"""Read what a crash-truncated mcap file still holds (its footer and summary are lost).

A recorder killed mid-write (power loss, OOM, ``kill -9``) leaves an mcap without its summary section,
footer and end magic; ``rosbags`` then refuses the file ("File end magic is invalid"). The chunks before
the cut are intact, though: ``SalvagedMcap`` streams the file's records from the start with the ``mcap``
package's ``StreamReader`` (schemas, channels and messages, chunk CRCs checked) and stops at the first
record that is cut or damaged. Messages come out in file order (the order the recorder wrote them, which
is log-time order for ``ros2 bag record`` and the simulator).

The salvaged messages are read-only use; to repair the file itself run ``mcap recover FILE -o FIXED``
(the mcap CLI) - every message read here is recovered by it too.

The object mimics the part of ``rosbags.rosbag2.Reader`` that ``bag_reader.BagReader`` uses:
``connections`` (topic, msgtype, msgcount, msgdef), ``messages(connections=...)``, ``start_time``,
``end_time``, ``close``; ``stopped_reason`` says where and why the data ended, ``repair_hint`` how to
repair the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

LOG = logging.getLogger(__name__)

RECOVER_HINT = "repair the file with the mcap CLI: `mcap recover {path} -o {fixed}`"


@dataclass
class SalvagedConnection:
    """A channel found in the readable part of the file (the fields ``BagReader`` reads)."""

    id: int
    topic: str
    msgtype: str
    msgcount: int
    msgdef: str
    encoding: str


def recover_hint(path: Path) -> str:
    """The command that repairs ``path`` into a sibling ``<stem>.recovered.mcap``."""
    return RECOVER_HINT.format(path=path, fixed=path.with_name(path.stem + ".recovered.mcap"))


class SalvagedMcap:
    """The readable prefix of one or more mcap files (a split bag is read file after file).

    Opening scans the files once (counting messages per channel, finding the cut); ``messages`` scans
    them again and stops at the same place.

    Args:
        files: mcap files in recording order.

    Raises:
        ValueError: no file has a single readable message channel (not an mcap, or cut inside its header).
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = [Path(f) for f in files]
        self.connections: list[SalvagedConnection] = []
        self._by_key: dict[tuple[int, int], SalvagedConnection] = {}
        self.start_time = 0
        self.end_time = 0
        self.stopped_reason: str | None = None
        self.messages_read = 0
        self.repair_hint = recover_hint(self.files[-1])
        first = last = None
        for _conn, log_time, _data in self._scan(count=True):
            first = log_time if first is None else min(first, log_time)
            last = log_time if last is None else max(last, log_time)
            self.messages_read += 1
        if not self.connections:
            raise ValueError(f"no readable channel in {', '.join(map(str, self.files))}: {self.stopped_reason}")
        self.start_time = int(first or 0)
        self.end_time = int(last or 0) + 1  # rosbags convention: end is exclusive

    def _scan(self, *, count: bool) -> Iterator[tuple[SalvagedConnection, int, bytes]]:
        from mcap.records import Channel, Footer, Message, Schema
        from mcap.stream_reader import StreamReader

        reason = None
        for index, path in enumerate(self.files):
            schemas: dict[int, Schema] = {}
            size = path.stat().st_size
            footer_seen = False
            with open(path, "rb") as stream:
                # The record length limit keeps a damaged length field from asking for gigabytes.
                reader = StreamReader(stream, validate_crcs=True, record_size_limit=max(size, 1))
                try:
                    for record in reader.records:
                        if isinstance(record, Schema):
                            schemas[record.id] = record
                        elif isinstance(record, Channel):
                            key = (index, record.id)
                            if key not in self._by_key and count:
                                schema = schemas.get(record.schema_id)
                                msgdef = schema.data.decode("utf-8", "replace") if schema is not None else ""
                                conn = SalvagedConnection(len(self.connections), record.topic,
                                                          schema.name if schema is not None else "", 0, msgdef,
                                                          schema.encoding if schema is not None else "")
                                self._by_key[key] = conn
                                self.connections.append(conn)
                        elif isinstance(record, Message):
                            conn = self._by_key.get((index, record.channel_id))
                            if conn is None:
                                continue  # a message of an unknown channel: the damage started earlier
                            if count:
                                conn.msgcount += 1
                            yield conn, int(record.log_time), record.data
                        elif isinstance(record, Footer):
                            footer_seen = True
                            break
                except Exception as exc:  # EndOfFile, CRC errors, garbage lengths: the data ends here
                    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    reason = f"{path.name} ends in a cut or damaged record at byte ~{stream.tell()} of {size} ({detail})"
                    break
                else:
                    if not footer_seen:  # a clean end of the stream, but no footer
                        reason = f"{path.name} has no footer (the recorder did not finish it)"
                        break
        if count:
            self.stopped_reason = reason

    def messages(self, connections: Sequence[SalvagedConnection] | None = None) -> Iterator[tuple[SalvagedConnection, int, bytes]]:
        """``(connection, log_time_ns, raw CDR bytes)`` in file order, for ``connections`` (all when None)."""
        wanted = None if not connections else {c.id for c in connections}
        for conn, log_time, data in self._scan(count=False):
            if wanted is None or conn.id in wanted:
                yield conn, log_time, data

    def close(self) -> None:
        """Nothing to release: every scan opens and closes its files."""
