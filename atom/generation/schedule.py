"""Schedules in plain English -> a cron expression ("every Monday at 9am" -> ``0 9 * * 1``).

The cron is meant in the user's timezone; the caller pairs it with that zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAYS = {
    "monday": 1,
    "mon": 1,
    "tuesday": 2,
    "tue": 2,
    "tues": 2,
    "wednesday": 3,
    "wed": 3,
    "thursday": 4,
    "thu": 4,
    "thur": 4,
    "thurs": 4,
    "friday": 5,
    "fri": 5,
    "saturday": 6,
    "sat": 6,
    "sunday": 0,
    "sun": 0,
}
_DAY_NAMES = (
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tues?|wed|thu(?:rs?)?|fri"
)
_DAY = rf"\b(?:{_DAY_NAMES})s?\b"
_TIME = re.compile(
    r"\b(?:at|@|by|around|@ ?)?\s*(?P<h>[01]?\d|2[0-3])(?::(?P<m>[0-5]\d))?\s*"
    r"(?P<ap>a\.?m\.?|p\.?m\.?)?(?=\W|$)"
)
_PARTS_OF_DAY = {
    "noon": 12,
    "midday": 12,
    "midnight": 0,
    "morning": 9,
    "mornings": 9,
    "afternoon": 14,
    "afternoons": 14,
    "evening": 18,
    "evenings": 18,
    "night": 21,
    "nightly": 21,
    "tonight": 21,
    "end of day": 17,
    "end of the day": 17,
    "eod": 17,
    "start of day": 9,
    "lunchtime": 12,
}
_EVERY_N = re.compile(
    r"\bevery\s+(?P<n>\d+|other|two|three|four|five|six|ten|fifteen|thirty)\s+(?P<unit>min(?:ute)?s?|hours?|hrs?|days?|weeks?)\b"
)
_WORD_NUMBERS = {
    "other": 2,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "ten": 10,
    "fifteen": 15,
    "thirty": 30,
}
_MONTH_DAY = re.compile(
    r"\b(?:on\s+)?the\s+(?P<d>[12]?\d|3[01])(?:st|nd|rd|th)?\s+(?:day\s+)?of\s+(?:each|every|the)\s+month\b"
)
_RECURRING = re.compile(
    r"\b(?:every|each)\s+(?:other\s+|single\s+)?(?:\d+\s+|two\s+|three\s+|fifteen\s+|thirty\s+|ten\s+)?"
    r"(?:day|days|morning|week|weeks|month|months|hour|hours|hr|hrs|minute|minutes|min|mins|night|"
    r"evening|afternoon|weekday|weekend|business|work|year|quarter|half|" + _DAY + r")\b|"
    r"\b(?:daily|weekly|monthly|hourly|nightly|weekdays|weekends|quarterly|yearly|annually|"
    r"once a (?:day|week|month|year)|"
    r"twice a (?:day|week)|per day|mornings|evenings|afternoons|nights|(?:" + _DAY_NAMES + r")s)\b|"
    r"\b(?:on|every) (?:the )?(?:first|1st|last) (?:day )?of (?:the|each|every) month\b|"
    r"\bthe (?:[12]?\d|3[01])(?:st|nd|rd|th)? of (?:each|every) month\b"
)


@dataclass(frozen=True)
class Schedule:
    """A cron expression and the words it came from."""

    cron: str
    text: str
    firm: bool = True
    """False for a bare "daily"/"weekly" that may describe a service's own event
    ("your daily Fitbit summary") rather than a schedule."""


ZONES = {
    "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles", "pt": "America/Los_Angeles",
    "pacific": "America/Los_Angeles", "est": "America/New_York", "edt": "America/New_York",
    "et": "America/New_York", "eastern": "America/New_York", "cst": "America/Chicago",
    "cdt": "America/Chicago", "ct": "America/Chicago", "central": "America/Chicago",
    "mst": "America/Denver", "mdt": "America/Denver", "mountain": "America/Denver",
    "gmt": "Etc/UTC", "utc": "Etc/UTC", "bst": "Europe/London", "uk time": "Europe/London",
    "london time": "Europe/London", "cet": "Europe/Paris", "cest": "Europe/Paris",
    "paris time": "Europe/Paris", "berlin time": "Europe/Berlin", "ist": "Asia/Kolkata",
    "india time": "Asia/Kolkata", "jst": "Asia/Tokyo", "tokyo time": "Asia/Tokyo",
    "aest": "Australia/Sydney", "sydney time": "Australia/Sydney", "sgt": "Asia/Singapore",
}  # fmt: skip
_ZONE = re.compile(
    r"(?:\d\s*(?:am|pm)?|noon|midnight|morning|evening|night)\s*(?:\()?(?P<zone>"
    + "|".join(sorted((re.escape(z) for z in ZONES), key=len, reverse=True))
    + r")\b"
)


def timezone_of(text: str) -> str | None:
    """The IANA timezone a request names beside a time ("9am PST"), if any."""
    match = _ZONE.search(text.lower())
    return ZONES[match["zone"]] if match else None


def _hour_minute(text: str) -> tuple[int, int] | None:
    for match in _TIME.finditer(text):
        hour, minute, ap = (
            int(match["h"]),
            int(match["m"] or 0),
            (match["ap"] or "").replace(".", ""),
        )
        has_marker = (
            bool(ap)
            or match["m"] is not None
            or match.group(0).strip()[:2] in ("at", "by", "ar", "@")
        )
        if not has_marker:
            continue
        if ap == "pm" and hour < 12:
            hour += 12
        if ap == "am" and hour == 12:
            hour = 0
        return hour, minute
    for words, hour in _PARTS_OF_DAY.items():
        if re.search(rf"\b{words}\b", text):
            return hour, 0
    return None


def _days(text: str) -> str | None:
    if re.search(
        r"\bweekdays?\b|\bworkdays?\b|\bbusiness days?\b|monday (?:to|through|-) friday", text
    ):
        return "1-5"
    if re.search(r"\bweekends?\b", text):
        return "0,6"
    found = sorted(
        {
            DAYS[m] if m in DAYS else DAYS[m[:-1]]
            for m in re.findall(_DAY, text)
            if m in DAYS or m[:-1] in DAYS
        }
    )
    return ",".join(str(d) for d in found) if found else None


def _interval(text: str) -> str | None:
    match = _EVERY_N.search(text)
    if match:
        n = _WORD_NUMBERS.get(match["n"]) or int(match["n"])
        unit = match["unit"]
        if unit.startswith("min"):
            return f"*/{n} * * * *" if 0 < n < 60 else None
        if unit.startswith(("hour", "hr")):
            return f"0 */{n} * * *" if 0 < n < 24 else None
        if unit.startswith("day"):
            return f"0 9 */{n} * *" if 0 < n < 32 else None
        return None
    if re.search(r"\bevery minute\b", text):
        return "* * * * *"
    if re.search(r"\b(?:every|each) hour\b|\bhourly\b|\bonce an hour\b", text):
        return "0 * * * *"
    if re.search(r"\bevery (?:half hour|30 min)|\btwice an hour\b", text):
        return "*/30 * * * *"
    return None


def extract(text: str) -> Schedule | None:
    """The schedule a request states, or None when it states no recurring time."""
    lower = text.lower()
    if not _RECURRING.search(lower):
        return None
    firm = bool(_FIRM.search(lower))
    found = _extract(lower)
    return Schedule(found.cron, found.text, firm) if found else None


_FIRM = re.compile(
    r"\b(?:every|each|once a|twice a|per day)\b|\d\s*(?:am|pm|a\.m|p\.m)\b|\b(?:at|by) \d|"
    r"\b(?:noon|midnight|morning|evening|afternoon|night)s?\b|\bweekdays\b|\bweekends\b"
)


def _extract(lower: str) -> Schedule | None:
    interval = _interval(lower)
    if interval:
        return Schedule(interval, lower)
    at = _hour_minute(lower)
    hour, minute = at if at else (9, 0)
    month_day = _MONTH_DAY.search(lower)
    if month_day:
        return Schedule(f"{minute} {hour} {int(month_day['d'])} * *", lower)
    if re.search(
        r"\b(?:monthly|every month|each month|once a month|"
        r"first (?:day )?of (?:the|each|every) month)\b",
        lower,
    ):
        return Schedule(f"{minute} {hour} 1 * *", lower)
    if re.search(r"\b(?:quarterly|every quarter|each quarter)\b", lower):
        return Schedule(f"{minute} {hour} 1 */3 *", lower)
    if re.search(r"\b(?:yearly|annually|every year|each year|once a year)\b", lower):
        return Schedule(f"{minute} {hour} 1 1 *", lower)
    days = _days(lower)
    if days:
        return Schedule(f"{minute} {hour} * * {days}", lower)
    if re.search(r"\btwice a week\b", lower):
        return Schedule(f"{minute} {hour} * * 1,4", lower)
    if re.search(r"\b(?:weekly|every week|each week|once a week)\b", lower):
        return Schedule(f"{minute} {hour} * * 1", lower)
    if re.search(r"\btwice a day\b", lower):
        return Schedule(f"{minute} 9,17 * * *", lower)
    return Schedule(f"{minute} {hour} * * *", lower)
