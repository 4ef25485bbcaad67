"""DATA buffers: RFC appendix vectors, greedy filling, compression, fast paths and round trips."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oftp2_provider.protocol.codec import decode
from oftp2_provider.protocol.commands import DATA, ProtocolLevel, RecordFormat
from oftp2_provider.protocol.errors import DecodeError, EsidReason, FieldError
from oftp2_provider.protocol.framing import StreamDecoder, frame
from oftp2_provider.protocol.records import (
    DataDecoder,
    DataEncoder,
    decode_subrecords,
    pack_records,
    unpack,
)

INVALID = EsidReason.COMMAND_CONTAINED_INVALID_DATA

# RFC 2204 Appendix A: V format, 128-octet buffers, buffer compression on.
SNARK_RECORDS = [
    b'"It\'s a Snark!" was the sound that first came to their ears,',
    b"     And seemed almost too good to be true.",
    b"Then followed a torrent of laughter and cheers:",
    b'     Then the ominous words "It\'s a Boo-"',
    b"",
    b"Then, silence.  Some fancied they heard in the air",
    b"     A weary and wandering sigh",
    b'Then sounded like "-jum!" but the others declare',
    b"     It was only a breeze that went by.",
]
SNARK_STBS = [
    bytes.fromhex(
        "1000008444bc2249742773206120536e61726b2122207761732074686520736f"
        "756e6420746861742066697273742063616d6520746f20746865697220656172"
        "732c4520a6416e64207365656d656420616c6d6f737420746f6f20676f6f6420"
        "746f20626520747275652e185468656e20666f6c6c6f776564206120746f7272"
        "656e7420"
    ),
    bytes.fromhex(
        "1000007844976f66206c6175676874657220616e64206368656572733a4520a4"
        "5468656e20746865206f6d696e6f757320776f72647320224974277320612042"
        "6f6f2d2280b25468656e2c2073696c656e63652e2020536f6d652066616e6369"
        "6564207468657920686561726420696e2074686520616972"
    ),
    bytes.fromhex(
        "100000784445209a4120776561727920616e642077616e646572696e67207369"
        "6768b05468656e20736f756e646564206c696b6520222d6a756d212220627574"
        "20746865206f7468657273206465636c6172654520a2497420776173206f6e6c"
        "79206120627265657a6520746861742077656e742062792e"
    ),
]

# RFC 5024 Appendix A: T format, one record, CR LF kept, no compression.
RIME_LINES = [
    "It is an ancient Mariner,",
    "And he stoppeth one of three.",
    '"By thy long grey beard and glittering eye,',
    "Now wherefore stopp'st thou me?",
    "",
    "\"The Bridegroom's doors are opened wide,",
    "And I am next of kin;",
    "The guests are met, the feast is set:",
    "May'st hear the merry din.\"",
    "",
    "He holds him with his skinny hand,",
    '"There was a ship," quoth he.',
    '"Hold off! unhand me, grey-beard loon!"',
    "Eftsoons his hand dropt he.",
    "",
    "He holds him with his glittering eye--",
    "The Wedding-Guest stood still,",
    "And listens like a three years; child:",
    "The Mariner hath his will.",
    "",
    "The Wedding-Guest sat on a stone:",
    "He cannot chuse but hear;",
    "And thus spake on that ancient man,",
    "The bright-eyed Mariner.",
    "",
    "The ship was cheered, the harbour cleared,",
    "Merrily did we drop",
    "Below the kirk, below the hill,",
    "Below the light-house top.",
]
RIME_TEXT = "".join(line + "\r\n" for line in RIME_LINES).encode("ascii")
# RFC 5024 Appendix A prints the exchange buffer as two lines of hex nibbles per 64 octets
# (high nibbles, then low nibbles); transcribed here row by row.
RIME_RFC_NIBBLES = [
    (
        "4347267266266666672467666720046626627767767626662662767662002472",
        "4F9409301E01E395E40D129E52CDA1E4085034F005480FE50F6048255EDA2290",
    ),
    (
        "7367266662676726667626662666776766626762004672766766676277677277",
        "4F890CFE70725902512401E407C944529E70595CDAEF70785256F25034F00734",
    ),
    (
        "2376672663000025662476666766627266677267626766662766620046624266",
        "0F48F50D5FDADA248502294572FFD7304FF2301250F05E5407945CDA1E40901D",
    ),
    (
        "2366772662666300566267677726762667227662666772672767300467277266",
        "0FE5840F60B9EBDA485075534301250D54C04850651340930354ADAD19734085",
    ),
    (
        "6372766266777266622000046266667266627676266727666672666620025667",
        "1F204850D5229049EE2DADA8508FC43089D07948089303B9EE9081E4CDA24852",
    ),
    (
        "6327672627667222776762662002466626662276666626622676726667626666",
        "5F07130103890C2015F48085EDA28FC40F66105E81E40D5C07259D251240CFFE",
    ),
    (
        "2320046776667266726666267677266200004626666726662767626672666776",
        "1F2DA5643FFE30893081E4042F04085EDADA8508FC43089D07948089307C9445",
    ),
    (
        "7366626762200566256666662476772776662776662004662667766726666262",
        "2F9E70595DDDA485075449E7D75534034FF40349CCCDA1E40C9345E30C9B5010",
    ),
    (
        "7367662766773266666300566246766672667626672766620000566256666662",
        "4F8255095123B0389C4ADA4850D129E52081480893079CCEDADA485075449E7D",
    ),
    (
        "4376772767266262776663004626666672667762677266673004662767727766",
        "7F553403140FE01034FE5ADA85031EEF4038535025408512BDA1E4048530301B",
    ),
    (
        "6326627667266666672666200566267666726766246766672000056627667276",
        "5F0FE0481401E395E40D1ECDA4850229784D59540D129E52EDADA48503890071",
    ),
    (
        "7326666766227662667667726666766200467766726662762676700466672766",
        "3F03855254C048508122F5203C51254CDAD5229C90494075042F0DA25CF70485",
    ),
    (
        "2B667622666672766266662004666727662666672667762767200",
        "03B92BC025CF70485089CCCDA25CF704850C9784D8F53504F0EDA",
    ),
]
RIME_RFC_BUFFER = bytes(
    int(high + low, 16) for highs, lows in RIME_RFC_NIBBLES for high, low in zip(highs, lows, strict=True)
)
RIME_TEXT_SHA256 = "7c43f58c94dd6be8ade83188e2d5fdd5cc045b4c23a90f55a8b3ee01b15d91e7"
RIME_DATA_SHA256 = "7ec1048052d433965221e9da19477a6a4bc81c12490e908df3ef9860db518b6f"


def _stream(stbs: list[bytes]) -> list[bytes]:
    decoder = StreamDecoder()
    decoder.feed(b"".join(stbs))
    buffers = list(decoder)
    assert decoder.pending == 0
    return buffers


# ---------------------------------------------------------------------------------------------------
# reference vectors


@pytest.mark.parametrize(
    ("records", "compression", "expected"),
    [
        ([b"A" * 10], True, "44 CA 41"),
        ([b"A" * 10], False, "44 8A" + " 41" * 10),
        ([b"AB     C"], True, "44 02 41 42 45 20 81 43"),
        ([b" " * 100], True, "44 7F 20 E5 20"),
        ([b"x  y"], True, "44 84 78 20 20 79"),
        ([b"", b"abc"], True, "44 80 83 61 62 63"),
        ([b"", b"abc"], False, "44 80 83 61 62 63"),
        ([bytes(range(64))], True, "44 3F " + bytes(range(63)).hex(" ") + " 81 3F"),
        ([bytes(range(64))], False, "44 3F " + bytes(range(63)).hex(" ") + " 81 3F"),
        ([b""], True, "44 80"),
        ([b"A" * 64], True, "44 7F 41 81 41"),
        ([b"A" * 126], True, "44 7F 41 FF 41"),
        ([b"A" * 65], True, "44 7F 41 82 41 41"),
        ([b"A" * 66], True, "44 7F 41 C3 41"),
    ],
)
def test_small_data_vectors(records: list[bytes], compression: bool, expected: str) -> None:
    buffers = pack_records(records, 128, compression)
    assert buffers == [bytes.fromhex(expected)]
    assert unpack(buffers) == records


def test_rfc2204_appendix_a_decodes_to_the_nine_records() -> None:
    buffers = _stream(SNARK_STBS)
    assert [len(b) for b in buffers] == [128, 116, 116]
    assert unpack(buffers) == SNARK_RECORDS
    for buffer in buffers:
        assert decode(buffer, ProtocolLevel.V1_2) == DATA(buffer[1:])


def test_rfc2204_appendix_a_first_buffer_re_encodes_byte_exact() -> None:
    buffers = pack_records(SNARK_RECORDS, 128, compression=True)
    assert frame(buffers[0]) == SNARK_STBS[0]
    assert all(len(b) <= 128 for b in buffers)
    assert unpack(buffers) == SNARK_RECORDS


def test_rfc2204_appendix_a_through_the_v_decoder() -> None:
    plain = DataDecoder(RecordFormat.VARIABLE)
    prefixed = DataDecoder(RecordFormat.VARIABLE, v_prefix=True)
    lines = DataDecoder(RecordFormat.VARIABLE, record_separator=b"\r\n")
    outputs: dict[str, list[bytes]] = {"plain": [], "prefixed": [], "lines": []}
    counts = 0
    for buffer in _stream(SNARK_STBS):
        data, records = plain.feed(buffer[1:])
        outputs["plain"].append(data)
        counts += records
        outputs["prefixed"].append(prefixed.feed(memoryview(buffer)[1:])[0])
        outputs["lines"].append(lines.feed(buffer[1:])[0])
    assert counts == plain.record_count == 9
    assert b"".join(outputs["plain"]) == b"".join(SNARK_RECORDS)
    assert b"".join(outputs["prefixed"]) == b"".join(len(r).to_bytes(2, "big") + r for r in SNARK_RECORDS)
    assert b"".join(outputs["lines"]) == b"".join(r + b"\r\n" for r in SNARK_RECORDS)
    assert plain.unit_count == prefixed.unit_count == sum(map(len, SNARK_RECORDS))
    assert not plain.in_record


def test_rfc5024_appendix_a_byte_exact() -> None:
    assert len(RIME_TEXT) == 807
    assert hashlib.sha256(RIME_TEXT).hexdigest() == RIME_TEXT_SHA256
    encoder = DataEncoder(99_999)
    buffers = encoder.write(RIME_TEXT, end_of_record=True) + encoder.flush()
    assert len(buffers) == 1 and len(buffers[0]) == 821
    assert hashlib.sha256(buffers[0]).hexdigest() == RIME_DATA_SHA256
    expected = b"D" + b"".join(
        bytes([len(RIME_TEXT[i : i + 63]) | (0x80 if i + 63 >= 807 else 0)]) + RIME_TEXT[i : i + 63]
        for i in range(0, 807, 63)
    )
    assert buffers[0] == expected
    assert buffers[0] == RIME_RFC_BUFFER
    assert (encoder.record_count, encoder.unit_count) == (1, 807)
    decoder = DataDecoder(RecordFormat.TEXT)
    assert decoder.feed(buffers[0][1:]) == (RIME_TEXT, 1)
    assert decoder.unit_count == 807


def test_rfc5024_appendix_a_independent_of_write_sizes() -> None:
    for step in (1, 10, 62, 63, 64, 500):
        encoder = DataEncoder(99_999)
        buffers: list[bytes] = []
        for i in range(0, 807, step):
            buffers += encoder.write(RIME_TEXT[i : i + step], end_of_record=i + step >= 807)
        buffers += encoder.flush()
        assert hashlib.sha256(b"".join(buffers)).hexdigest() == RIME_DATA_SHA256, step


def test_end_of_record_may_come_with_an_empty_write() -> None:
    encoder = DataEncoder(99_999)
    buffers = encoder.write(RIME_TEXT) + encoder.write(b"", end_of_record=True) + encoder.flush()
    assert hashlib.sha256(b"".join(buffers)).hexdigest() == RIME_DATA_SHA256


def test_zero_padded_buffer_of_a_known_peer_decodes() -> None:
    # thomsmits/oftp2-client sends D + SDEB zero octets: the padding reads as empty subrecords.
    rime = pack_records([RIME_TEXT], 99_999)[0]
    padded = rime + bytes(204)
    decoder = DataDecoder(RecordFormat.TEXT)
    assert decoder.feed(padded[1:]) == (RIME_TEXT, 1)
    assert decode_subrecords(padded[1:])[-1] == (b"", False)


# ---------------------------------------------------------------------------------------------------
# liberal and strict decoding


def test_empty_and_zero_length_subrecords() -> None:
    assert decode_subrecords(b"") == []
    assert decode_subrecords(b"\x00\x00\x83abc\x80") == [
        (b"", False),
        (b"", False),
        (b"abc", True),
        (b"", True),
    ]
    assert unpack([b"D", b"D\x83abc", b"D"]) == [b"abc"]
    assert unpack([b"D\x80"]) == [b""]
    assert unpack([b"D\x03abc"]) == [b"abc"]  # missing final EoR: the octets still form the last record
    decoder = DataDecoder(RecordFormat.UNSTRUCTURED)
    assert decoder.feed(b"") == (b"", 0)
    assert decoder.feed(b"\x40x") == (b"", 0)  # compressed, count 0: the octet is consumed, nothing emitted


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\x85ab", "announces 5 octets, only 2 left"),
        (b"\xc5", "no octet to repeat"),
        (b"\x3f" + bytes(62), "announces 63 octets"),
        (b"\x83abc\x01", "announces 1 octets, only 0 left"),
    ],
)
def test_truncated_subrecords_are_invalid_data(payload: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle) as info:
        decode_subrecords(payload)
    assert info.value.reason == INVALID
    with pytest.raises(DecodeError):
        DataDecoder(RecordFormat.UNSTRUCTURED).feed(payload)


def test_fast_path_falls_back_on_any_unusual_header() -> None:
    body = bytes(range(63))
    cases = [
        b"\x3f" + body + b"\x3f" + body,  # fast: all full, last without EoR
        b"\x3f" + body + b"\xbf" + body,  # fast: last with EoR
        b"\xbf" + body + b"\x3f" + body,  # EoR inside: slow path, two records
        b"\x3f" + body + b"\x45x",  # compressed last
        b"\x3f" + body + b"\x85abc",  # truncated last
        b"\x3f" + body + b"\x80",  # empty EoR subrecord
        b"\x3e" + body[:62] + b"\x81z",  # short first
    ]
    for payload in cases:
        decoder = DataDecoder(RecordFormat.UNSTRUCTURED)
        try:
            expected = decode_subrecords(payload)
        except DecodeError:
            with pytest.raises(DecodeError):
                decoder.feed(payload)
            continue
        data, records = decoder.feed(payload)
        assert data == b"".join(chunk for chunk, _ in expected)
        assert records == sum(eor for _, eor in expected)


def test_v_prefix_limits_and_options() -> None:
    with pytest.raises(FieldError, match="V-format"):
        DataDecoder(RecordFormat.FIXED, v_prefix=True)
    decoder = DataDecoder(RecordFormat.VARIABLE, v_prefix=True)
    big = pack_records([b"x" * 65_536], 99_999)
    with pytest.raises(DecodeError, match="65535") as info:
        for buffer in big:
            decoder.feed(buffer[1:])
    assert info.value.reason == INVALID
    ok = DataDecoder(RecordFormat.VARIABLE, v_prefix=True)
    out = b"".join(ok.feed(b[1:])[0] for b in pack_records([b"y" * 65_535, b""], 4096))
    assert out == b"\xff\xff" + b"y" * 65_535 + b"\x00\x00"


def test_in_record_tracks_an_open_record() -> None:
    decoder = DataDecoder(RecordFormat.FIXED)
    assert decoder.feed(b"\x02ab") == (b"ab", 0)
    assert decoder.in_record
    assert decoder.feed(b"\x81c\x02de") == (b"cde", 1)
    assert decoder.in_record
    assert decoder.feed(b"\x80") == (b"", 1)
    assert not decoder.in_record and decoder.record_count == 2 and decoder.unit_count == 5


# ---------------------------------------------------------------------------------------------------
# encoder behaviour


@pytest.mark.parametrize(("sdeb", "min_run"), [(2, 3), (100_000, 3), (128, 1), (128, 64)])
def test_encoder_parameters_are_checked(sdeb: int, min_run: int) -> None:
    with pytest.raises(FieldError):
        DataEncoder(sdeb, min_run=min_run)


def test_buffers_are_filled_greedily() -> None:
    data = bytes(range(256)) * 1000
    for sdeb in (128, 130, 1000, 4096, 99_999):
        buffers = pack_records([data], sdeb)
        assert all(b[:1] == b"D" for b in buffers)
        assert all(len(b) in (sdeb, sdeb - 1) for b in buffers[:-1]), sdeb
        assert unpack(buffers) == [data]


def test_flush_without_end_of_record_keeps_the_octets() -> None:
    encoder = DataEncoder(128)
    assert encoder.write(b"abc") == []
    assert encoder.flush() == [b"D\x03abc"]
    assert encoder.flush() == []


def test_empty_file_and_flush_of_nothing() -> None:
    encoder = DataEncoder(128)
    assert encoder.flush() == []
    assert encoder.write(b"", end_of_record=True) == []
    assert encoder.flush() == [b"D\x80"]


def test_full_buffer_is_returned_as_soon_as_it_is_full() -> None:
    encoder = DataEncoder(129)  # 128 octets after D = exactly two full subrecords
    out = encoder.write(b"z" * 126 + b"!")
    assert out == [b"D" + (b"\x3f" + b"z" * 63) * 2]
    assert encoder.write(b"", end_of_record=True) == []
    assert encoder.flush() == [b"D\x81!"]


def test_compressed_runs_split_at_buffer_end() -> None:
    buffers = pack_records([b"q" * 40 + b" " * 200], 44, compression=True)
    assert all(len(b) <= 44 for b in buffers)
    assert unpack(buffers) == [b"q" * 40 + b" " * 200]


def test_min_run_two_compresses_pairs() -> None:
    assert pack_records([b"x  y"], 128, compression=True, min_run=2) == [
        bytes.fromhex("44 01 78 42 20 81 79")
    ]


# ---------------------------------------------------------------------------------------------------
# property-based round trips

_FORMATS = st.sampled_from(list(RecordFormat))
_RECORD_BYTES = st.one_of(
    st.binary(max_size=300),
    st.lists(st.tuples(st.sampled_from(b" A\x00\xff"), st.integers(1, 150)), max_size=8).map(
        lambda runs: b"".join(bytes([o]) * n for o, n in runs)
    ),
)


@settings(max_examples=250, deadline=None)
@given(
    fmt=_FORMATS,
    records=st.lists(_RECORD_BYTES, max_size=12),
    sdeb=st.integers(128, 99_999),
    compression=st.booleans(),
    min_run=st.integers(2, 8),
)
def test_round_trip_records(
    fmt: RecordFormat, records: list[bytes], sdeb: int, compression: bool, min_run: int
) -> None:
    if fmt in (RecordFormat.UNSTRUCTURED, RecordFormat.TEXT):
        records = [b"".join(records)]  # one record: the whole file
    if fmt is RecordFormat.FIXED and records:
        width = max(1, max(map(len, records)))
        records = [r.ljust(width, b"\x00") for r in records]
    buffers = pack_records(records, sdeb, compression, min_run=min_run)
    assert all(b[:1] == b"D" and 2 <= len(b) <= sdeb for b in buffers)
    assert unpack(buffers) == records
    decoder = DataDecoder(fmt, v_prefix=fmt is RecordFormat.VARIABLE)
    pieces = [decoder.feed(memoryview(b)[1:]) for b in buffers]
    data = b"".join(p[0] for p in pieces)
    if fmt is RecordFormat.VARIABLE:
        assert data == b"".join(len(r).to_bytes(2, "big") + r for r in records)
    else:
        assert data == b"".join(records)
    assert sum(p[1] for p in pieces) == decoder.record_count == len(records)
    assert decoder.unit_count == sum(map(len, records))
    assert not decoder.in_record


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
    sdeb=st.integers(128, 2000),
)
def test_uncompressed_stream_does_not_depend_on_write_sizes(data: bytes, cuts: list[int], sdeb: int) -> None:
    one = DataEncoder(sdeb)
    expected = one.write(data, end_of_record=True) + one.flush()
    points = sorted({min(c, len(data)) for c in cuts} | {0})
    encoder = DataEncoder(sdeb)
    got: list[bytes] = []
    for a, b in zip(points, [*points[1:], len(data)], strict=True):
        got += encoder.write(data[a:b], end_of_record=b == len(data) and a == points[-1])
    got += encoder.flush()
    assert got == expected
    assert encoder.unit_count == len(data) and encoder.record_count == 1


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(_RECORD_BYTES, min_size=1, max_size=10),
    sdeb=st.integers(128, 5000),
)
def test_compressed_streaming_round_trips(chunks: list[bytes], sdeb: int) -> None:
    encoder = DataEncoder(sdeb, compression=True)
    buffers: list[bytes] = []
    for i, chunk in enumerate(chunks):
        buffers += encoder.write(chunk, end_of_record=i == len(chunks) - 1)
    buffers += encoder.flush()
    assert all(len(b) <= sdeb for b in buffers)
    assert unpack(buffers) == [b"".join(chunks)]
    assert decode_subrecords(buffers[-1][1:])[-1][1] is True  # the file ends with EoR


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=400))
def test_decoder_never_fails_with_anything_but_a_decode_error(payload: bytes) -> None:
    decoder = DataDecoder(RecordFormat.VARIABLE, v_prefix=True)
    try:
        decoder.feed(payload)
    except DecodeError as exc:
        assert exc.reason == INVALID


@pytest.mark.parametrize("sdeb", [128, 129, 130, 131, 191, 192, 193, 1000])
@pytest.mark.parametrize("step", [1, 2, 62, 63, 64, 65, 127, 500])
def test_write_sizes_at_awkward_buffer_sizes(sdeb: int, step: int) -> None:
    data = bytes(range(256)) * 12
    one = DataEncoder(sdeb)
    expected = one.write(data, end_of_record=True) + one.flush()
    encoder = DataEncoder(sdeb)
    got: list[bytes] = []
    for i in range(0, len(data), step):
        got += encoder.write(data[i : i + step])
    got += encoder.write(b"", end_of_record=True) + encoder.flush()
    assert got == expected
    assert unpack(got) == [data]


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.binary(max_size=200), max_size=40),
    sdeb=st.integers(128, 600),
    compression=st.booleans(),
)
def test_write_records_equals_one_write_record_per_record(
    records: list[bytes], sdeb: int, compression: bool
) -> None:
    one = DataEncoder(sdeb, compression=compression)
    expected: list[bytes] = []
    for record in records:
        expected += one.write_record(record)
    expected += one.flush()
    batch = DataEncoder(sdeb, compression=compression)
    got = batch.write_records(iter(records)) + batch.flush()
    assert got == expected
    assert (batch.record_count, batch.unit_count) == (len(records), sum(map(len, records)))


def _greedy_reference(data: bytes, sdeb: int) -> list[bytes]:
    """One record, no compression, one subrecord at a time: the layout RFC 5024 §7 describes."""
    buffers: list[bytes] = []
    buf = bytearray(b"D")
    pos = 0
    while True:
        room = sdeb - len(buf)
        if room < 2:
            buffers.append(bytes(buf))
            buf = bytearray(b"D")
            continue
        n = min(63, room - 1, len(data) - pos)
        last = pos + n == len(data)
        buf.append(n | (0x80 if last else 0))
        buf += data[pos : pos + n]
        pos += n
        if last:
            buffers.append(bytes(buf))
            return buffers


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 300_000),
    cuts=st.lists(st.integers(0, 300_000), max_size=6),
    sdeb=st.sampled_from([3, 4, 65, 66, 128, 129, 130, 4096, 99_999]) | st.integers(3, 9000),
)
def test_whole_buffer_fast_path_matches_a_subrecord_by_subrecord_encoder(
    size: int, cuts: list[int], sdeb: int
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    points = sorted({min(c, size) for c in cuts} | {0})
    encoder = DataEncoder(sdeb)
    got: list[bytes] = []
    for a, b in zip(points, [*points[1:], size], strict=True):
        got += encoder.write(data[a:b], end_of_record=a == points[-1])
    got += encoder.flush()
    assert got == _greedy_reference(data, sdeb)


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=5000), min_size=1, max_size=8),
    fmt=st.sampled_from([RecordFormat.UNSTRUCTURED, RecordFormat.FIXED, RecordFormat.VARIABLE]),
    sdeb=st.integers(3, 6000),
    compression=st.booleans(),
)
def test_feed_run_equals_feeding_buffer_by_buffer(
    pieces: list[bytes], fmt: RecordFormat, sdeb: int, compression: bool
) -> None:
    encoder = DataEncoder(sdeb, compression=compression)
    buffers = [b for p in pieces for b in encoder.write_record(p)] + encoder.flush()
    one, run = (
        DataDecoder(fmt, v_prefix=fmt is RecordFormat.VARIABLE),
        DataDecoder(fmt, v_prefix=fmt is RecordFormat.VARIABLE),
    )
    expected = [one.feed(memoryview(b)[1:]) for b in buffers]
    stream = StreamDecoder()
    stream.feed(b"".join(frame(b) for b in buffers))
    taken = stream.take_leading(0x44, len(buffers) + 1, sdeb, 1 << 30)
    assert taken is not None and stream.pending == 0
    data, records, done, error = run.feed_run(*taken)
    assert error is None and done == len(buffers)
    assert bytes(data) == b"".join(d for d, _ in expected) and records == sum(r for _, r in expected)
    assert (run.unit_count, run.record_count, run.in_record) == (
        one.unit_count,
        one.record_count,
        one.in_record,
    )


def test_feed_run_stops_at_an_undecodable_buffer() -> None:
    good = DataEncoder(200).write(b"x" * 150)
    bad = b"D" + bytes([0x3F]) + b"short"
    stream = StreamDecoder()
    stream.feed(b"".join(frame(b) for b in [*good, bad, *good]))
    taken = stream.take_leading(0x44, 10, 200, 1 << 20)
    assert taken is not None
    data, records, done, error = DataDecoder(RecordFormat.UNSTRUCTURED).feed_run(*taken)
    assert done == len(good) and bytes(data) == b"x" * len(data) and records == 0
    assert isinstance(error, DecodeError) and error.reason == INVALID
