"""Detectors for contact details on the ``base`` view: phone numbers, e-mail, street addresses,
IP addresses, links and handles.

Phone numbers are the expensive part (``phonenumbers``), so they are only looked at when the
message holds at least 7 digits once number words ("five five five") are turned into digits.
A digit run that ``phonenumbers`` accepts as a valid number in a likely region (or as
an international number) is *strong*; any other run of 7-15 digits is *weak* and only counts
next to a phone word ("call", "text me", "my number").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from .normalize import squeeze

# Regions tried for numbers written without a country code: with a leading trunk 0 (UK, Europe,
# Australia, India, ...) or without (North America, India mobiles).
TRUNK_REGIONS = ("GB", "DE", "FR", "AU", "IE", "NZ", "IN", "NL", "ES", "IT")
PLAIN_REGIONS = ("US", "IN")
PHONE_WORDS = frozenset(
    squeeze(w)
    for w in (
        "number", "num", "numba", "call", "text", "phone", "cell", "mobile", "digits",
        "whatsapp", "reach", "ring", "sms", "imessage", "telegram", "signal", "contact",
        "cellphone",
    )
)  # fmt: skip
STREET_WORDS = frozenset(
    squeeze(w)
    for w in (
        "street", "st", "avenue", "ave", "road", "rd", "lane", "ln", "drive", "dr", "boulevard",
        "blvd", "court", "ct", "way", "place", "pl", "terrace", "crescent", "close", "parkway",
        "pkwy", "highway", "hwy", "square", "sq",
    )
)  # fmt: skip
_ADDRESS_STOP = frozenset(
    "the a an my our your his her their down up on in at of to from across along this that "
    "every per blocks block minutes minute miles mile km times and or is was are for with by "
    "dogs cats cars houses people kids".split()
)

_ANY_DIGIT = re.compile(r"\d")
_NUMBER_WORD = re.compile(r"(?<![a-z])(zero|one|two|three|four|five|six|seven|eight|nine)(?![a-z])")
_NUMBER_VALUE = {
    w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())
}
# Same as r"\+?\d(?:...){6,17}", written to start with a character class (fast scan).
_DIGIT_RUN = re.compile(r"[+\d](?:(?<=\+)\d|(?<=\d))(?:[\s().,\-/]{0,3}\d){6,17}")
_DIGIT_BYTES = b"0123456789"
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}")
_MAIL_HOSTS = (
    r"(?:gmail|googlemail|hotmail|yahoo|outlook|icloud|aol|protonmail|proton|gmx|yandex|msn)"
)
_TLDS = r"(?:com|net|org|edu|gov|co|uk|de|fr|io|me|ca|au|us|info|biz|ru|in|nl|es|it)"
_AT = r"(?:\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+|\s*@\s*)"
_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\s*\.\s*)"
_EMAIL_SPELLED = re.compile(
    rf"(?<![a-z0-9._-])[a-z0-9._-]{{2,}}{_AT}(?:{_MAIL_HOSTS}(?:{_DOT}{_TLDS})?|[a-z0-9-]{{2,}}{_DOT}{_TLDS})(?![a-z0-9])"
)
# Starts with a plain digit class (not a lookbehind) so the regex engine scans for digits fast.
_ADDRESS = re.compile(
    r"\d(?<![\w.,:/-]\d)\d{0,4}[a-z]?,?\s+"
    # "a 6 hour drive", "20 min walk" are distances, not house numbers
    r"(?!(?:hour|hr|minute|min|second|sec|day|mile|km|kilometre|kilometer)s?\s)"
    r"((?:(?:[a-z][a-z'.-]*|\d{1,3}(?:st|nd|rd|th))\s+){1,3})"
    r"(?:street|st|avenue|ave|road|rd|"
    r"lane|ln|drive|dr|boulevard|blvd|court|ct|way|place|pl|terrace|crescent|close|parkway|pkwy|"
    r"highway|hwy|square|sq)(?![a-z])"
)
_DOT_WORD = re.compile(r"[a-z0-9]\.[a-z]|://")
_TLD_LIST = (
    "com|net|org|io|gg|me|co|ly|tv|app|xyz|info|link|to|be|us|uk|de|ru|fr|live|chat|site|"
    "online|club"
)
# A dot followed by a top-level domain; starts with a literal '.', which the engine scans fast.
_DOT_TLD = re.compile(rf"\.(?:{_TLD_LIST})(?![a-z0-9-])")
_MAIL_WORDS = frozenset(
    squeeze(w)
    for w in "gmail googlemail hotmail yahoo outlook icloud aol protonmail proton gmx yandex msn "
    "dot".split()
)
_IP = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_CONTACT_LINK = re.compile(
    r"(?:discord(?:app)?\.(?:gg|com/invite)|t\.me|telegram\.me|wa\.me|chat\.whatsapp\.com|"
    r"snapchat\.com/add|instagram\.com|kik\.me|tiktok\.com/@|facebook\.com|fb\.com|m\.me)/?[\w.@/-]*"
)
_LINK = re.compile(
    r"(?:https?://|www\.)\S+|(?<![\w@.-])[a-z0-9-]{2,}(?:\.[a-z0-9-]+)*\."
    rf"(?:{_TLD_LIST})(?:/\S*)?(?![\w-])"
)
# Literal '@' first, boundary after it: the engine jumps from '@' to '@' at C speed.
_HANDLE = re.compile(r"@(?<![\w.@]@)(?!\d{1,2}(?:am|pm|:)|\d+(?![a-z_.]))[a-z0-9_][a-z0-9_.]{2,}")
_TAG = re.compile(r"(?<![\w#])[a-z0-9_.]{2,}#\d{4}(?!\d)")


@dataclass(frozen=True, slots=True)
class Phone:
    digits: str
    strong: bool


def _number_value(m: re.Match[str]) -> str:
    return _NUMBER_VALUE[m.group()]


_NUMBER_TOKENS = frozenset(squeeze(w) for w in _NUMBER_VALUE)
_LEET_SYMBOLS = re.compile(r"[0-9@$|!]")  # what normalize's leetspeak pass starts from


def find_phone(base: str, tokens: frozenset[str] | None = None) -> Phone | None:
    """The first phone-number-like digit run (strong before weak), or None. ``tokens`` (the
    message's text-view tokens, if known) let a message without digits or number words out
    early: without digits or leetspeak symbols every number word of ``base`` is a token."""
    raw = base.encode("utf-8", "replace")
    count = len(raw) - len(raw.translate(None, _DIGIT_BYTES))
    if count < 7:
        if (
            tokens is not None
            and _NUMBER_TOKENS.isdisjoint(tokens)
            and _LEET_SYMBOLS.search(base) is None
        ):
            return None
        # Upper bound on number words by substring counts ("4one5" counts too): C-speed.
        words = sum(base.count(w) for w in _NUMBER_VALUE) if "e" in base or "o" in base else 0
        if count + words < 7:
            return None
        s = _NUMBER_WORD.sub(_number_value, base)
        raw = s.encode("utf-8", "replace")
        if len(raw) - len(raw.translate(None, _DIGIT_BYTES)) < 7:
            return None
    else:
        has_words = any(w in base for w in _NUMBER_VALUE)
        s = _NUMBER_WORD.sub(_number_value, base) if has_words else base
    weak = None
    for n, m in enumerate(_DIGIT_RUN.finditer(s)):
        if n == 8:  # bound the phonenumbers work a single message can cause
            break
        run = m.group()
        digits = "".join(filter(str.isdigit, run))
        if not 7 <= len(digits) <= 15:
            continue
        if _is_valid(run.startswith(("+", "00")), digits.removeprefix("00")):
            return Phone(digits, True)
        weak = weak or Phone(digits, False)
    return weak


@lru_cache(maxsize=4096)
def _is_valid(intl: bool, digits: str) -> bool:
    """Valid phone number per ``phonenumbers``; only tried where a number can be valid at all
    (10+ digits, or international), because each parse costs tens of microseconds."""
    regions: tuple[str | None, ...]
    if intl:
        number, regions = "+" + digits, (None,)
    elif len(digits) < 10:
        return False
    else:
        # A leading 0 is a trunk prefix (GB, DE, FR, AU, ...); otherwise try NANP and India.
        number = digits
        regions = TRUNK_REGIONS if digits.startswith("0") else PLAIN_REGIONS
    for region in regions:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return True
    return False


_EMAIL_LOCAL = "abcdefghijklmnopqrstuvwxyz0123456789._%+-"
_SPELLED_LOCAL = "abcdefghijklmnopqrstuvwxyz0123456789._-"
_AT_WORD = re.compile(r"at(?<![a-z]at)(?![a-z])")  # literal first: a fast scan
_AT_LEAD = " \t\n\r\f\v([{<"


def _anchored(pattern: re.Pattern[str], base: str, starts: list[int]) -> str | None:
    """``pattern.search(base)`` where every match must start at one of ``starts``: try those
    in order instead of letting the engine try every position (same first match)."""
    for p in sorted(set(starts)):
        m = pattern.match(base, p)
        if m:
            return m.group()
    return None


def _run_start(base: str, end: int, chars: str) -> int:
    """Start of the run of ``chars`` that ends at ``end`` (C-speed ``rstrip``)."""
    head = base[:end]
    return len(head.rstrip(chars))


def _at_positions(base: str) -> list[int]:
    out = []
    i = base.find("@")
    while i >= 0:
        out.append(i)
        i = base.find("@", i + 1)
    return out


def _spelled_starts(base: str, ats: list[int]) -> list[int]:
    """Where a spelled-out address ("jess at gmail dot com") can start: the run of local-part
    characters before each '@' or 'at' (and the brackets/spaces around it)."""
    starts = []
    for i in ats + [m.start() for m in _AT_WORD.finditer(base)]:
        j = len(base[:i].rstrip(_AT_LEAD))
        starts.append(_run_start(base, j, _SPELLED_LOCAL))
    return starts


def find_email(base: str, tokens: frozenset[str]) -> str | None:
    """E-mail addresses, plain or spelled out. The regexes are only tried where an address
    can start (before an '@' or an 'at'): same result as searching the whole message, without
    a scan that backtracks at every letter."""
    if "@" in base:
        ats = _at_positions(base)
        found = _anchored(_EMAIL, base, [_run_start(base, i, _EMAIL_LOCAL) for i in ats])
        return found or _anchored(_EMAIL_SPELLED, base, _spelled_starts(base, ats))
    if "at" in tokens and (not tokens.isdisjoint(_MAIL_WORDS) or _DOT_WORD.search(base)):
        return _anchored(_EMAIL_SPELLED, base, _spelled_starts(base, []))
    return None


def find_address(base: str, tokens: frozenset[str]) -> str | None:
    if tokens.isdisjoint(STREET_WORDS) or _ANY_DIGIT.search(base) is None:
        return None
    for m in _ADDRESS.finditer(base):
        if not _ADDRESS_STOP.intersection(m.group(1).split()):
            return m.group()
    return None


def find_ip(base: str) -> str | None:
    if base.count(".") < 3:
        return None
    m = _IP.search(base)
    return m.group() if m else None


def find_links(base: str, tokens: frozenset[str] | None = None) -> tuple[str | None, str | None]:
    """(contact link, other link): invite/profile links of chat apps, and any other URL."""
    if "." not in base:
        return None, None
    if "://" not in base and "www." not in base and _DOT_TLD.search(base) is None:
        return None, None
    m = _CONTACT_LINK.search(base)
    if m:
        return m.group(), None
    return None, _anchored(_LINK, base, _link_starts(base))


_HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-"


def _link_starts(base: str) -> list[int]:
    """Where a link can start: 'http'/'www.', or the start of the host-name run before a
    '.tld' (``_LINK`` needs a non-[\\w@.-] character before a bare host, so nothing inside
    that run can start one)."""
    starts = [len(base[: m.start()].rstrip(_HOST_CHARS)) for m in _DOT_TLD.finditer(base)]
    for lit in ("http", "www."):
        i = base.find(lit)
        while i >= 0:
            starts.append(i)
            i = base.find(lit, i + 1)
    return starts


def find_handle(base: str) -> str | None:
    if "@" in base:
        m = _HANDLE.search(base)
        if m:
            return m.group()
    if "#" in base:
        m = _TAG.search(base)
        if m:
            return m.group()
    return None


def third_party_pi(base: str, tokens: frozenset[str]) -> str | None:
    """Any contact detail at all, strong or weak: used to confirm a doxing marker."""
    phone = find_phone(base, tokens)
    if phone:
        return phone.digits
    return find_email(base, tokens) or find_address(base, tokens) or find_ip(base)


def own_pi(base: str, tokens: frozenset[str]) -> tuple[str, str] | None:
    """(category, evidence) for contact details a protected user must not share."""
    phone = find_phone(base, tokens)
    if phone and (phone.strong or not tokens.isdisjoint(PHONE_WORDS)):
        return "personal_info", phone.digits
    contact_link, link = find_links(base, tokens)
    found = (
        find_email(base, tokens) or contact_link or find_handle(base) or find_address(base, tokens)
    )
    if found:
        return "personal_info", found
    if link:
        return "link", link
    return None
