"""The DNS wire format, sans-IO: just enough to filter and forward, fast.

The proxy never re-packs a message it forwards. It reads the header and the first
question of a query (bounds-checked), swaps the 16-bit ID on the way up and back, and
scans an answer for A/AAAA/CNAME records and the lowest TTL without building objects.
Replies the proxy writes itself (REFUSED, NXDOMAIN, SERVFAIL, FORMERR, NOTIMP) are a
header plus the client's own question bytes, so the ID and the letter case are kept.

Fully parsing a typical CDN answer with dnslib costs 120-200 us; this scan costs a few
microseconds. dnslib stays the reference: the tests compare this module with it on
generated and fuzzed packets.

Failure modes (dnspython's mapping, applied by the server):

* :class:`HeaderError` - not even a header: drop the datagram, say nothing.
* :class:`QuestionError` - a header but no usable first question: answer FORMERR.
* :class:`AnswerError` - an upstream reply that cannot be scanned: SERVFAIL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from acns_operator.errors import InputError, UpstreamError

HEADER_LEN = 12
MAX_NAME_WIRE_LEN = 255

# header flag bits
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
CD = 0x0010
RCODE_MASK = 0x000F

# rcodes
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5

RCODE_NAMES: dict[int, str] = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
}

# record types the proxy cares about
TYPE_A = 1
TYPE_CNAME = 5
TYPE_AAAA = 28
TYPE_OPT = 41

# Names used for the bounded ``qtypes`` metric label; anything else is "OTHER".
QTYPE_NAMES: dict[int, str] = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    43: "DS",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}

_HEADER = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_QFIXED = struct.Struct("!HH")  # qtype, qclass

# Bytes that may appear in a label unescaped in the text form. Cilium's matching
# character class is [-a-zA-Z0-9_]; other printable characters are kept as they are
# (they can never match a pattern), '.' and '\\' are escaped, the rest become \DDD
# like dnslib and miekg/dns do.
_PLAIN_BYTES = b"-_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PLAIN = frozenset(_PLAIN_BYTES)


class WireError(InputError):
    """The DNS message is malformed."""


class HeaderError(WireError):
    """The DNS message has no complete header."""


class QuestionError(WireError):
    """The DNS query has no usable first question."""


class AnswerError(WireError, UpstreamError):
    """The upstream DNS reply is malformed."""


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__, which
# costs about a microsecond per query on the hot path. Treat instances as read-only.
@dataclass(slots=True)
class Query:
    """The parts of a query the proxy needs; ``raw`` is the message as received."""

    raw: bytes
    id: int
    flags: int
    qname: str
    """Lower-case, dot-terminated text form of the first question name (Cilium's FQDN)."""
    qtype: int
    qclass: int
    question_end: int
    """Offset just past the first question: ``raw[12:question_end]`` is that question."""

    @property
    def question(self) -> bytes:
        """The first question exactly as the client sent it (letter case kept)."""
        return self.raw[HEADER_LEN : self.question_end]


@dataclass(slots=True)
class AnswerSummary:
    """What the proxy learns from an upstream reply without fully parsing it."""

    id: int
    flags: int
    rcode: int
    truncated: bool
    addresses: tuple[bytes, ...]
    """Raw 4- or 16-byte addresses of every A/AAAA record in the answer section."""
    cnames: tuple[str, ...]
    """CNAME targets in the answer section, text form (information only)."""
    min_ttl: int | None
    """Lowest TTL over the A, AAAA and CNAME records; None when there are none."""


def label_text(label: bytes) -> str:
    """Return the presentation form of one label, escaping like miekg/dns (Cilium)."""
    if not label.translate(None, _PLAIN_BYTES):
        return label.decode("ascii")
    out: list[str] = []
    for b in label:
        if b in _PLAIN:
            out.append(chr(b))
        elif b in (0x2E, 0x5C):  # '.' and '\\'
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def _read_question_name(data: bytes, offset: int) -> tuple[str, int]:
    """Read an uncompressed name at ``offset``; return (lower-case text, end offset).

    The first question of a query starts right after the header, so a compression
    pointer there could only point into the header: it is rejected.
    """
    labels, offset = _name_labels(data, offset, QuestionError, pointers=False)
    return _presentation(labels), offset


def _presentation(labels: list[bytes]) -> str:
    """The lower-case, dot-terminated presentation form of a name's labels."""
    if not labels:
        return "."
    joined = b".".join(labels)
    if not joined.translate(None, _PLAIN_BYTES + b".") and joined.count(b".") == len(labels) - 1:
        # the common case: only label characters (no dot inside a label), no escaping
        return joined.decode("ascii").lower() + "."
    return (".".join(label_text(label) for label in labels) + ".").lower()


def _name_labels(
    data: bytes,
    offset: int,
    error: type[QuestionError] | type[AnswerError],
    *,
    pointers: bool,
) -> tuple[list[bytes], int]:
    """Read the raw labels of the name at ``offset`` and the offset just after it.

    With ``pointers`` compression pointers are followed; they must point strictly
    backwards, which bounds the work by the message length and rules out loops.
    Without, any pointer is an ``error``. Names over 255 bytes are an ``error``.
    """
    labels: list[bytes] = []
    n = len(data)
    wire_len = 0
    after = -1  # where the name ends in place, once a pointer was followed
    while True:
        if offset >= n:
            raise error("name runs past the end of the message")
        length = data[offset]
        if length == 0:
            offset += 1
            break
        kind = length & 0xC0
        if kind == 0xC0 and pointers:
            if offset + 2 > n:
                raise error("compression pointer runs past the end of the message")
            target = ((length & 0x3F) << 8) | data[offset + 1]
            if target >= offset:
                raise error("compression pointer does not point backwards")
            if after < 0:
                after = offset + 2
            offset = target
            continue
        if kind:
            raise error("compression pointer or extended label type where not allowed")
        end = offset + 1 + length
        if end > n:
            raise error("label runs past the end of the message")
        wire_len += 1 + length
        if wire_len >= MAX_NAME_WIRE_LEN:
            raise error("name longer than 255 bytes")
        labels.append(data[offset + 1 : end])
        offset = end
    return labels, (offset if after < 0 else after)


def parse_query(data: bytes) -> Query:
    """Parse the header and first question of a query.

    Raises :class:`HeaderError` when there is no complete header or the message is a
    response (answering it could start a loop), and :class:`QuestionError` when the
    first question is missing or malformed. Only the first question is read.
    """
    if len(data) < HEADER_LEN:
        raise HeaderError("message shorter than a DNS header")
    msg_id, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(data)
    if flags & QR:
        raise HeaderError("message is a response, not a query")
    if qdcount == 0:
        raise QuestionError("query without a question")
    qname, offset = _read_question_name(data, HEADER_LEN)
    if offset + 4 > len(data):
        raise QuestionError("question type and class run past the end of the message")
    qtype, qclass = _QFIXED.unpack_from(data, offset)
    return Query(data, msg_id, flags, qname, qtype, qclass, offset + 4)


def peek_id(data: bytes) -> int | None:
    """Return the ID of a message, or None when it is too short to have one."""
    if len(data) < 2:
        return None
    value: int = _U16.unpack_from(data)[0]
    return value


def reply_flags(query_flags: int, rcode: int) -> int:
    """Flags of a reply the proxy writes itself, as miekg/dns ``SetRcode`` does.

    QR set; opcode, RD and CD copied from the query; RA set when recursion was asked
    for (the proxy fronts a recursive resolver, and dig warns otherwise).
    """
    flags = QR | (query_flags & (OPCODE_MASK | RD | CD)) | (rcode & RCODE_MASK)
    if query_flags & RD:
        flags |= RA
    return flags


def build_reply(query: Query, rcode: int) -> bytes:
    """Build an empty reply with ``rcode`` echoing the client's ID and first question."""
    question = query.question
    return _HEADER.pack(query.id, reply_flags(query.flags, rcode), 1, 0, 0, 0) + question


def build_header_reply(data: bytes, rcode: int) -> bytes | None:
    """Build a question-less reply (FORMERR, NOTIMP) to a message with a valid header.

    Returns None when ``data`` has no complete header or is itself a response.
    """
    if len(data) < HEADER_LEN:
        return None
    msg_id, flags = _HEADER.unpack_from(data)[:2]
    if flags & QR:
        return None
    return _HEADER.pack(msg_id, reply_flags(flags, rcode), 0, 0, 0, 0)


def with_id(data: bytes, msg_id: int) -> bytes:
    """Return ``data`` with its 16-bit ID replaced (everything else untouched)."""
    return _U16.pack(msg_id) + data[2:]


def _skip_name(data: bytes, offset: int) -> int:
    """Skip a possibly compressed name; return the offset just past it."""
    n = len(data)
    wire_len = 0
    while True:
        if offset >= n:
            raise AnswerError("name runs past the end of the message")
        length = data[offset]
        if length == 0:
            return offset + 1
        kind = length & 0xC0
        if kind == 0xC0:
            if offset + 2 > n:
                raise AnswerError("compression pointer runs past the end of the message")
            return offset + 2
        if kind:
            raise AnswerError("extended label type")
        wire_len += 1 + length
        if wire_len >= MAX_NAME_WIRE_LEN:
            raise AnswerError("name longer than 255 bytes")
        offset += 1 + length


def _read_name(data: bytes, offset: int) -> str:
    """Read a possibly compressed name as lower-case text.

    Pointers must point strictly backwards, which bounds the work by the message
    length and rules out loops.
    """
    labels, _ = _name_labels(data, offset, AnswerError, pointers=True)
    return _presentation(labels)


def scan_answer(data: bytes) -> AnswerSummary:
    """Scan a reply's answer section for A/AAAA/CNAME records and the lowest TTL.

    Work is bounded by the message length: every record consumes at least 11 bytes
    and names are skipped, not followed. Authority and additional sections are not
    read (the proxy forwards them untouched).
    """
    n = len(data)
    if n < HEADER_LEN:
        raise AnswerError("reply shorter than a DNS header")
    msg_id, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(data)
    offset = HEADER_LEN
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
        if offset > n:
            raise AnswerError("question runs past the end of the reply")
    addresses: list[bytes] = []
    cnames: list[str] = []
    min_ttl: int | None = None
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        if offset + 10 > n:
            raise AnswerError("record header runs past the end of the reply")
        rtype, _rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, offset)
        offset += 10
        end = offset + rdlength
        if end > n:
            raise AnswerError("record data runs past the end of the reply")
        if rtype in (TYPE_A, TYPE_AAAA):
            if rdlength != (4 if rtype == TYPE_A else 16):
                raise AnswerError("address record with a wrong length")
            addresses.append(data[offset:end])
        elif rtype == TYPE_CNAME:
            cnames.append(_read_name(data, offset))
        else:
            offset = end
            continue
        # TTLs are unsigned 32-bit on the wire but RFC 2181 treats the top bit as 0
        ttl &= 0x7FFFFFFF
        if min_ttl is None or ttl < min_ttl:
            min_ttl = ttl
        offset = end
    return AnswerSummary(
        msg_id,
        flags,
        flags & RCODE_MASK,
        bool(flags & TC),
        tuple(addresses),
        tuple(cnames),
        min_ttl,
    )


def question_matches(query: Query, reply: bytes) -> bool:
    """Whether ``reply`` answers ``query``'s first question (name case-insensitively).

    A resolver echoes the question it was asked; anything else is a spoofing attempt
    or a stray reply and is discarded.
    """
    end = query.question_end
    if len(reply) < end:
        return False
    if reply[4:6] == b"\x00\x00":
        # a reply may drop the question only with an error rcode (e.g. FORMERR)
        return bool(reply[3] & RCODE_MASK)
    ours = query.raw
    if reply[HEADER_LEN:end] == ours[HEADER_LEN:end]:
        return True
    # 0x20 case randomisation by some resolvers: compare lower-cased. Length bytes
    # are < 64, so bytes.lower() never changes them.
    return reply[HEADER_LEN:end].lower() == ours[HEADER_LEN:end].lower()


def qtype_label(qtype: int) -> str:
    """The bounded metric label for a query type."""
    return QTYPE_NAMES.get(qtype, "OTHER")
