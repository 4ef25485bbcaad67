"""MkDocs hook: the reason-code tables of the troubleshooting page, generated from the enums.

A page writes ``<!-- oftp2:reason-codes esid -->`` (or ``sfna``, ``efna``, ``nerp``) where a table
belongs; at build time the marker becomes a table with one row per member of the matching enum in
``oftp2_provider.protocol.errors``.  The codes and member names come from the enums; the prose
(meaning, typical cause, what to do) comes from the dictionaries below.  A member without prose,
or prose for a member that no longer exists, stops the build, and ``tests/unit/test_docs.py``
checks the same, so the page cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from enum import IntEnum
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

_PROVIDER = Path(__file__).resolve().parents[2] / "provider"
if str(_PROVIDER) not in sys.path:
    sys.path.insert(0, str(_PROVIDER))

from oftp2_provider.protocol.errors import (  # noqa: E402
    EfnaReason,
    EsidReason,
    NerpReason,
    SfnaReason,
    nerp_for_refusal,
)

#: (meaning, typical cause, what to do) per enum member name.
Prose = dict[str, tuple[str, str, str]]

ESID: Prose = {
    "NORMAL": (
        "Normal session termination.",
        "The Speaker received an unsolicited CD and had nothing left to send.",
        "Nothing; this is how every good session ends.",
    ),
    "COMMAND_NOT_RECOGNISED": (
        "The first octet of an exchange buffer is not an OFTP command identifier.",
        "The peer does not speak OFTP on this port: plain TCP sent to the TLS port 6619 or TLS to "
        "the plain port 3305, a port scanner or health check, or a corrupted Stream Transmission Header.",
        "Check that both sides agree on port and TLS; look at the first octets in the session log.",
    ),
    "PROTOCOL_VIOLATION": (
        "A valid command arrived in a state where the protocol does not allow it.",
        "A peer that sends EFID while out of credit, DATA after its credit ran out, a restart offset "
        "without agreed restart, an SFPA answer count above the offered restart position, or CD straight "
        "back after an unsolicited CD.",
        "Compare the command trace with the state tables of RFC 5024 §9; check the credit and restart "
        "settings; report the trace to the partner's software vendor.",
    ),
    "USER_CODE_NOT_KNOWN": (
        "The SSIDCODE (Odette ID) in the peer's SSID is not a configured partner.",
        "A typo or stray characters in the Odette ID, a test system calling production (or the other "
        "way round), or a partner not configured yet.",
        "Compare the ID the peer sent (right-trimmed) with the partner directory; IDs are compared as "
        "complete strings.",
    ),
    "INVALID_PASSWORD": (
        "The SSIDPSWD in the peer's SSID is wrong.",
        "The two passwords swapped (each side sends its *own* password), case differences, or a password "
        "longer than the 8 characters the field holds.",
        "Confirm both passwords with the partner; keep them at most 8 printable ASCII characters.",
    ),
    "LOCAL_SITE_EMERGENCY_CLOSE_DOWN": (
        "The peer is shutting down.",
        "Maintenance or an operator stopping the peer's service.",
        "Retry later; transfers with restart resume where they stopped.",
    ),
    "COMMAND_CONTAINED_INVALID_DATA": (
        "A field of a command does not fit its format.",
        "Letters in a numeric field, SSIDSDEB outside 128–99 999, a credit of 0, a truncated DATA "
        "subrecord, or invalid UTF-8 in a text field.",
        "The log line names the command and field; fix the value at its source (usually the partner's "
        "configuration).",
    ),
    "EXCHANGE_BUFFER_SIZE_ERROR": (
        "The length of an exchange buffer is wrong.",
        "The Stream Transmission Header length does not match the command, or a DATA buffer is longer "
        "than the negotiated SSIDSDEB (some peers forget that SSIDSDEB counts the `D` octet).",
        "Check the partner's buffer size setting; as a workaround lower SSIDSDEB on our side.",
    ),
    "RESOURCES_NOT_AVAILABLE": (
        "The peer cannot take the session now.",
        "Too many concurrent sessions, a full disk, or a partner-side limit.",
        "Retry later with back-off; if it persists, ask the partner about their limits.",
    ),
    "TIME_OUT": (
        "An inactivity timer expired while an answer was awaited.",
        "A stalled peer, a firewall or NAT dropping an idle connection, a very slow link, or "
        "long-running processing in the middle of a session.",
        "Check the network path; raise the session timeout if the link is slow; move heavy "
        "processing out of the session.",
    ),
    "MODE_OR_CAPABILITIES_INCOMPATIBLE": (
        "The SSID negotiation failed.",
        "Both sides send-only or both receive-only (SSIDSR), an answer with a higher protocol level, "
        "buffer size or credit than was proposed, or an unsupported protocol level.",
        "Check the send/receive mode and protocol level configured for the partner.",
    ),
    "INVALID_CHALLENGE_RESPONSE": (
        "The AURP answer does not match the AUCH challenge (secure authentication, OFTP 2.0).",
        "The challenge was encrypted for an old or wrong certificate of the peer, or the peer decrypted "
        "it with another key.",
        "Exchange the current authentication certificates with the partner and update the directory.",
    ),
    "SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE": (
        "One side requires secure authentication (SSIDAUTH `Y`) and the other does not (OFTP 2.0).",
        "The setting is not negotiable: both sides must state the same value.",
        "Agree with the partner on secure authentication on or off, and configure both sides alike.",
    ),
    "UNSPECIFIED": (
        "Unspecified abort.",
        "Anything not covered by another code. This project's gateway also answers 99 at SSID when a "
        "partner with a pinned TLS client certificate connects over plain TCP, without a client "
        "certificate or with another one (the text names which).",
        "Read the ESID reason text (OFTP 2.0 carries one) and the peer's logs; for a `TLS client "
        "certificate` text, connect over TLS with the certificate registered with the partner.",
    ),
}

#: Shared by SFNA (refused at start) and EFNA (refused at end).
FILE_REFUSAL: Prose = {
    "INVALID_FILENAME": (
        "The virtual file name (SFIDDSN) is not accepted.",
        "A dataset name that was not agreed, or a missing mapping on the receiving side.",
        "Agree the dataset names with the partner; retry is worth it if the partner fixes a mapping.",
    ),
    "INVALID_DESTINATION": (
        "The destination (SFIDDEST) is unknown to the receiver.",
        "A wrong final-recipient Odette ID, or a clearing centre that has no route to it.",
        "Check the destination ID configured for the partner.",
    ),
    "INVALID_ORIGIN": (
        "The originator (SFIDORIG) is unknown or not allowed.",
        "Our Odette ID is not configured at the partner, or a different one was agreed.",
        "Check which originator ID the partner expects.",
    ),
    "RECORD_FORMAT_NOT_SUPPORTED": (
        "The record format (SFIDFMT F/V/U/T) is not supported.",
        "The partner only accepts the agreed format, usually `U` (unstructured).",
        "Send in the agreed format.",
    ),
    "MAXIMUM_RECORD_LENGTH_NOT_SUPPORTED": (
        "The maximum record length (SFIDLRECL) is too large.",
        "F or V files with records longer than the partner handles.",
        "Agree the record length, or send the file as `U`.",
    ),
    "FILE_SIZE_TOO_BIG": (
        "The file is larger than the receiver accepts.",
        "A quota or free-space limit on the receiving side.",
        "Ask the partner about the limit; split the file if that is acceptable.",
    ),
    "INVALID_RECORD_COUNT": (
        "The record count is wrong.",
        "At end of file: EFIDRCNT differs from the records received (F/V files), e.g. a broken restart.",
        "Resend the file from the start (restart position 0).",
    ),
    "INVALID_BYTE_COUNT": (
        "The octet count is wrong.",
        "At end of file: EFIDUCNT differs from the octets received, e.g. a file that changed while it "
        "was sent, or a restart from a wrong offset.",
        "Make sure the source file is complete and unchanged before sending; resend from the start.",
    ),
    "ACCESS_METHOD_FAILURE": (
        "The receiver cannot store the file.",
        "An I/O error, missing permissions or a full disk on the receiving side.",
        "Usually temporary: retry later, and tell the partner if it persists.",
    ),
    "DUPLICATE_FILE": (
        "The receiver already has this virtual file.",
        "The same dataset name, date and time (SFIDDSN/DATE/TIME) from the same originator was "
        "delivered before, e.g. a resend of a completed transfer.",
        "To send the content again, send it as a new virtual file (new date and time stamp).",
    ),
    "FILE_DIRECTION_REFUSED": (
        "The receiver does not accept files in this direction (OFTP 1.4 and later).",
        "The partner only sends to us, or receiving is disabled for this partner.",
        "Check the agreed direction of exchange.",
    ),
    "CIPHER_SUITE_NOT_SUPPORTED": (
        "The cipher suite (SFIDCIPH) is not supported (OFTP 2.0).",
        "A suite the partner has not enabled, e.g. a SHA-256 or SHA-512 suite (03–06) at a partner "
        "that only has the RFC suites 01 and 02.",
        "Agree a cipher suite and configure it for the partner.",
    ),
    "ENCRYPTED_FILE_NOT_ALLOWED": (
        "The receiver does not accept encrypted files (OFTP 2.0).",
        "File encryption switched on for a partner that relies on TLS only.",
        "Turn file encryption off for this partner, or agree to use it.",
    ),
    "UNENCRYPTED_FILE_NOT_ALLOWED": (
        "The receiver requires encrypted files (OFTP 2.0).",
        "File encryption is off for a partner whose policy requires it.",
        "Turn file encryption on with the partner's encryption certificate.",
    ),
    "COMPRESSION_NOT_ALLOWED": (
        "The receiver does not accept compressed files (OFTP 2.0 file compression, SFIDCOMP).",
        "ZLIB file compression switched on for a partner that does not support it.",
        "Turn file compression off for this partner.",
    ),
    "SIGNED_FILE_NOT_ALLOWED": (
        "The receiver does not accept signed files (OFTP 2.0).",
        "File signing switched on for a partner that does not support it.",
        "Turn file signing off for this partner.",
    ),
    "UNSIGNED_FILE_NOT_ALLOWED": (
        "The receiver requires signed files (OFTP 2.0).",
        "File signing is off for a partner whose policy requires it.",
        "Turn file signing on with our signing certificate, and make sure the partner has it.",
    ),
    "UNSPECIFIED": (
        "Unspecified reason.",
        "Anything not covered by another code.",
        "Read the reason text (OFTP 2.0 carries one) and ask the partner.",
    ),
}

#: SFNA wording where the shared text speaks of the end of the file.
SFNA_OVERRIDES: Prose = {
    "INVALID_RECORD_COUNT": (
        "The record count is wrong.",
        "Allowed in SFNA but normally seen in EFNA, where the record count of EFID is checked.",
        "Read the reason text; resend the file from the start.",
    ),
    "INVALID_BYTE_COUNT": (
        "The octet count is wrong.",
        "Allowed in SFNA but normally seen in EFNA, where the octet count of EFID is checked.",
        "Read the reason text; resend the file from the start.",
    ),
}

EFNA_ONLY: Prose = {
    "INVALID_FILE_SIGNATURE": (
        "The signature of the file does not verify (OFTP 2.0).",
        "The partner checks against an old or wrong signing certificate of ours, or the file was "
        "signed with a different key.",
        "Send the partner our current signing certificate; check the cipher suite's hash.",
    ),
    "FILE_DECRYPTION_FAILURE": (
        "The receiver cannot decrypt the file (OFTP 2.0).",
        "The file was encrypted for an old or wrong certificate of the partner, or with a content "
        "cipher the partner does not support.",
        "Get the partner's current encryption certificate; check the agreed cipher suite.",
    ),
    "FILE_DECOMPRESSION_FAILURE": (
        "The receiver cannot decompress the file (OFTP 2.0).",
        "A corrupted or non-ZLIB CompressedData layer.",
        "Check the sending side's compression; resend.",
    ),
}

NERP: Prose = {
    "ESID_USER_CODE_NOT_KNOWN": (
        "An intermediate node could not deliver onwards: the next partner ended its session with ESID 03.",
        "The clearing centre's onward configuration for the destination has a wrong Odette ID.",
        "Contact the clearing centre (VAN) that created the NERP (NERPCREA).",
    ),
    "ESID_INVALID_PASSWORD": (
        "An intermediate node could not deliver onwards: the next partner ended its session with ESID 04.",
        "The clearing centre's onward password for the destination is wrong.",
        "Contact the clearing centre that created the NERP.",
    ),
    "ESID_UNSPECIFIED": (
        "An intermediate node could not deliver onwards: the next partner ended its session with ESID 99.",
        "An unspecified failure between the clearing centre and the destination.",
        "Contact the clearing centre that created the NERP.",
    ),
    "FILE_SIGNATURE_NOT_VALID": (
        "The final recipient could not verify the file's signature.",
        "The recipient checks against an old or wrong signing certificate of ours.",
        "Send the recipient our current signing certificate, then send the file again.",
    ),
    "FILE_DECOMPRESSION_FAILED": (
        "The final recipient could not decompress the file.",
        "A corrupted or non-ZLIB CompressedData layer.",
        "Check the sending side's compression; send the file again.",
    ),
    "FILE_DECRYPTION_FAILED": (
        "The final recipient could not decrypt the file.",
        "The file was encrypted for an old or wrong certificate of the recipient.",
        "Get the recipient's current encryption certificate; send the file again.",
    ),
    "FILE_PROCESSING_FAILED": (
        "The final recipient received the file but could not process it.",
        "The recipient's application rejected the content (for example an EDI message that does not parse).",
        "Check the content with the recipient; this is not a transport problem.",
    ),
    "NOT_DELIVERED_TO_RECIPIENT": (
        "An intermediate node could not deliver the file to the recipient.",
        "The recipient did not connect or accept the file within the clearing centre's time limit.",
        "Ask the recipient or the clearing centre; send again once the recipient is reachable.",
    ),
    "NOT_ACKNOWLEDGED_BY_RECIPIENT": (
        "The file was delivered but the recipient never sent an EERP.",
        "The recipient's system does not send EERPs, or sends them too late for the clearing centre.",
        "Ask the recipient whether the file arrived and why no EERP was sent.",
    ),
    "TRANSMISSION_STOPPED_BY_OPERATOR": (
        "An operator stopped the transmission.",
        "A manual intervention at an intermediate node or the recipient.",
        "Ask the node named in NERPCREA.",
    ),
    "FILE_SIZE_INCOMPATIBLE_WITH_PROTOCOL_VERSION": (
        "The file is too large for the recipient's OFTP version.",
        "The onward link runs OFTP 1.x, whose size field holds at most 9 999 999 KiB.",
        "Split the file, or agree OFTP 2.0 on the whole path.",
    ),
    "UNSPECIFIED": (
        "Unspecified reason.",
        "Anything not covered by another code.",
        "Read the NERP reason text and ask the node named in NERPCREA.",
    ),
}

_REFUSAL_MIRROR_PREFIX = (
    "An intermediate node's next partner refused the file for good (SFNA/EFNA {code:02d}, retry N): "
)


def _nerp_prose() -> Prose:
    """NERP 11–30 mirror the final SFNA/EFNA codes 01–20 (code + 10); derive their prose from those."""
    prose = dict(NERP)
    for member in SfnaReason:
        if not 1 <= int(member) <= 20:
            continue
        nerp_code = nerp_for_refusal(int(member))
        try:
            nerp_member = NerpReason(nerp_code)
        except ValueError:
            continue
        meaning, cause, action = FILE_REFUSAL[member.name]
        first = meaning[0].lower() + meaning[1:]
        prose.setdefault(
            nerp_member.name,
            (_REFUSAL_MIRROR_PREFIX.format(code=int(member)) + first, cause, action),
        )
    return prose


#: Enum and prose per table kind.
TABLES: dict[str, tuple[type[IntEnum], Prose]] = {
    "esid": (EsidReason, ESID),
    "sfna": (SfnaReason, {**FILE_REFUSAL, **SFNA_OVERRIDES}),
    "efna": (EfnaReason, {**FILE_REFUSAL, **EFNA_ONLY}),
    "nerp": (NerpReason, _nerp_prose()),
}

#: A marker counts only alone on its line (so pages can show it in code).
_MARKER = re.compile(r"^[ \t]*<!--\s*oftp2:reason-codes\s+(\w+)\s*-->[ \t]*$", flags=re.M)


def sync_problems() -> list[str]:
    """Every mismatch between the enums and the prose; empty when they are in step."""
    problems: list[str] = []
    for kind, (enum, prose) in TABLES.items():
        names = {m.name for m in enum}
        for name in sorted(names - prose.keys()):
            problems.append(f"{enum.__name__}.{name} has no troubleshooting prose ({kind})")
        for name in sorted(prose.keys() - names):
            problems.append(f"troubleshooting prose for {kind} names {name}, which {enum.__name__} lacks")
    return problems


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(kind: str) -> str:
    """The Markdown table for one reason-code family (``esid``, ``sfna``, ``efna`` or ``nerp``)."""
    if kind not in TABLES:
        raise PluginError(f"unknown reason-code table {kind!r}; expected one of {sorted(TABLES)}")
    enum, prose = TABLES[kind]
    rows = [
        "| Code | Enum member | Meaning | Typical cause | What to do |",
        "|---|---|---|---|---|",
    ]
    for member in enum:
        if member.name not in prose:
            raise PluginError(f"{enum.__name__}.{member.name} has no troubleshooting prose")
        meaning, cause, action = prose[member.name]
        rows.append(
            f"| **{int(member):02d}** | `{enum.__name__}.{member.name}` | {_cell(meaning)} | "
            f"{_cell(cause)} | {_cell(action)} |"
        )
    return "\n".join(rows)


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Stop the build early if the prose and the enums are out of step."""
    problems = sync_problems()
    if problems:
        raise PluginError("reason-code tables out of step with errors.py:\n  " + "\n  ".join(problems))
    return config


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace every ``<!-- oftp2:reason-codes KIND -->`` line with its generated table."""
    return _MARKER.sub(lambda m: render_table(m.group(1)), markdown)
