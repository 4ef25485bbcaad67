"""Command codec: reference vectors, per-level layouts, refusals, liberal decoding and reason codes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oftp2_provider.protocol.codec import (
    decode,
    decode_esid,
    decode_ssid,
    eerp_signed_content,
    encode,
    layout_family,
    nerp_signed_content,
)
from oftp2_provider.protocol.commands import (
    AUCH,
    AURP,
    CD,
    CDT,
    DATA,
    EERP,
    EFID,
    EFNA,
    EFPA,
    ESID,
    NERP,
    RTR,
    SECD,
    SFID,
    SFNA,
    SFPA,
    SSID,
    SSRM,
    Command,
    ProtocolLevel,
    RecordFormat,
    SecurityLevel,
    SendReceive,
)
from oftp2_provider.protocol.errors import DecodeError, EsidReason, FieldError, RemoteProtocolError

V1, V2, V4, V5 = ProtocolLevel.V1_2, ProtocolLevel.V1_3, ProtocolLevel.V1_4, ProtocolLevel.V2_0
ALL_LEVELS = (V1, V2, V4, V5)
SHA1_ABC = hashlib.sha1(b"abc").digest()
DEST, ORIG, HUB = "O0013000000DEST", "O0013000000ORIG", "O0013000000HUB"

# Reference vectors (docs reference §10.1): exact exchange buffers, without STH.
VECTORS: dict[str, bytes] = {
    "SSRM": b"IODETTE FTP READY \r",
    "SSID_a": b"X5O0013000000ACME          SECRET  04096BNNN064N            \r",
    "SSID_b": b"X5O0177PARTNERA            PASSWD  99999SYYN999Y    USERDATA\r",
    "SSID_v14": b"X4O0055LOCALUSER           MYPASSWD02048BYYN064             \r",
    "SFID_plain": b"HINVOIC.TEST                  202401311230450001        O0013000000DEST          "
    b"O0013000000ORIG          U000000000000000012000000000001200000000000000000000000N000",
    "SFID_secure": bytes.fromhex(
        "48494e564f49432e54455354202020202020202020202020202020202020323032343031333131323330343530303031"
        "55534552312020204f3030313330303030303044455354202020202020202020204f303031333030303030304f524947"
        "202020202020202020205530303030303030303030303030303030303330303030303030303030303132303030303030"
        "30303030303030303030303033303231315930323950c599c3ad6c69c5a120c5be6c75c5a56f75c48d6bc3bd206bc5af"
        "c588"
    ),
    "SFID_v13": b"HINVOIC.TEST                        240131123045        O0013000000DEST          "
    b"O0013000000ORIG          F000800000012000000000",
    "SFPA_0": b"200000000000000000",
    "SFPA_v13": b"2000000000",
    "SFNA_13": b"313N000",
    "SFNA_text": b"301Y012Unknown file",
    "DATA_empty_eof": bytes.fromhex("4480"),
    "CDT": b"C  ",
    "EFID": b"T0000000000000000000000000000000807",
    "EFPA_Y": b"4Y",
    "EFNA_21": b"521000",
    "ESID_00": b"F00000\r",
    "ESID_04": b"F04016Invalid password\r",
    "ESID_v13_03": b"F03\r",
    "CD": b"R",
    "EERP_unsigned": bytes.fromhex(
        "45494e564f49432e54455354202020202020202020202020202020202020323032343031333131323330343530303031"
        "20202020202020204f303031333030303030304f524947202020202020202020204f3030313330303030303044455354"
        "2020202020202020202000000000"
    ),
    "EERP_hash": bytes.fromhex(
        "45494e564f49432e54455354202020202020202020202020202020202020323032343031333131323330343530303031"
        "20202020202020204f303031333030303030304f524947202020202020202020204f3030313330303030303044455354"
        "202020202020202020200014a9993e364706816aba3e25717850c26c9cd0d89d0000"
    ),
    "NERP": bytes.fromhex(
        "4e494e564f49432e54455354202020202020202020202020202020202020202020323032343031333131323330343530"
        "3030314f303031333030303030304f524947202020202020202020204f30303133303030303030444553542020202020"
        "20202020204f303031333030303030304855422020202020202020202020323330303000000000"
    ),
    "RTR": b"P",
    "SECD": b"J",
    "AUCH_demo": bytes.fromhex("410003090807"),
    "AURP_demo": bytes.fromhex("53000102030405060708090a0b0c0d0e0f10111213"),
}
EERP_SIGNED_CONTENT = bytes.fromhex(
    "494e564f49432e544553542020202020202020202020202020203230323430313331313233303435303030314f303031"
    "333030303030304f524947202020202020202020204f303031333030303030304445535420202020202020202020a999"
    "3e364706816aba3e25717850c26c9cd0d89d"
)
NERP_SIGNED_CONTENT = bytes.fromhex(
    "494e564f49432e544553542020202020202020202020202020203230323430313331313233303435303030314f303031"
    "333030303030304f524947202020202020202020204f3030313330303030303044455354202020202020202020204f30"
    "3031333030303030304855422020202020202020202020a9993e364706816aba3e25717850c26c9cd0d89d"
)

SFID_PLAIN = SFID(
    dsn="INVOIC.TEST",
    date="20240131",
    time="1230450001",
    destination=DEST,
    originator=ORIG,
    format=RecordFormat.UNSTRUCTURED,
    file_size=12,
    original_size=12,
)
EERP_PLAIN = EERP(dsn="INVOIC.TEST", date="20240131", time="1230450001", destination=ORIG, originator=DEST)
NERP_PLAIN = NERP(
    dsn="INVOIC.TEST",
    date="20240131",
    time="1230450001",
    destination=ORIG,
    originator=DEST,
    creator=HUB,
    reason=23,
)

EXPECTED: dict[str, tuple[ProtocolLevel, Command]] = {
    "SSRM": (V5, SSRM()),
    "SSID_a": (
        V5,
        SSID(level=V5, code="O0013000000ACME", password="SECRET", sdeb=4096, credit=64),
    ),
    "SSID_b": (
        V5,
        SSID(
            level=V5,
            code="O0177PARTNERA",
            password="PASSWD",
            sdeb=99999,
            send_receive=SendReceive.SEND,
            compression=True,
            restart=True,
            credit=999,
            secure_auth=True,
            user_data="USERDATA",
        ),
    ),
    "SSID_v14": (
        V4,
        SSID(
            level=V4,
            code="O0055LOCALUSER",
            password="MYPASSWD",
            sdeb=2048,
            compression=True,
            restart=True,
            credit=64,
        ),
    ),
    "SFID_plain": (V5, SFID_PLAIN),
    "SFID_secure": (
        V5,
        SFID(
            dsn="INVOIC.TEST",
            date="20240131",
            time="1230450001",
            user_data="USER1",
            destination=DEST,
            originator=ORIG,
            file_size=3,
            original_size=12,
            security=SecurityLevel.ENCRYPTED_AND_SIGNED,
            cipher_suite=2,
            compression=1,
            envelope=1,
            signed_eerp=True,
            description="Příliš žluťoučký kůň",
        ),
    ),
    "SFID_v13": (
        V2,
        SFID(
            dsn="INVOIC.TEST",
            date="240131",
            time="123045",
            destination=DEST,
            originator=ORIG,
            format=RecordFormat.FIXED,
            lrecl=80,
            file_size=12,
        ),
    ),
    "SFPA_0": (V5, SFPA(0)),
    "SFPA_v13": (V1, SFPA(0)),
    "SFNA_13": (V5, SFNA(13)),
    "SFNA_text": (V5, SFNA(1, retry=True, text="Unknown file")),
    "DATA_empty_eof": (V5, DATA(b"\x80")),
    "CDT": (V5, CDT()),
    "EFID": (V5, EFID(0, 807)),
    "EFPA_Y": (V5, EFPA(True)),
    "EFNA_21": (V5, EFNA(21)),
    "ESID_00": (V5, ESID(0)),
    "ESID_04": (V5, ESID(4, "Invalid password")),
    "ESID_v13_03": (V2, ESID(3)),
    "CD": (V5, CD()),
    "EERP_unsigned": (V5, EERP_PLAIN),
    "EERP_hash": (
        V5,
        EERP(
            dsn="INVOIC.TEST",
            date="20240131",
            time="1230450001",
            destination=ORIG,
            originator=DEST,
            file_hash=SHA1_ABC,
        ),
    ),
    "NERP": (V5, NERP_PLAIN),
    "RTR": (V5, RTR()),
    "SECD": (V5, SECD()),
    "AUCH_demo": (V5, AUCH(b"\x09\x08\x07")),
    "AURP_demo": (V5, AURP(bytes(range(20)))),
}


def test_every_vector_has_an_expectation() -> None:
    assert set(EXPECTED) == set(VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_encodes_byte_exact(name: str) -> None:
    level, command = EXPECTED[name]
    assert encode(command, level) == VECTORS[name]


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_decodes(name: str) -> None:
    level, command = EXPECTED[name]
    assert decode(VECTORS[name], level) == command


def test_vector_lengths_match_the_reference_table() -> None:
    lengths = {name: len(data) for name, data in VECTORS.items()}
    assert lengths["SSID_a"] == lengths["SSID_v14"] == 61
    assert lengths["SFID_plain"] == 165 and lengths["SFID_secure"] == 194 and lengths["SFID_v13"] == 128
    assert lengths["EERP_unsigned"] == 110 and lengths["EERP_hash"] == 130 and lengths["NERP"] == 135
    assert lengths["EFID"] == 35 and lengths["SFPA_0"] == 18 and lengths["SFPA_v13"] == 10


def test_accord_sfid_and_efid_cross_check() -> None:
    sfid = SFID(
        dsn="LOOPTEST",
        date="20081127",
        time="1055440001",
        destination="O0055ORIGIN",
        originator="O0055DEST",
        file_size=18,
        original_size=256,
        restart=7,
        security=SecurityLevel.ENCRYPTED_AND_SIGNED,
        cipher_suite=1,
        envelope=1,
    )
    raw = encode(sfid, V5)
    assert len(raw) == 165
    assert (
        raw[106:165]
        == b"U00000" + b"0" * 11 + b"18" + b"0" * 10 + b"256" + b"0" * 16 + b"7" + b"03010" + b"1N000"
    )
    assert decode(raw, V5) == sfid
    assert encode(EFID(0, 17860), V5) == b"T" + b"0" * 17 + b"0" * 12 + b"17860"


def test_signed_content_vectors() -> None:
    eerp = EXPECTED["EERP_hash"][1]
    assert isinstance(eerp, EERP)
    assert eerp_signed_content(eerp) == EERP_SIGNED_CONTENT
    assert len(EERP_SIGNED_CONTENT) == 114
    nerp = NERP(
        dsn="INVOIC.TEST",
        date="20240131",
        time="1230450001",
        destination=ORIG,
        originator=DEST,
        creator=HUB,
        reason=23,
        file_hash=SHA1_ABC,
    )
    assert nerp_signed_content(nerp) == NERP_SIGNED_CONTENT
    assert len(NERP_SIGNED_CONTENT) == 139


# ---------------------------------------------------------------------------------------------------
# per-level layouts

SAMPLES_ALL_LEVELS: list[Command] = [
    SSRM(),
    SFPA(123),
    SFNA(13, retry=True),
    DATA(b"\x83abc"),
    CDT(),
    EFID(5, 4711),
    EFPA(False),
    EFNA(11),
    ESID(8),
    CD(),
    RTR(),
]


@pytest.mark.parametrize("level", ALL_LEVELS)
@pytest.mark.parametrize("command", SAMPLES_ALL_LEVELS, ids=lambda c: type(c).__name__)
def test_commands_existing_at_every_level_round_trip(level: ProtocolLevel, command: Command) -> None:
    assert decode(encode(command, level), level) == command


@pytest.mark.parametrize("level", ALL_LEVELS)
def test_ssid_round_trips_at_its_own_level(level: ProtocolLevel) -> None:
    ssid = SSID(level=level, code="O0013000000ACME", password="SECRET", sdeb=128, credit=1, user_data="U")
    raw = encode(ssid, V5)  # SSID is laid out by its own SSIDLEV, whatever the argument
    assert len(raw) == 61 and raw[1:2] == str(int(level)).encode()
    assert decode(raw, V1) == decode_ssid(raw) == ssid
    expected_47 = b"N" if level == V5 else b" "
    assert raw[47:48] == expected_47


@pytest.mark.parametrize(
    ("level", "length"), [(V1, 128), (V2, 128), (V4, 128), (V5, 165)], ids=["1", "2", "4", "5"]
)
def test_sfid_lengths_per_level(level: ProtocolLevel, length: int) -> None:
    wide = level >= V4
    sfid = SFID(
        dsn="DSN",
        date="20240131" if wide else "240131",
        time="1230450001" if wide else "123045",
        destination=DEST,
        originator=ORIG,
        format=RecordFormat.VARIABLE,
        lrecl=512,
        file_size=9_999_999,
        restart=999_999_999,
    )
    raw = encode(sfid, level)
    assert len(raw) == length
    assert decode(raw, level) == sfid


def test_v14_sfid_layout_positions() -> None:
    sfid = SFID(
        dsn="DSN",
        date="20240131",
        time="1230450001",
        destination=DEST,
        originator=ORIG,
        file_size=1234567,
        restart=987654321,
    )
    raw = encode(sfid, V4)
    assert raw[27:30] == b"   " and raw[30:38] == b"20240131" and raw[38:48] == b"1230450001"
    assert raw[106:107] == b"U" and raw[112:119] == b"1234567" and raw[119:128] == b"987654321"


def test_v13_eerp_and_efid_layouts() -> None:
    eerp = EERP(dsn="F1", date="240131", time="123045", destination=ORIG, originator=DEST, user_data="X")
    raw = encode(eerp, V1)
    assert len(raw) == 106 and raw[27:36] == b" " * 9 and raw[36:42] == b"240131" and raw[42:48] == b"123045"
    assert decode(raw, V2) == eerp
    efid = encode(EFID(999_999_999, 999_999_999_999), V2)
    assert efid == b"T" + b"9" * 9 + b"9" * 12
    assert encode(ESID(3), V4) == b"F03\r"


def test_v14_eerp_and_nerp_layouts() -> None:
    raw = encode(EERP_PLAIN, V4)
    assert len(raw) == 106 and raw == VECTORS["EERP_unsigned"][:106]
    assert decode(raw, V4) == EERP_PLAIN
    nerp = encode(NERP_PLAIN, V4)
    assert len(nerp) == 128 and nerp == VECTORS["NERP"][:128]
    assert decode(nerp, V4) == NERP_PLAIN


def test_layout_family_names() -> None:
    assert [layout_family(level) for level in ALL_LEVELS] == ["v13", "v13", "v14", "v20"]
    with pytest.raises(FieldError, match="level"):
        layout_family(3)


# ---------------------------------------------------------------------------------------------------
# encoder refusals: never truncate, never drop information


def _sfid(**changes: object) -> SFID:
    base: dict[str, object] = {
        "dsn": "DSN",
        "date": "20240131",
        "time": "1230450001",
        "destination": DEST,
        "originator": ORIG,
    }
    base.update(changes)
    return SFID(**base)  # type: ignore[arg-type]


def test_sdeb_102400_is_refused_never_truncated() -> None:
    with pytest.raises(FieldError, match="sdeb"):
        SSID(level=V5, code="A", password="", sdeb=102400)
    with pytest.raises(FieldError, match="sdeb"):
        SSID(level=V5, code="A", password="", sdeb=127)


@pytest.mark.parametrize(
    ("level", "command", "field"),
    [
        (V4, _sfid(file_size=10_000_000), "file_size"),
        (V2, _sfid(date="240131", time="123045", file_size=10_000_000), "file_size"),
        (V4, _sfid(restart=1_000_000_000), "restart"),
        (V4, _sfid(description="hello"), "description"),
        (V4, _sfid(security=SecurityLevel.SIGNED), "security"),
        (V4, _sfid(cipher_suite=2), "cipher_suite"),
        (V4, _sfid(compression=1), "compression"),
        (V4, _sfid(envelope=1), "envelope"),
        (V4, _sfid(signed_eerp=True), "signed_eerp"),
        (V4, _sfid(file_size=5, original_size=7), "original_size"),
        (V2, _sfid(), "date"),
        (V1, _sfid(date="240131"), "time"),
        (V5, _sfid(date="240131", time="123045"), "date"),
        (V4, _sfid(time="123045"), "time"),
        (V4, SFPA(1_000_000_000), "accepted_restart"),
        (V1, SFNA(1, text="no"), "text"),
        (V4, EFNA(1, text="no"), "text"),
        (V2, ESID(4, "bad password"), "text"),
        (V1, EFID(1_000_000_000, 0), "record_count"),
        (V1, EFID(0, 10**12), "unit_count"),
        (
            V4,
            EERP(
                dsn="D", date="20240131", time="1230450001", destination="A", originator="B", file_hash=b"h"
            ),
            "file_hash",
        ),
        (
            V4,
            EERP(
                dsn="D", date="20240131", time="1230450001", destination="A", originator="B", signature=b"s"
            ),
            "signature",
        ),
        (V2, EERP(dsn="D", date="20240131", time="123045", destination="A", originator="B"), "date"),
        (V5, EERP(dsn="D", date="240131", time="1230450001", destination="A", originator="B"), "date"),
        (V5, EERP(dsn="D", date="2024013A", time="1230450001", destination="A", originator="B"), "date"),
        (
            V4,
            NERP(
                dsn="D",
                date="20240131",
                time="1230450001",
                destination="A",
                originator="B",
                creator="C",
                reason=1,
                text="t",
            ),
            "text",
        ),
        (V4, SSID(level=V4, code="A", password="", sdeb=128, secure_auth=True), "secure_auth"),
        (V5, SSRM("ODETTE FTP READY AND WAITING"), "message"),
    ],
)
def test_encode_refuses_values_the_level_cannot_carry(
    level: ProtocolLevel, command: Command, field: str
) -> None:
    with pytest.raises(FieldError) as info:
        encode(command, level)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("level", [V1, V2])
def test_nerp_does_not_exist_below_level_4(level: ProtocolLevel) -> None:
    with pytest.raises(FieldError, match="NERP does not exist at protocol level"):
        encode(NERP_PLAIN, level)
    with pytest.raises(DecodeError) as info:
        decode(VECTORS["NERP"][:128], level)
    assert info.value.reason == EsidReason.COMMAND_NOT_RECOGNISED


@pytest.mark.parametrize("level", [V1, V2, V4])
@pytest.mark.parametrize("name", ["SECD", "AUCH_demo", "AURP_demo"])
def test_secure_authentication_commands_only_at_level_5(level: ProtocolLevel, name: str) -> None:
    with pytest.raises(FieldError, match="does not exist"):
        encode(EXPECTED[name][1], level)
    with pytest.raises(DecodeError) as info:
        decode(VECTORS[name], level)
    assert info.value.reason == EsidReason.COMMAND_NOT_RECOGNISED


def test_a_command_longer_than_an_exchange_buffer_is_refused() -> None:
    eerp = EERP(
        dsn="D",
        date="20240131",
        time="1230450001",
        destination="A",
        originator="B",
        file_hash=bytes(50_000),
        signature=bytes(50_000),
    )
    with pytest.raises(FieldError, match="exceeds the 99999-octet exchange buffer"):
        encode(eerp, V5)


def test_original_size_equal_to_file_size_may_be_dropped_below_level_5() -> None:
    raw = encode(_sfid(file_size=12, original_size=12), V4)
    assert decode(raw, V4) == _sfid(file_size=12)


def test_utf8_length_is_counted_in_octets() -> None:
    text = "é" * 499  # 998 octets
    raw = encode(SFNA(1, text=text), V5)
    assert raw[4:7] == b"998"
    assert decode(raw, V5) == SFNA(1, text=text)
    with pytest.raises(FieldError, match="999"):
        SFNA(1, text="é" * 500)


# ---------------------------------------------------------------------------------------------------
# liberal decoding (reference §9)


@pytest.mark.parametrize(
    "ending", [b"\r", b"\n", b"\x8d", b"", b"\r\n"], ids=["CR", "LF", "8D", "none", "CRLF"]
)
def test_terminators_after_ssrm_ssid_esid(ending: bytes) -> None:
    assert decode(b"IODETTE FTP READY " + ending, V5) == SSRM()
    assert decode(VECTORS["SSID_a"][:-1] + ending, V5) == EXPECTED["SSID_a"][1]
    assert decode(b"F04016Invalid password" + ending, V5) == ESID(4, "Invalid password")
    assert decode(b"F03" + ending, V5) == ESID(3)


@pytest.mark.parametrize("stray", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
@pytest.mark.parametrize(
    "name",
    [
        "SFPA_0",
        "SFNA_13",
        "SFNA_text",
        "EFID",
        "EFPA_Y",
        "EFNA_21",
        "CD",
        "RTR",
        "SFID_plain",
        "EERP_hash",
        "NERP",
    ],
)
def test_one_stray_line_end_after_other_commands(name: str, stray: bytes) -> None:
    level, command = EXPECTED[name]
    assert decode(VECTORS[name] + stray, level) == command


def test_two_stray_octets_are_a_size_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode(VECTORS["SFPA_0"] + b"\r\r", V5)
    assert info.value.reason == EsidReason.EXCHANGE_BUFFER_SIZE_ERROR


@pytest.mark.parametrize("raw", [b"C", b"C  ", b"C\r", b"C  \r", b"CXY"], ids=repr)
def test_cdt_variants(raw: bytes) -> None:
    assert decode(raw, V5) == CDT()


def test_lower_case_fields_and_flags() -> None:
    raw = b"X5o0013000000acme          secret  04096bnyn064y    userdata\r"
    ssid = decode(raw, V5)
    assert isinstance(ssid, SSID)
    assert ssid.code == "o0013000000acme" and ssid.password == "secret" and ssid.user_data == "userdata"
    assert ssid.send_receive is SendReceive.BOTH and ssid.restart and ssid.secure_auth
    assert decode(b"4y", V5) == EFPA(True)
    assert decode(b"313n000", V5) == SFNA(13)
    sfid = decode(
        VECTORS["SFID_plain"].replace(b"U0000", b"u0000").replace(b"INVOIC.TEST", b"invoic.test"), V5
    )
    assert isinstance(sfid, SFID)
    assert sfid.format is RecordFormat.UNSTRUCTURED and sfid.dsn == "invoic.test"


def test_ssid_position_47_space_reads_as_no_authentication() -> None:
    raw = VECTORS["SSID_a"][:47] + b" " + VECTORS["SSID_a"][48:]
    ssid = decode_ssid(raw)
    assert ssid.level == V5 and ssid.secure_auth is False


def test_ssid_reserved_area_below_level_5_is_ignored() -> None:
    raw = VECTORS["SSID_v14"][:47] + b"Y?!  " + VECTORS["SSID_v14"][52:]
    assert decode_ssid(raw) == EXPECTED["SSID_v14"][1]


def test_alphanumerics_are_right_trimmed_and_leading_spaces_kept() -> None:
    sfpa_like = decode(VECTORS["SFID_plain"], V5)
    assert isinstance(sfpa_like, SFID) and sfpa_like.dsn == "INVOIC.TEST"
    eerp = EERP(dsn=" LEAD", date="20240131", time="1230450001", destination="A", originator="B")
    assert decode(encode(eerp, V5), V5) == eerp


@pytest.mark.parametrize("level", ALL_LEVELS)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"F03\r", ESID(3)),
        (b"F03", ESID(3)),
        (b"F00000\r", ESID(0)),
        (b"F04016Invalid password\r", ESID(4, "Invalid password")),
        (b"F99003abc", ESID(99, "abc")),
        (b"F10006\xc5\xbelu\xc5\xa5\r", ESID(10, "žluť")),
    ],
    ids=repr,
)
def test_esid_is_parsed_leniently_at_every_level(level: ProtocolLevel, raw: bytes, expected: ESID) -> None:
    assert decode(raw, level) == expected
    assert decode_esid(raw) == expected


def test_zero_length_data_payload_and_memoryview_input() -> None:
    assert decode(b"D", V5) == DATA(b"")
    assert decode(memoryview(b"xxD\x83abc")[2:], V1) == DATA(b"\x83abc")
    assert decode(memoryview(VECTORS["SFID_plain"]), V5) == SFID_PLAIN


# ---------------------------------------------------------------------------------------------------
# decode errors carry the ESID reason to answer with

UNKNOWN = EsidReason.COMMAND_NOT_RECOGNISED
INVALID = EsidReason.COMMAND_CONTAINED_INVALID_DATA
SIZE = EsidReason.EXCHANGE_BUFFER_SIZE_ERROR


def _patch(name: str, at: int, new: bytes) -> bytes:
    raw = VECTORS[name]
    return raw[:at] + new + raw[at + len(new) :]


@pytest.mark.parametrize(
    ("raw", "level", "reason", "needle"),
    [
        (b"Z", V5, UNKNOWN, "unknown command"),
        (b"x5", V5, UNKNOWN, "unknown command"),
        (b"\x00", V5, UNKNOWN, "unknown command"),
        (b"", V5, SIZE, "empty"),
        (b"D" + bytes(99_999), V5, SIZE, "exceeds 99999"),
        (b"A\xff\xff" + bytes(99_997), V5, SIZE, "exceeds 99999"),
        (b"2000000000000000000", V5, SIZE, "implies 18"),
        (b"20000000000000000", V5, SIZE, "accepted_restart"),
        (b"200000000", V1, SIZE, "accepted_restart"),
        (b"20000000x0000000000", V5, INVALID, "accepted_restart"),
        (b"2-0000000000000000", V5, INVALID, "accepted_restart"),
        (b"2 00000000000000000", V5, INVALID, "accepted_restart"),
        (b"4X", V5, INVALID, "change_direction"),
        (b"4", V5, SIZE, "change_direction"),
        (b"4YN", V5, SIZE, "implies 2"),
        (b"301Y012Unknown fil", V5, SIZE, "text"),
        (b"301Y012Unknown files", V5, SIZE, "implies 19"),
        (b"301Y01xUnknown file", V5, INVALID, "length"),
        (b"301Y002\xff\xfe", V5, INVALID, "UTF-8"),
        (b"5AB000", V5, INVALID, "reason"),
        (b"C   x", V5, SIZE, "CDT"),
        (b"RR", V5, SIZE, "CD"),
        (b"P\x00", V5, SIZE, "RTR"),
        (b"J\r\r", V5, SIZE, "SECD"),
        (b"S" + bytes(19), V5, SIZE, "response"),
        (b"S" + bytes(21), V5, SIZE, "implies 21"),
        (b"A\x00\x05abc", V5, SIZE, "challenge"),
        (b"F0", V5, SIZE, "reason"),
        (b"FXX\r", V5, INVALID, "reason"),
        (b"F04099short\r", V5, SIZE, "text"),
        (b"F04003abc\rjunk", V5, SIZE, "implies"),
        (b"IODETTE FTP", V5, SIZE, "message"),
        (b"IODETTE FTP READ\xc9 \r", V5, INVALID, "ASCII"),
    ],
    ids=repr,
)
def test_decode_errors_and_reason_codes(
    raw: bytes, level: ProtocolLevel, reason: EsidReason, needle: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(raw, level)
    assert info.value.reason == reason
    assert needle in str(info.value)
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize(
    ("name", "at", "new", "reason", "needle"),
    [
        ("SFID_plain", 112, b"00000000000x2", INVALID, "file_size"),
        ("SFID_plain", 106, b"Q", INVALID, "format"),
        ("SFID_plain", 30, b"2024-131", INVALID, "date"),
        ("SFID_plain", 155, b"07", INVALID, "security"),
        ("SFID_plain", 161, b"?", INVALID, "signed_eerp"),
        ("SFID_plain", 1, b" " * 26, INVALID, "dsn"),  # empty after trimming: DSN is mandatory
        ("SFID_plain", 162, b"001", SIZE, "description"),
        ("SFID_plain", 56, b"\x01", INVALID, "destination"),
        ("SFID_secure", 162, b"030", SIZE, "description"),
        ("SFID_secure", 165, b"\xc5\x20", INVALID, "UTF-8"),
        ("SSID_a", 35, b"00127", INVALID, "sdeb"),
        ("SSID_a", 35, b"0409x", INVALID, "sdeb"),
        ("SSID_a", 40, b"X", INVALID, "send_receive"),
        ("SSID_a", 41, b"?", INVALID, "compression"),
        ("SSID_a", 44, b"000", INVALID, "credit"),
        ("SSID_a", 1, b"x", INVALID, "level"),
        ("SSID_a", 1, b"3", EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE, "level 3"),
        ("SSID_a", 1, b"6", EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE, "level 6"),
        ("SSID_a", 2, b"\xe9", INVALID, "code"),
        ("SSID_a", 2, b" " * 25, INVALID, "code"),
        ("EERP_hash", 107, b"\x15", SIZE, "signature length"),
        ("EERP_hash", 38, b"12304500x1", INVALID, "time"),
        ("NERP", 126, b"2x", INVALID, "reason"),
        ("NERP", 128, b"001", SIZE, "signature length"),
        ("EFID", 1, b"0000000000000000x", INVALID, "record_count"),
    ],
)
def test_field_errors_in_reference_vectors(
    name: str, at: int, new: bytes, reason: EsidReason, needle: str
) -> None:
    level = EXPECTED[name][0]
    with pytest.raises(DecodeError) as info:
        decode(_patch(name, at, new), level)
    assert info.value.reason == reason
    assert needle in str(info.value)


def test_ssid_too_short_or_too_long() -> None:
    with pytest.raises(DecodeError) as info:
        decode(VECTORS["SSID_a"][:50], V5)
    assert info.value.reason == SIZE
    with pytest.raises(DecodeError) as info:
        decode(VECTORS["SSID_a"] + b"EXTRA", V5)
    assert info.value.reason == SIZE


def test_decode_esid_and_decode_ssid_check_the_command_octet() -> None:
    with pytest.raises(DecodeError) as info:
        decode_esid(b"X03\r")
    assert info.value.reason == UNKNOWN
    with pytest.raises(DecodeError) as info:
        decode_ssid(b"F03\r")
    assert info.value.reason == UNKNOWN


# ---------------------------------------------------------------------------------------------------
# property-based round trips for every command at every level

_X_ALPHABET = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def _xtext(width: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    return (
        st.text(_X_ALPHABET, min_size=min_size, max_size=width)
        .map(lambda s: s.rstrip(" "))
        .filter(lambda s: len(s) >= min_size)
    )


def _digits(width: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from("0123456789"), min_size=width, max_size=width)


def _utf8(max_octets: int = 999) -> st.SearchStrategy[str]:
    return st.text(max_size=120).filter(lambda s: len(s.encode("utf-8")) <= max_octets)


def _commands(level: ProtocolLevel) -> st.SearchStrategy[Command]:
    v5 = level == V5
    wide = level >= V4
    count_max = 10**17 - 1 if v5 else 10**9 - 1
    date, time = (_digits(8), _digits(10)) if wide else (_digits(6), _digits(6))
    text = _utf8() if v5 else st.just("")
    blob = st.binary(max_size=300) if v5 else st.just(b"")
    ssid = st.builds(
        SSID,
        level=st.just(level),
        code=_xtext(25, min_size=1),
        password=_xtext(8),
        sdeb=st.integers(128, 99999),
        send_receive=st.sampled_from(SendReceive),
        compression=st.booleans(),
        restart=st.booleans(),
        special_logic=st.booleans(),
        credit=st.integers(1, 999),
        secure_auth=st.booleans() if v5 else st.just(False),
        user_data=_xtext(8),
    )
    sfid = st.builds(
        SFID,
        dsn=_xtext(26, min_size=1),
        date=date,
        time=time,
        destination=_xtext(25, min_size=1),
        originator=_xtext(25, min_size=1),
        format=st.sampled_from(RecordFormat),
        lrecl=st.integers(0, 99999),
        file_size=st.integers(0, 10**13 - 1 if v5 else 9_999_999),
        original_size=st.integers(0, 10**13 - 1) if v5 else st.just(0),
        restart=st.integers(0, count_max),
        user_data=_xtext(8),
        security=st.sampled_from(SecurityLevel) if v5 else st.just(SecurityLevel.NONE),
        cipher_suite=st.integers(0, 99) if v5 else st.just(0),
        compression=st.integers(0, 9) if v5 else st.just(0),
        envelope=st.integers(0, 9) if v5 else st.just(0),
        signed_eerp=st.booleans() if v5 else st.just(False),
        description=text,
    )
    eerp = st.builds(
        EERP,
        dsn=_xtext(26, min_size=1),
        date=date,
        time=time,
        destination=_xtext(25, min_size=1),
        originator=_xtext(25, min_size=1),
        user_data=_xtext(8),
        file_hash=blob,
        signature=blob,
    )
    options: list[st.SearchStrategy[Command]] = [
        st.builds(SSRM, message=_xtext(17)),
        ssid,
        sfid,
        st.builds(SFPA, accepted_restart=st.integers(0, count_max)),
        st.builds(SFNA, reason=st.integers(0, 99), retry=st.booleans(), text=text),
        st.builds(DATA, payload=st.binary(max_size=200)),
        st.just(CDT()),
        st.builds(
            EFID,
            record_count=st.integers(0, count_max),
            unit_count=st.integers(0, 10**17 - 1 if v5 else 10**12 - 1),
        ),
        st.builds(EFPA, change_direction=st.booleans()),
        st.builds(EFNA, reason=st.integers(0, 99), text=text),
        st.builds(ESID, reason=st.integers(0, 99), text=text),
        st.just(CD()),
        eerp,
        st.just(RTR()),
    ]
    if wide:
        options.append(
            st.builds(
                NERP,
                dsn=_xtext(26, min_size=1),
                date=date,
                time=time,
                destination=_xtext(25, min_size=1),
                originator=_xtext(25, min_size=1),
                creator=_xtext(25, min_size=1),
                reason=st.integers(0, 99),
                text=text,
                file_hash=blob,
                signature=blob,
            )
        )
    if v5:
        options += [
            st.just(SECD()),
            st.builds(AUCH, challenge=st.binary(max_size=700)),
            st.builds(AURP, response=st.binary(min_size=20, max_size=20)),
        ]
    return st.one_of(options)


@pytest.mark.parametrize("level", ALL_LEVELS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_round_trip_every_command(level: ProtocolLevel, data: st.DataObject) -> None:
    command = data.draw(_commands(level))
    raw = encode(command, level)
    assert raw[:1] == command.ident
    assert decode(raw, level) == command


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200), level=st.sampled_from(ALL_LEVELS))
def test_decode_never_fails_with_anything_but_a_decode_error(raw: bytes, level: ProtocolLevel) -> None:
    try:
        decode(raw, level)
    except DecodeError as exc:
        assert exc.reason in (UNKNOWN, INVALID, SIZE, EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), level=st.sampled_from(ALL_LEVELS))
def test_mutated_valid_buffers_give_a_command_or_a_decode_error(
    data: st.DataObject, level: ProtocolLevel
) -> None:
    raw = bytearray(encode(data.draw(_commands(level)), level))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(raw), level)
    except DecodeError:
        pass
