"""Classify an error text (a step's error, or a line of a user's own log) into a category.

Weighted patterns, not a model: each category has patterns that recognise how the common
clients, servers and platforms phrase that failure (Python, Node, Go and Java clients,
nginx/Envoy, cloud SDKs, PostgreSQL/MySQL/Redis drivers, Kubernetes). A line scores the sum
of the weights of the patterns it matches; the best score wins, and its margin over the
runner-up gives the confidence. Database wording outweighs the generic network wording it
contains ("psycopg2.OperationalError: ... Connection refused" is a database problem).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atom.troubleshoot.categories import Category

C = Category

_RULES: list[tuple[Category, float, str]] = [
    # -- timeouts
    (C.TIMEOUT, 3, r"timed?[ _-]?out|timeout(?!s? ?=)|time limit|timelimitexceeded"),
    (C.TIMEOUT, 3, r"deadline[ _]exceeded|deadline exceeded|etimedout|took \d+ ?ms, abort"),
    (C.TIMEOUT, 2, r"\b(408|504)\b|gateway time-?out"),
    (C.TIMEOUT, 1, r"exceeded the configured timeout|operation was cancel+ed"),
    (C.TIMEOUT, 3, r"max(imum)? (run ?time|runtime|execution time|duration)|execution expired"),
    # -- rate limits
    (C.RATE_LIMITED, 5, r"\b429\b|too many requests|rate[ _-]?limit|ratelimited"),
    (C.RATE_LIMITED, 4, r"throttl|slow ?down|retry-after|quota exceeded|exceeded .*quota"),
    (C.RATE_LIMITED, 3, r"throughput .*exceeded|request limit|limit reached|rate exceeded"),
    (C.RATE_LIMITED, 4, r"request_limit_exceeded|request rate|calls? per (second|minute)|\bqps\b"),
    (C.RATE_LIMITED, 3, r"rejected[_ ]execution|retry after some time|limit exceeded"),
    # -- upstream 5xx
    (C.UPSTREAM_5XX, 4, r"\b5(0[0-37-9]|[1-9]\d)\b"),
    (C.UPSTREAM_5XX, 4, r"internal server error|internal error|bad gateway|service unavailable"),
    (C.UPSTREAM_5XX, 4, r"temporarily unavailable|unavailable|overloaded|no healthy upstream"),
    (C.UPSTREAM_5XX, 3, r"while (reading response header from|connecting to) upstream"),
    (C.UPSTREAM_5XX, 2, r"upstream (prematurely|connect error)|server error|apierror"),
    (C.UPSTREAM_5XX, 1, r"unknown error occurred|maintenance"),
    (C.UPSTREAM_5XX, 3, r"not available|backend error|try again later"),
    # -- connection and DNS
    (C.CONNECTION, 4, r"econnrefused|connection refused|connecterror|connectionerror"),
    (C.CONNECTION, 4, r"enotfound|eai_again|getaddrinfo|gaierror|name or service not known"),
    (C.CONNECTION, 4, r"could not resolve|no such host|unknownhostexception|name resolution"),
    (C.CONNECTION, 4, r"econnreset|connection reset|socket hang up|broken pipe|ehostunreach"),
    (C.CONNECTION, 4, r"no route to host|network is unreachable|connection aborted|enetunreach"),
    (C.CONNECTION, 3, r"remote ?disconnected|closed connection without response|tls|ssl"),
    (C.CONNECTION, 3, r"certificate verify failed|failed to establish|failed to connect"),
    (
        C.CONNECTION,
        4,
        r"\bx509\b|certificate (has )?expired|sslhandshake|handshake (failed|timeout)",
    ),
    (C.CONNECTION, 2, r"connectexception|newconnectionerror|max retries exceeded with url"),
    (C.CONNECTION, 3, r"chunkedencodingerror|protocolerror|incompleteread|connection closed"),
    # -- authentication and permission
    (C.AUTH, 5, r"\b(401|403)\b|unauthori[sz]ed|forbidden|permission denied|access denied"),
    (C.AUTH, 5, r"invalid[_ ](auth|grant|token|api[_ ]?key|credentials?|signature)"),
    (
        C.AUTH,
        4,
        r"(api[_ ]?key|token|credentials?|password|signature).{0,40}"
        r"(invalid|expired|revoked|incorrect|wrong)",
    ),
    (
        C.AUTH,
        4,
        r"(expired|revoked|incorrect|bad|missing|no)[ _](api[_ ]?key|token|credentials?|oauth)",
    ),
    (C.AUTH, 4, r"authenticat\w* (error|failed)|authenticationerror|not authori[sz]ed"),
    (C.AUTH, 3, r"\bjwt\b.*expired|security token.*expired|nocredentialserror|accessdenied"),
    (C.AUTH, 3, r"missing (required )?scope|insufficient[_ ](scope|permission)|not_authed"),
    (C.AUTH, 2, r"unable to locate credentials|oauth-?token"),
    (C.AUTH, 4, r"session[_ ](expired|invalid|id)|authori[sz]ation ?(grant|permission|failed)"),
    (C.AUTH, 4, r"(does not|doesn't|not) have (the )?(required )?(permission|scope|access)"),
    # -- not found
    (
        C.NOT_FOUND,
        5,
        r"\b(404|410)\b|not[ _]found|(?<!e)notfound|nosuch\w*|no such (key|bucket|customer|file)",
    ),
    (C.NOT_FOUND, 4, r"does not exist|could not find|cannot find|was not found|\bgone\b"),
    (C.NOT_FOUND, 2, r"unknown (resource|id|channel)"),
    # -- bad request payloads
    (C.BAD_REQUEST, 5, r"\b(400|405|409|413|415|422)\b|bad request|unprocessable"),
    (C.BAD_REQUEST, 4, r"invalid(requesterror|parametervalue|_request|[_ ]blocks| request)"),
    (
        C.BAD_REQUEST,
        4,
        r"(field|parameter|property)\b.{0,40}(is required|missing|invalid|not valid)",
    ),
    (C.BAD_REQUEST, 4, r"missing required (parameter|field)|validation ?error|not a valid"),
    (C.BAD_REQUEST, 3, r"malformed|jsondecodeerror|unexpected token|unsupported media type"),
    (
        C.BAD_REQUEST,
        3,
        r"invalid (integer|value|json|email|format|input)|is invalid|were not valid",
    ),
    (C.BAD_REQUEST, 2, r"should be a valid|expecting value|unexpected end of json"),
    (C.BAD_REQUEST, 4, r"required[_ ]fields?[_ ](are |is )?missing|required property|must have"),
    (C.BAD_REQUEST, 3, r"failed to parse|parsing_exception|invalid (field|argument|parameter)"),
    # -- data shape: an upstream output lacks what a template or a later step expects
    (C.DATA_SHAPE, 5, r"undefinederror|is undefined|has no attribute|keyerror|no attribute"),
    (C.DATA_SHAPE, 5, r"missing (value|key|field)|not subscriptable|cannot read propert"),
    (C.DATA_SHAPE, 4, r"of (null|undefined|none)\b|nonetype|nullpointerexception|nil pointer"),
    (C.DATA_SHAPE, 4, r"index ?error|index out of range|string indices must be"),
    (C.DATA_SHAPE, 4, r"expected (field|key)|is a required property|does not exist on"),
    (C.DATA_SHAPE, 3, r"got keys|previous step's output|template"),
    (C.DATA_SHAPE, 5, r"undefined (method|array key|index|offset|variable)|for nil\b|nilclass"),
    (C.DATA_SHAPE, 4, r"referenceerror|is not defined|nullreferenceexception|cannot unmarshal"),
    (C.DATA_SHAPE, 4, r"missing field|cannot destructure|offset on value of type null"),
    # -- the worker died
    (C.WORKER_LOST, 6, r"oomkilled|out of memory|memoryerror|workerlosterror|worker lost"),
    (C.WORKER_LOST, 5, r"sigkill|signal 9|exit(ed)? ?(code|status)?:? ?137|killed process"),
    (C.WORKER_LOST, 4, r"exited prematurely|segmentation fault|core dumped|evicted"),
    (C.WORKER_LOST, 4, r"no heartbeat|heartbeat (lost|missed|timed out)|lost \d+ tasks?"),
    (C.WORKER_LOST, 3, r"back-?off restarting|crashloopbackoff|container .* terminated"),
    (C.WORKER_LOST, 4, r"missed heartbeats?|low on resource|exceeds its (memory )?request"),
    (C.WORKER_LOST, 4, r"status 137|worker (died|crashed|restarted|was lost)|killed because"),
    # -- databases
    (C.DATABASE, 6, r"psycopg|sqlalchemy|operationalerror|pymysql|mysqldb|pymongo|sqlite3"),
    (C.DATABASE, 6, r"redis\.exceptions|sequelize\w*error|\bora-\d{5}|postgres|mysql|mongo"),
    (C.DATABASE, 5, r"deadlock|lock wait timeout|could not serialize|too many clients"),
    (C.DATABASE, 5, r"unique constraint|violates|relation \".*\" does not exist|queuepool"),
    (C.DATABASE, 5, r"statement timeout|database is locked|server closed the connection"),
    (C.DATABASE, 4, r"pg_wal|tns:|administrator command|maxmemory|access denied for user"),
    (C.DATABASE, 3, r"\bdatabase\b|\bsql\b|port 5432|:5432|:3306|:27017|:6379"),
    (C.DATABASE, 6, r"activerecord|sqlstate|npgsql|jdbc|\bpq:|\bpg::|prisma|psqlexception"),
    (C.DATABASE, 5, r"lock timeout|communications link failure|connection slots"),
    # -- a new version broke it
    (C.VERSION_REGRESSION, 6, r"regression|after (deploy|release|upgrade|rollout)"),
    (C.VERSION_REGRESSION, 5, r"(v|version )\d+ (fails|failing|broke)|since (version|v)\d+"),
    (C.VERSION_REGRESSION, 4, r"(was|were) (passing|working|fine) (on|in|before)|ran fine"),
    (C.VERSION_REGRESSION, 3, r"release \d|rolled out|new version"),
    (C.VERSION_REGRESSION, 5, r"after upgrading|since the last (workflow )?(change|update)"),
]

# Ties go to the more specific category (a database driver's timeout is a database problem).
_PRIORITY = [
    C.DATABASE,
    C.WORKER_LOST,
    C.RATE_LIMITED,
    C.VERSION_REGRESSION,
    C.AUTH,
    C.NOT_FOUND,
    C.DATA_SHAPE,
    C.BAD_REQUEST,
    C.UPSTREAM_5XX,
    C.CONNECTION,
    C.TIMEOUT,
]

_COMPILED = [(category, weight, re.compile(pattern, re.I)) for category, weight, pattern in _RULES]


@dataclass(frozen=True)
class Classification:
    """A category, how sure (0..1), and the words that decided it."""

    category: Category
    confidence: float
    matched: tuple[str, ...] = ()


def scores(text: str) -> dict[Category, tuple[float, list[str]]]:
    """Every category's score for ``text`` and the fragments that earned it."""
    found: dict[Category, tuple[float, list[str]]] = {}
    for category, weight, pattern in _COMPILED:
        match = pattern.search(text)
        if match:
            total, words = found.get(category, (0.0, []))
            found[category] = (total + weight, [*words, match.group(0)])
    return found


def classify(text: str) -> Classification:
    """The most likely category of one error text; ``unknown`` when nothing matches."""
    found = scores(text or "")
    if not found:
        return Classification(Category.UNKNOWN, 0.3)
    ranked = sorted(found.items(), key=lambda kv: (-kv[1][0], _PRIORITY.index(kv[0])))
    best, (score, words) = ranked[0]
    runner_up = ranked[1][1][0] if len(ranked) > 1 else 0.0
    margin = (score - runner_up) / score
    confidence = round(min(0.95, 0.55 + 0.4 * margin + 0.02 * min(score, 5)), 2)
    return Classification(best, confidence, tuple(words))


def status_category(status: int) -> Category | None:
    """The category an HTTP status code alone implies (None for success and redirects)."""
    if status == 429:
        return C.RATE_LIMITED
    if status in (408, 504):
        return C.TIMEOUT
    if status >= 500:
        return C.UPSTREAM_5XX
    if status in (401, 403, 407):
        return C.AUTH
    if status in (404, 410):
        return C.NOT_FOUND
    if status >= 400:
        return C.BAD_REQUEST
    return None


_STATEMENT_DB = re.compile(
    r"does not exist|no such (table|column)|unknown (column|table|database)|syntax error|"
    r"violates|violation|duplicate (key|entry)|constraint|integrityerror|programmingerror|"
    r"dataerror|invalid input|datatype mismatch|out of range|division by zero|"
    r"authentication failed|access denied|permission denied|undefined(column|table|function)|"
    r"undefined (column|table|function)|must appear in the group by|ambiguous",
    re.I,
)
"""A database failure caused by what was sent: the statement, the data or the login. A
retry sends the same and fails the same way."""


def database_is_transient(text: str) -> bool:
    """A database failure that a later attempt can get past.

    The test is the other way round from a list of outages (which missed every outage it
    did not name): a database error is transient (the server is unreachable, restarting,
    full, locked, out of connections or memory) unless it names a fault in what the step
    sent (the statement, the data, the login), which a retry would repeat. When in doubt
    between the two, the statement wins: nothing permanent is retried."""
    return not _STATEMENT_DB.search(text or "")
