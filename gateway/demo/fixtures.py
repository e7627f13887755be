"""Deterministic fixture data of the reference services: two tenants, built from seeded generators.

Every value comes from ``random.Random`` seeded with a string (seeding from a string is stable across
runs, platforms and ``PYTHONHASHSEED``) or from integer arithmetic. Records keep their *ages*, not
their dates: each timestamp is ``now`` minus an age fixed per record, with ``now`` taken once when
the services start (``FIXTURE_EPOCH``) or passed in (``build_fixtures(now)``, the injectable clock).
Ids and contents never depend on the clock; two builds at the same instant are byte-for-byte
identical, and builds at different instants differ only in their timestamps (and the card expiry
dates, which follow the payment's date). So the records meant to be within retention stay within it
and the ones meant to be past it stay past it, whatever the date: the old records listed in the
module constants below are past the retention rules that find them, every other record is recent.

No record's age lies just below a retention limit the policies or the tenant settings use
(``RETENTION_LIMITS_DAYS``): every age is either at least ``AGE_MARGIN_ABOVE_DAYS`` past a limit or
at least ``AGE_MARGIN_BELOW_DAYS`` short of it, so each record keeps its retention class for that many
days of uptime after the services started.

Names, addresses and numbers are invented: e-mail domains are RFC 2606 ``.example`` names (plus
``example.com`` for the opt-out address), phone numbers come from the fictional 555-01XX and Ofcom
drama ranges, IP addresses from the documentation ranges of RFC 5737 and RFC 3849, and card numbers
are the card networks' public test numbers (Luhn-valid, 16 digits).

Size: most of it is data (the demo's people, records and consents), kept as code so that every age is
computed from "now" when the fixtures are built.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT, TENANT_NAMES, TENANTS

JSONObject = dict[str, Any]
#: A clock: the current instant, timezone-aware.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock in UTC, to the second (fixture timestamps have no fractions)."""
    return datetime.now(UTC).replace(microsecond=0)


#: The instant this process's fixtures are stamped from by default: the wall clock when the services
#: start (this module is imported). Every record is an age before it; ``build_fixtures`` takes another.
FIXTURE_EPOCH = system_clock()
#: The address on every tenant's survey and marketing opt-out list (and one contact per tenant).
OPTOUT_EMAIL = "optout@example.com"

CONTACTS_PER_TENANT = 12
PAYMENTS_PER_TENANT = 12
CALLS_PER_TENANT = 10
EVENTS_PER_TENANT = 40
MESSAGES_PER_MAILBOX = 8
#: 1-based position of the opted-out contact in each tenant's contact list.
OPTOUT_CONTACT_NUMBER = 5
#: Calls of a recording tenant that were not recorded (1-based).
UNRECORDED_CALL_NUMBERS = (4, 9)

#: Every retention limit, in days, that the shipped policies (``age_days >= N``), the privacy manifests
#: (``retention_days``) and the fixture tenants' settings use (a limit of 0, "keep nothing", is always
#: reached and needs no margin). tests/demo/test_fixtures.py checks this list against those files.
RETENTION_LIMITS_DAYS = (183, 365, 760, 1095, 1825, 1826, 2555, 3650)
#: No age lies in ``[limit - AGE_MARGIN_BELOW_DAYS, limit + AGE_MARGIN_ABOVE_DAYS)`` days of a limit.
AGE_MARGIN_BELOW_DAYS = 45
AGE_MARGIN_ABOVE_DAYS = 2

DAY = 86400


def _age(days: int, seconds: int = 0) -> int:
    return days * DAY + seconds


#: Records with a fixed old age, in seconds (1-based number -> age; the comments give the dates they
#: had when the fixtures were stamped from 2026-10-01). Against the tenant settings and the packs:
#: payments 1-3 are past the customer's 7 years, payment 4 is past Aircall's 5-year billing retention
#: but within the customer's 7, call 1 is past the calls retention, call 2 keeps its metadata but its
#: recording and transcript are past theirs (3 years), survey 3's responses are past the 3-year
#: survey-response retention, the first 4 analytics events are past the analytics retention (760 days).
OLD_PAYMENT_AGES = {
    1: _age(3852, 52387),  # 2016-03-14T09:26:53Z
    2: _age(3254, 28490),  # 2017-11-02T16:05:10Z
    3: _age(2809, 44400),  # 2019-01-21T11:40:00Z
    4: _age(1878, 38658),  # 2021-08-09T13:15:42Z
}
OLD_CALL_AGES = {1: _age(3069, 49680), 2: _age(1293, 30575)}  # 2018-05-06T10:12:00Z, 2023-03-17T15:30:25Z
OLD_SURVEY_AGES = {3: _age(2008, 57600)}  # 2021-04-01T08:00:00Z
OLD_EVENT_AGES = (
    _age(1360, 57888),  # 2023-01-09T07:55:12Z
    _age(1360, 57800),  # 2023-01-09T07:56:40Z
    _age(1188, 10615),  # 2023-06-30T21:03:05Z
    _age(962, 43200),  # 2024-02-11T12:00:00Z
)
#: Analytics events between six months and a year old: past the 183 days statistics may use
#: (Aircall's 6-month statistics retention), within every other limit. The rest are at most
#: ``RECENT_EVENT_DAYS`` old. Sorted oldest first, the events are: the old ones, these, the recent ones.
MID_EVENT_COUNT = 6
MID_EVENT_DAYS = (200, 300)
RECENT_EVENT_DAYS = 120

RECORDING_SAMPLE_RATE = 8000
RECORDING_SAMPLES = 4000  # half a second: a short tone standing in for the call audio


@dataclass(frozen=True, slots=True)
class TenantProfile:
    id: str
    key: str  # one letter in every fixture id: "a" for the first tenant, "b" for the second
    name: str
    display_name: str
    domain: str
    country: str
    currency: str
    language: str
    call_recording_enabled: bool
    retention_days: dict[str, int]


PROFILES: dict[str, TenantProfile] = {
    CONTOSO_TENANT: TenantProfile(
        id=CONTOSO_TENANT,
        key="a",
        name=TENANT_NAMES[CONTOSO_TENANT],
        display_name="Contoso Ltd",
        domain="contoso.example",
        country="US",
        currency="USD",
        language="en-US",
        call_recording_enabled=True,
        retention_days={
            "contacts": 3650,
            "payments": 2555,
            "calls": 2555,
            "recordings": 1095,
            "transcripts": 1095,
            "survey_responses": 1095,
            "analytics_events": 760,
            "messages": 1825,
        },
    ),
    FABRIKAM_TENANT: TenantProfile(
        id=FABRIKAM_TENANT,
        key="b",
        name=TENANT_NAMES[FABRIKAM_TENANT],
        display_name="Fabrikam Ltd",
        domain="fabrikam.example",
        country="GB",
        currency="GBP",
        language="en-GB",
        call_recording_enabled=False,
        retention_days={
            "contacts": 3650,
            "payments": 2555,
            "calls": 2555,
            "recordings": 0,
            "transcripts": 0,
            "survey_responses": 1095,
            "analytics_events": 760,
            "messages": 1095,
        },
    ),
}

FIRST_NAMES = (
    "Amelia", "Rahul", "Sofia", "Kwame", "Mei", "Lukas", "Isabela", "Tariq", "Hannah", "Diego",
    "Aisha", "Mateo", "Ingrid", "Kenji", "Chloe", "Oluwaseun", "Priya", "Jonas", "Fatima", "Liam",
    "Noor", "Elena", "Samuel", "Yuki", "Zara", "Henrik", "Camila", "Arjun", "Grace", "Tomasz",
)  # fmt: skip
LAST_NAMES = (
    "Okafor", "Lindqvist", "Haddad", "Moreau", "Nakamura", "Fernandes", "Kowalski", "Brennan",
    "Achterberg", "Mensah", "Rossi", "Kaur", "Novak", "Whitfield", "Delgado", "Osei", "Schmidt",
    "Tanaka", "Dubois", "Farouk", "Eriksen", "Castillo", "Patel", "Murphy", "Ivanova", "Yilmaz",
)  # fmt: skip
COMPANIES = (
    "Northwind Traders", "Adventure Works", "Tailspin Toys", "Wide World Importers", "Litware",
    "Proseware", "Fourth Coffee", "Woodgrove Bank", "Alpine Ski House", "Coho Winery",
    "Lucerne Publishing", "Margie's Travel", "Trey Research", "Blue Yonder Airlines",
)  # fmt: skip
STREETS = ("Maple", "Harbour", "Station", "Mill", "Church", "Orchard", "Victoria", "Cedar", "Park", "Bridge")
US_CITIES = (
    ("Seattle", "WA", "98101"), ("Portland", "OR", "97205"), ("Denver", "CO", "80202"),
    ("Austin", "TX", "78701"), ("Chicago", "IL", "60601"), ("Boston", "MA", "02108"),
)  # fmt: skip
GB_CITIES = (
    ("London", "EC1A 1BB"), ("Manchester", "M1 1AE"), ("Leeds", "LS1 4AP"),
    ("Bristol", "BS1 4DJ"), ("Edinburgh", "EH1 1YZ"), ("Cardiff", "CF10 1EP"),
)  # fmt: skip
# Public test numbers of the card networks: 16 digits, Luhn-valid, never chargeable.
TEST_CARD_NUMBERS = (
    "4111111111111111", "4242424242424242", "4012888888881881", "5555555555554444",
    "5105105105105100", "4000056655665556", "5200828282828210", "2223003122003222",
    "6011111111111117", "3566002020360505",
)  # fmt: skip
PAGES = (
    "/", "/pricing", "/docs/getting-started", "/docs/api", "/blog/privacy-by-design", "/account",
    "/account/billing", "/support", "/search", "/signin",
)  # fmt: skip
EVENT_TYPES = ("page_view", "page_view", "page_view", "click", "search", "sign_in")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.0 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.0 Mobile/15E148 Safari/604.1",
)
REFERRERS = (
    None,
    "https://www.bing.com/search?q=privacy+gateway",
    "https://www.google.com/",
    "https://news.example/articles/data-protection",
    "https://www.linkedin.com/",
)
SURVEYS = (
    ("Customer satisfaction", "How satisfied are you with our support?", "support"),
    ("Product feedback", "How likely are you to recommend us to a colleague?", "product"),
    ("Onboarding experience", "How easy was it to get started?", "onboarding"),
)
CHANNELS = ("email", "phone", "chat", "web")
FREE_TEXT_ANSWERS = (
    "The agent was very helpful, thanks!",
    "Please call me back on {phone}, nobody answered my last ticket.",
    "Billing was confusing; my card ending {last4} was charged twice.",
    "Great service overall.",
    "I moved house, my new address is {address}.",
    "",
    "Faster response times would help.",
    "Contact me at {email} if you want more details.",
)


def luhn_valid(number: str) -> bool:
    """True when ``number`` is all digits and passes the Luhn checksum."""
    if not number.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rng(tenant_id: str, kind: str) -> random.Random:
    return random.Random(f"{tenant_id}:{kind}")


def clear_of_limits(age: int) -> int:
    """``age`` (seconds), moved below any retention limit it lies just short of or just past.

    An age in ``[limit - AGE_MARGIN_BELOW_DAYS, limit + AGE_MARGIN_ABOVE_DAYS)`` days moves down by the
    width of that window, again if that lands it in a neighbouring limit's window (1825 and 1826).
    """
    width = (AGE_MARGIN_BELOW_DAYS + AGE_MARGIN_ABOVE_DAYS) * DAY
    for _ in range(len(RETENTION_LIMITS_DAYS) + 1):
        near = [
            limit
            for limit in RETENTION_LIMITS_DAYS
            if (limit - AGE_MARGIN_BELOW_DAYS) * DAY <= age < (limit + AGE_MARGIN_ABOVE_DAYS) * DAY
        ]
        if not near:
            return age
        age -= width
    raise AssertionError(f"no age clear of the retention limits below {age}s")


def _recent(rng: random.Random, max_age_days: int = 300) -> int:
    """A recent record's age in seconds: between an hour and ``max_age_days``, clear of the limits."""
    return clear_of_limits(rng.randrange(3600, max_age_days * DAY))


def _stamp(now: datetime, age: int) -> str:
    return rfc3339(now - timedelta(seconds=age))


def _seeded_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _people(rng: random.Random, count: int) -> list[tuple[str, str]]:
    pairs = [(first, last) for first in FIRST_NAMES for last in LAST_NAMES]
    return rng.sample(pairs, count)


def _phone(profile: TenantProfile, number: int) -> str:
    if profile.country == "GB":
        return f"+447700900{number:03d}"
    return f"+1206555{100 + number % 100:04d}"


def _address(profile: TenantProfile, rng: random.Random) -> JSONObject:
    line1 = f"{rng.randint(1, 240)} {rng.choice(STREETS)} {'Road' if profile.country == 'GB' else 'Street'}"
    if profile.country == "GB":
        city, postcode = rng.choice(GB_CITIES)
        return {"line1": line1, "city": city, "postal_code": postcode, "country": "GB"}
    us_city, state, zip_code = rng.choice(US_CITIES)
    return {"line1": line1, "city": us_city, "region": state, "postal_code": zip_code, "country": "US"}


def _card_of(contact: JSONObject, payments: tuple[JSONObject, ...]) -> str:
    """The card of the contact's first payment (a default test number for a contact who never paid)."""
    cards = [str(p["card_number"]) for p in payments if p["contact_id"] == contact["id"]]
    return cards[0] if cards else TEST_CARD_NUMBERS[0]


def _one_line(address: JSONObject) -> str:
    return ", ".join(str(address[key]) for key in ("line1", "city", "postal_code"))


@dataclass(frozen=True, slots=True)
class TenantFixtures:
    """Everything one tenant's services serve; JSON-ready values, ordered as the list routes list them."""

    settings: JSONObject
    contacts: tuple[JSONObject, ...]
    payments: tuple[JSONObject, ...]
    calls: tuple[JSONObject, ...]
    recordings: dict[str, bytes]
    transcripts: dict[str, JSONObject]
    surveys: tuple[JSONObject, ...]
    responses: dict[str, tuple[JSONObject, ...]]
    results: dict[str, JSONObject]
    optouts: tuple[str, ...]
    events: tuple[JSONObject, ...]


def _settings(profile: TenantProfile) -> JSONObject:
    return {
        "id": profile.id,
        "name": profile.name,
        "display_name": profile.display_name,
        "domain": profile.domain,
        "country": profile.country,
        "currency": profile.currency,
        "call_recording_enabled": profile.call_recording_enabled,
        "retention_days": dict(profile.retention_days),
    }


def _contacts(profile: TenantProfile, now: datetime) -> tuple[JSONObject, ...]:
    rng = _rng(profile.id, "contacts")
    contacts = []
    for number, (first, last) in enumerate(_people(rng, CONTACTS_PER_TENANT), start=1):
        company = rng.choice(COMPANIES)
        opted_out = number == OPTOUT_CONTACT_NUMBER
        email = OPTOUT_EMAIL if opted_out else f"{first}.{last}@{_slug(company)}.example".lower()
        contacts.append(
            {
                "id": f"ct-{profile.key}-{number:03d}",
                "name": f"{first} {last}",
                "email": email,
                "phone": _phone(profile, number),
                "company": company,
                "marketing_opt_out": opted_out,
                "created_at": _stamp(now, _recent(rng, 1500)),
            }
        )
    return tuple(contacts)


def _payments(profile: TenantProfile, contacts: tuple[JSONObject, ...], now: datetime) -> tuple[JSONObject, ...]:
    rng = _rng(profile.id, "payments")
    payments = []
    for number in range(1, PAYMENTS_PER_TENANT + 1):
        contact = rng.choice(contacts)
        created_at = _stamp(now, OLD_PAYMENT_AGES.get(number) or _recent(rng))
        created = parse_rfc3339(created_at)
        expiry_year = (created.year + rng.randint(1, 4)) % 100
        card_number = rng.choice(TEST_CARD_NUMBERS)
        if not luhn_valid(card_number):
            raise AssertionError(f"fixture card number {card_number} fails the Luhn check")
        payments.append(
            {
                "id": f"pay-{profile.key}-{number:03d}",
                "contact_id": contact["id"],
                "cardholder": contact["name"],
                "card_number": card_number,
                "expiry": f"{rng.randint(1, 12):02d}/{expiry_year:02d}",
                "billing_address": _address(profile, rng),
                "amount": rng.randrange(500, 250_000) / 100,
                "currency": profile.currency,
                "description": f"Invoice INV-{rng.randrange(1000, 9999)}",
                "status": rng.choice(("captured", "captured", "captured", "refunded")),
                "created_at": created_at,
            }
        )
    return tuple(payments)


def _calls(profile: TenantProfile, contacts: tuple[JSONObject, ...], now: datetime) -> tuple[JSONObject, ...]:
    rng = _rng(profile.id, "calls")
    agents = [(f"{first} {last}", _seeded_uuid(rng)) for first, last in _people(rng, 3)]
    line = _phone(profile, 0)
    calls = []
    for number in range(1, CALLS_PER_TENANT + 1):
        contact = rng.choice(contacts)
        agent_name, agent_id = rng.choice(agents)
        inbound = rng.random() < 0.7
        started_at = _stamp(now, OLD_CALL_AGES.get(number) or _recent(rng))
        recorded = profile.call_recording_enabled and number not in UNRECORDED_CALL_NUMBERS
        calls.append(
            {
                "id": f"call-{profile.key}-{number:03d}",
                "contact_id": contact["id"],
                "direction": "inbound" if inbound else "outbound",
                "from": contact["phone"] if inbound else line,
                "to": line if inbound else contact["phone"],
                "agent": agent_name,
                "agent_id": agent_id,
                "started_at": started_at,
                "duration_s": rng.randrange(45, 1800),
                "has_recording": recorded,
                "created_at": started_at,
            }
        )
    return tuple(calls)


def wav_bytes(seed: str) -> bytes:
    """A short mono 16-bit PCM WAV file: a triangle tone whose pitch comes from ``seed``.

    Integer arithmetic only, so the bytes are the same on every platform.
    """
    rng = random.Random(seed)
    period = RECORDING_SAMPLE_RATE // rng.randrange(220, 880)
    half = period // 2 or 1
    amplitude = 8000
    samples = []
    for index in range(RECORDING_SAMPLES):
        phase = index % period
        ramp = phase if phase < half else period - phase
        samples.append(amplitude * (2 * ramp - half) // half)
    data = struct.pack(f"<{RECORDING_SAMPLES}h", *samples)
    bytes_per_second = RECORDING_SAMPLE_RATE * 2
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RECORDING_SAMPLE_RATE, bytes_per_second, 2, 16)
    return header + fmt + b"data" + struct.pack("<I", len(data)) + data


def _transcript(profile: TenantProfile, call: JSONObject, contact: JSONObject, card: str) -> JSONObject:
    rng = _rng(profile.id, f"transcript:{call['id']}")
    first_name = contact["name"].split()[0]
    lines = (
        ("agent", f"Thank you for calling {profile.display_name}, my name is {call['agent'].split()[0]}."),
        ("customer", f"Hi, this is {contact['name']}. I have a question about my last invoice."),
        ("agent", f"Of course, {first_name}. Can you confirm the e-mail address on the account?"),
        ("customer", f"Sure, it's {contact['email']}, and my phone number is {contact['phone']}."),
        ("agent", "Thanks. I can see a payment, which card did you use?"),
        ("customer", f"The card ending in {card[-4:]}."),
        ("agent", rng.choice(("I have issued a refund.", "I have corrected the invoice.", "That is fixed."))),
        ("customer", "Great, thank you for your help."),
    )
    segments: list[JSONObject] = []
    clock = 0.0
    for speaker, text in lines:
        length = round(2.0 + rng.random() * 6.0, 1)
        start, end = round(clock, 1), round(clock + length, 1)
        segments.append({"speaker": speaker, "start_s": start, "end_s": end, "text": text})
        clock += length + 0.4
    return {
        "call_id": call["id"],
        "language": profile.language,
        "text": " ".join(segment["text"] for segment in segments),
        "segments": segments,
    }


def _surveys(
    profile: TenantProfile, contacts: tuple[JSONObject, ...], payments: tuple[JSONObject, ...], now: datetime
) -> tuple[tuple[JSONObject, ...], dict[str, tuple[JSONObject, ...]], dict[str, JSONObject]]:
    rng = _rng(profile.id, "surveys")
    surveys, responses, results = [], {}, {}
    for number, (title, rating_question, topic) in enumerate(SURVEYS, start=1):
        survey_id = f"sv-{profile.key}-{number:03d}"
        survey_age = OLD_SURVEY_AGES.get(number) or _recent(rng)
        created_at = _stamp(now, survey_age)
        questions = [
            {"id": "q1", "type": "rating", "text": rating_question, "scale": [1, 5]},
            {"id": "q2", "type": "choice", "text": "How did you contact us?", "options": list(CHANNELS)},
            {"id": "q3", "type": "text", "text": "Anything else you would like to tell us?"},
        ]
        surveys.append(
            {"id": survey_id, "title": f"{title} ({topic})", "created_at": created_at, "questions": questions}
        )
        survey_responses = []
        respondents = rng.sample(contacts, rng.randrange(6, 10))
        for index, contact in enumerate(respondents, start=1):
            text = rng.choice(FREE_TEXT_ANSWERS).format(
                phone=contact["phone"],
                email=contact["email"],
                last4=_card_of(contact, payments)[-4:],
                address=_one_line(_address(profile, rng)),
            )
            # submitted within 20 days of the survey's creation, and never after now
            after = rng.randrange(3600, 20 * DAY)
            response_age = clear_of_limits(max(survey_age - after, survey_age // 2))
            survey_responses.append(
                {
                    "id": f"resp-{profile.key}-{number:03d}-{index:02d}",
                    "contact_id": contact["id"],
                    "respondent_name": contact["name"],
                    "respondent_email": contact["email"],
                    "submitted_at": _stamp(now, response_age),
                    "answers": [
                        {"question_id": "q1", "value": rng.randint(1, 5)},
                        {"question_id": "q2", "value": rng.choice(CHANNELS)},
                        {"question_id": "q3", "value": text},
                    ],
                }
            )
        responses[survey_id] = tuple(survey_responses)
        results[survey_id] = _aggregate(survey_id, surveys[-1], survey_responses)
    return tuple(surveys), responses, results


def _aggregate(survey_id: str, survey: JSONObject, responses: list[JSONObject]) -> JSONObject:
    """Counts and means only: no respondent, no free text."""
    answers: dict[str, list[Any]] = {}
    for response in responses:
        for answer in response["answers"]:
            answers.setdefault(answer["question_id"], []).append(answer["value"])
    questions = []
    for question in survey["questions"]:
        values = answers.get(question["id"], [])
        summary: JSONObject = {"id": question["id"], "type": question["type"], "text": question["text"]}
        if question["type"] == "rating":
            summary["count"] = len(values)
            summary["mean"] = round(sum(values) / len(values), 2) if values else None
            summary["distribution"] = {str(score): values.count(score) for score in range(1, 6)}
        elif question["type"] == "choice":
            summary["count"] = len(values)
            summary["counts"] = {option: values.count(option) for option in question["options"]}
        else:
            summary["count"] = sum(1 for value in values if value)
        questions.append(summary)
    return {
        "survey_id": survey_id,
        "title": survey["title"],
        "response_count": len(responses),
        "questions": questions,
    }


def _events(profile: TenantProfile, now: datetime) -> tuple[JSONObject, ...]:
    rng = _rng(profile.id, "events")
    users = [_seeded_uuid(rng) for _ in range(6)]
    ips = ["192.0.2.17", "198.51.100.42", "203.0.113.9", "2001:db8::7", "198.51.100.203", "2001:db8:4::1"]
    low, high = MID_EVENT_DAYS
    mid = [clear_of_limits(rng.randrange(low * DAY, high * DAY)) for _ in range(MID_EVENT_COUNT)]
    recent_count = EVENTS_PER_TENANT - len(OLD_EVENT_AGES) - MID_EVENT_COUNT
    recent = [_recent(rng, RECENT_EVENT_DAYS) for _ in range(recent_count)]
    ages = sorted([*OLD_EVENT_AGES, *mid, *recent], reverse=True)  # oldest first
    events = []
    for number, age in enumerate(ages, start=1):
        user = rng.randrange(len(users))
        # one session per user and day of age: the same on any date
        session = hashlib.sha256(f"{profile.id}:{user}:{age // DAY}".encode()).hexdigest()[:16]
        events.append(
            {
                "id": f"evt-{profile.key}-{number:04d}",
                "type": rng.choice(EVENT_TYPES),
                "user_id": users[user],
                "session_id": session,
                "ip": ips[user],
                "page": rng.choice(PAGES),
                "user_agent": USER_AGENTS[user % len(USER_AGENTS)],
                "referrer": rng.choice(REFERRERS),
                "timestamp": _stamp(now, age),
            }
        )
    return tuple(events)


def build_tenant(tenant_id: str, now: datetime | None = None) -> TenantFixtures:
    """One tenant's fixtures, every record an age before ``now`` (default: ``FIXTURE_EPOCH``)."""
    now = fixture_instant(now)
    profile = PROFILES[tenant_id]
    contacts = _contacts(profile, now)
    payments = _payments(profile, contacts, now)
    calls = _calls(profile, contacts, now)
    by_id = {contact["id"]: contact for contact in contacts}
    recordings: dict[str, bytes] = {}
    transcripts: dict[str, JSONObject] = {}
    for call in calls:
        if call["has_recording"]:
            contact = by_id[call["contact_id"]]
            card = _card_of(contact, payments)
            recordings[call["id"]] = wav_bytes(f"{tenant_id}:recording:{call['id']}")
            transcripts[call["id"]] = _transcript(profile, call, contact, card)
    surveys, responses, results = _surveys(profile, contacts, payments, now)
    optouts = tuple(sorted({c["email"] for c in contacts if c["marketing_opt_out"]} | {OPTOUT_EMAIL}))
    return TenantFixtures(
        settings=_settings(profile),
        contacts=contacts,
        payments=payments,
        calls=calls,
        recordings=recordings,
        transcripts=transcripts,
        surveys=surveys,
        responses=responses,
        results=results,
        optouts=optouts,
        events=_events(profile, now),
    )


def fixture_instant(now: datetime | None) -> datetime:
    """``now`` in UTC to the second (``FIXTURE_EPOCH`` for ``None``); a naive datetime is an error."""
    if now is None:
        return FIXTURE_EPOCH
    if now.tzinfo is None:
        raise ValueError("the fixture clock must be timezone-aware")
    return now.astimezone(UTC).replace(microsecond=0)


def build_fixtures(now: datetime | None = None) -> dict[str, TenantFixtures]:
    """All tenants' fixtures at ``now`` (default: ``FIXTURE_EPOCH``), in the order of ``TENANTS``."""
    instant = fixture_instant(now)
    return {tenant_id: build_tenant(tenant_id, instant) for tenant_id in TENANTS}


@lru_cache(maxsize=8)
def _cached_fixtures(now: datetime) -> dict[str, TenantFixtures]:
    return build_fixtures(now)


def load_fixtures(now: datetime | None = None) -> dict[str, TenantFixtures]:
    """``build_fixtures(now)``, built once per instant and process (a few milliseconds); do not mutate."""
    return _cached_fixtures(fixture_instant(now))


# --- Gmail-shaped mailboxes ------------------------------------------------------------------------

MAIL_TEMPLATES = (
    ("Invoice {invoice} is overdue", "contact", ["INBOX", "UNREAD", "IMPORTANT"],
     "Hi {user_first},\n\nour records show that invoice {invoice} for {amount} is still open. "
     "Could you check with accounts payable? You can reach me on {contact_phone}.\n\nBest,\n{contact_name}"),
    ("Re: Invoice {invoice} is overdue", "user", ["SENT"],
     "Hi {contact_first},\n\nthanks for the reminder, it will be paid this week.\n\n{user_name}"),
    ("Team offsite: dietary requirements", "colleague", ["INBOX", "CATEGORY_PERSONAL"],
     "Hi all,\n\nplease send me your dietary requirements and an emergency contact number "
     "before Friday.\n\nThanks,\n{colleague_name}"),
    ("Your password was changed", "security", ["INBOX", "UNREAD"],
     "The password of {user_email} was changed from IP address 203.0.113.77. "
     "If this was not you, contact the service desk immediately."),
    ("Contract renewal for {company}", "contact", ["INBOX", "IMPORTANT"],
     "Hello {user_first},\n\nattached is the renewal proposal for {company}. The billing address "
     "stays {address}.\n\nRegards,\n{contact_name}"),
    ("Lunch on Friday?", "colleague", ["INBOX", "CATEGORY_PERSONAL"],
     "Fancy lunch on Friday? My treat, I owe you one.\n\n{colleague_first}"),
    ("Interview feedback: {candidate}", "colleague", ["INBOX", "UNREAD"],
     "Confidential: my feedback on {candidate} is below. Strong technically, salary expectation "
     "{salary} per year.\n\n{colleague_name}"),
    ("Q3 numbers (confidential)", "colleague", ["INBOX"],
     "Draft Q3 revenue is {amount}, please do not forward outside the leadership team.\n\n{colleague_name}"),
)  # fmt: skip


def gmail_message_id(tenant_id: str, user_id: str, index: int) -> str:
    return hashlib.sha256(f"{tenant_id}:{user_id}:{index}".encode()).hexdigest()[:16]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def mailbox(tenant_id: str, user_id: str, now: datetime | None = None) -> tuple[JSONObject, ...]:
    """The Gmail ``users.messages`` resources of ``user_id`` in ``tenant_id``, newest first.

    Any user id gets a mailbox: its content is derived from the tenant's contacts and a hash of the
    pair, so the same pair always gives the same messages and ids, and other pairs other ones; the
    messages are up to 120 days older than ``now`` (default: ``FIXTURE_EPOCH``).
    """
    instant = fixture_instant(now)
    profile = PROFILES[tenant_id]
    contacts = load_fixtures(instant)[tenant_id].contacts
    rng = _rng(tenant_id, f"mailbox:{user_id}")
    (user_first, user_last), (colleague_first, colleague_last), (cand_first, cand_last) = _people(rng, 3)
    user_email = f"{user_first}.{user_last}@{profile.domain}".lower()
    colleague_email = f"{colleague_first}.{colleague_last}@{profile.domain}".lower()
    contact = rng.choice([c for c in contacts if not c["marketing_opt_out"]])
    values = {
        "user_first": user_first,
        "user_name": f"{user_first} {user_last}",
        "user_email": user_email,
        "colleague_first": colleague_first,
        "colleague_name": f"{colleague_first} {colleague_last}",
        "contact_first": contact["name"].split()[0],
        "contact_name": contact["name"],
        "contact_phone": contact["phone"],
        "company": contact["company"],
        "candidate": f"{cand_first} {cand_last}",
        "salary": f"{profile.currency} {rng.randrange(60, 140) * 1000:,}",
        "invoice": f"INV-{rng.randrange(1000, 9999)}",
        "amount": f"{profile.currency} {rng.randrange(1_000, 900_000) / 100:,.2f}",
        "address": _one_line(_address(profile, rng)),
    }
    senders = {
        "contact": f"{contact['name']} <{contact['email']}>",
        "user": f"{values['user_name']} <{user_email}>",
        "colleague": f"{values['colleague_name']} <{colleague_email}>",
        "security": f"Security <security@{profile.domain}>",
    }
    instants = sorted(
        (instant - timedelta(seconds=rng.randrange(3600, 120 * DAY)) for _ in MAIL_TEMPLATES),
        reverse=True,
    )
    messages = []
    first_id = gmail_message_id(tenant_id, user_id, 0)
    for index, (template, instant) in enumerate(zip(MAIL_TEMPLATES, instants, strict=True)):
        subject, sender, labels, body = template
        message_id = gmail_message_id(tenant_id, user_id, index)
        recipient = senders["contact"] if sender == "user" else senders["user"]
        text = body.format(**values)
        mime = _mime_message(
            [
                ("From", senders[sender]),
                ("To", recipient),
                ("Subject", subject.format(**values)),
                ("Date", format_datetime(instant)),
                ("Message-ID", f"<{message_id}@{profile.domain}>"),
            ],
            text,
        )
        # Gmail's payload.headers are every header of the message, as the raw form carries them
        headers = [{"name": name, "value": str(value)} for name, value in mime.items()]
        encoded = text.encode()
        messages.append(
            {
                "id": message_id,
                # The reply (index 1) continues the thread of the first message.
                "threadId": first_id if index == 1 else message_id,
                "labelIds": list(labels),
                "snippet": " ".join(text.split())[:100],
                "historyId": str(100_000 + index),
                "internalDate": str(int(instant.timestamp()) * 1000),
                "payload": {
                    "partId": "",
                    "mimeType": "text/plain",
                    "filename": "",
                    "headers": headers,
                    "body": {"size": len(encoded), "data": _b64url(encoded)},
                },
                "sizeEstimate": len(mime.as_bytes()),
            }
        )
    return tuple(messages)


def _mime_message(headers: list[tuple[str, str]], text: str) -> EmailMessage:
    mime = EmailMessage(policy=SMTP)
    for name, value in headers:
        mime[name] = value
    mime.set_content(text, charset="utf-8")
    return mime


_MIME_HEADERS = frozenset({"mime-version", "content-type", "content-transfer-encoding"})


def gmail_raw(message: JSONObject) -> bytes:
    """The RFC 5322 message a fixture ``users.messages`` resource stands for: what Gmail's
    ``format=raw`` carries (base64url-encoded), built again from its headers and body, CRLF endings."""
    payload = message["payload"]
    text = base64.urlsafe_b64decode(payload["body"]["data"]).decode()
    headers = [(h["name"], h["value"]) for h in payload["headers"] if h["name"].lower() not in _MIME_HEADERS]
    return _mime_message(headers, text).as_bytes()
