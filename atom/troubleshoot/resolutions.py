"""What to do about an issue. Pure: a resolution is a plan; ``sessions`` carries it out.

Automatic only where it is safe: a transient cause is resolved by retrying the same
execution from its failed step, with the policy adjusted to the cause (wait out
``Retry-After``, back off longer during an outage, a longer time limit when the step's
durations crowd it, wait for a worker), at most ``max_retries`` times per execution. Every
permanent cause gets a concrete suggestion that one call applies (``POST
.../sessions/{id}/apply``): revert to the last good version, fix the template that names a
missing field, or retry once the user has rotated the credential or fixed the target.
"""

from __future__ import annotations

import math
from typing import Any

from atom.troubleshoot.categories import Category
from atom.troubleshoot.diagnose import Issue
from atom.workflow.definition import Node

C = Category

RETRY = "retry_from_failed_step"
REVERT = "revert_version"
FIX_TEMPLATE = "fix_template"
ROTATE = "rotate_credential"
CHECK_TARGET = "fix_request"
RAISE_TIMEOUT = "raise_timeout"
REDRIVE = "redrive"
INVESTIGATE = "investigate"


def _backoff(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * 2 ** max(0, attempt))


def transient_plan(
    issue: Issue, node: Node | None, attempt: int, overrides: dict[str, Any], max_wait: float
) -> dict[str, Any]:
    """How to retry a transient cause: the wait before the retry and the node's new policy.

    ``attempt`` counts the automatic retries this execution has had already, so each one
    waits longer than the last."""
    change: dict[str, Any] = {}
    retry = node.retry if node is not None else None
    earlier = overrides.get(issue.node_id or "", {}) if issue.node_id else {}
    category = issue.category
    # ``attempts`` count every try of the run so far and retry policies compare with them:
    # the retry's policy allows its extra retries on top of the tries already made.
    tried = int(issue.details.get("attempts") or 0)
    if category is C.RATE_LIMITED:
        after = issue.details.get("retry_after_s")
        wait = after if after is not None else _backoff(attempt, 5.0, max_wait)
        wait = float(wait) + 0.5  # a little past the moment the service named
        delay = max(wait, retry.retry_delay if retry else 1.0)
        change["retry"] = {
            "max_retries": tried + 2,
            "retry_delay": round(delay, 3),
            "backoff_multiplier": 2.0,
            "max_delay": max(delay * 4, retry.max_delay if retry else 0),
        }
        why = (
            f"wait out Retry-After ({after:g} s)"
            if after is not None
            else "back off (no Retry-After)"
        )
    elif category in (C.UPSTREAM_5XX, C.CONNECTION, C.DATABASE):
        wait = _backoff(attempt, 3.0, max_wait)
        change["retry"] = {
            "max_retries": tried + 3,
            "retry_delay": max(2.0, retry.retry_delay if retry else 0),
            "backoff_multiplier": 2.0,
            "max_delay": max(60.0, retry.max_delay if retry else 0),
        }
        why = "back off during the outage, then retry with more, longer-spaced retries"
    elif category is C.TIMEOUT:
        wait = 1.0
        limit = float(issue.details.get("limit_s") or (node.timeout if node else 0) or 30.0)
        p95 = float(issue.details.get("p95_s") or 0.0)
        current = float(earlier.get("timeout") or limit)
        new_limit = math.ceil(max(current * 2, p95 * 1.5, 1.0))
        if issue.details.get("node_timeout"):
            change["timeout"] = new_limit
        if node is not None and node.action_type == "http_request":
            change["config"] = {"timeout": new_limit}
        why = f"raise the time limit from {current:g} s to {new_limit:g} s"
    else:  # worker lost, or another transient cause
        wait = _backoff(attempt, 2.0, max_wait)
        why = "wait for a worker, then run the step again"
    wait = min(float(wait), max_wait)
    return {
        "wait_s": round(wait, 3),
        "policy": {issue.node_id: change} if issue.node_id and change else {},
        "why": why,
    }


def plan(issue: Issue, node: Node | None, attempt: int, overrides: dict, max_wait: float) -> dict:
    """The resolution of one root-cause issue: ``{action, automatic, applied, result, ...}``."""
    base = {"applied": False, "result": None}
    details = issue.details
    if issue.category is C.TIMEOUT and details.get("succeeded"):
        limit = float(details.get("limit_s") or 30.0)
        new = math.ceil(max(limit * 2, float(details.get("p95_s") or 0) * 1.5))
        return {
            **base,
            "action": RAISE_TIMEOUT,
            "automatic": False,
            "description": f"raise step {issue.node_id!r}'s timeout to {new} s in a new version",
            "changes": {"node_id": issue.node_id, "timeout": new},
        }
    after = details.get("retry_after_s")
    if issue.category is C.RATE_LIMITED and after is not None and after > max_wait:
        return {
            **base,
            "action": RETRY,
            "automatic": False,
            "description": (
                f"the service asks for {after:g} s before the next call, longer than ATOM "
                f"waits by itself ({max_wait:g} s): apply after that to retry from step "
                f"{issue.node_id!r}"
            ),
            "policy": {},
        }
    if issue.transient:
        retry = transient_plan(issue, node, attempt, overrides, max_wait)
        return {
            **base,
            "action": REDRIVE if issue.category is C.WORKER_LOST and issue.node_id else RETRY,
            "automatic": True,
            "description": f"retry the execution from step {issue.node_id!r}: {retry['why']}",
            "wait_s": retry["wait_s"],
            "policy": retry["policy"],
        }
    if issue.category is C.VERSION_REGRESSION:
        good = details["regression"]["last_good_version"]
        return {
            **base,
            "action": REVERT,
            "automatic": False,
            "description": (
                f"revert to version {good}, the last one that ran step {issue.node_id!r} "
                "(saved as a new version)"
            ),
            "changes": {"version": good},
        }
    if issue.category is C.DATA_SHAPE:
        template = details.get("template") or {}
        if template.get("fixed_template"):
            return {
                **base,
                "action": FIX_TEMPLATE,
                "automatic": False,
                "description": (
                    f"in {template['location']}, use {template['replacement']!r} instead of "
                    f"{template['reference']!r} (saved as a new version)"
                ),
                "changes": {
                    "node_id": issue.node_id,
                    "location": template["location"],
                    "template": template["fixed_template"],
                },
            }
        return {
            **base,
            "action": FIX_TEMPLATE,
            "automatic": False,
            "description": (
                f"{template.get('location', 'a template')} names "
                f"{template.get('missing', 'a value')!r}, which the output of "
                f"{template.get('upstream', 'the step before')!r} does not have (it has: "
                f"{template.get('available', '?')}); change the template, then apply to retry"
            ),
            "changes": None,
        }
    if issue.category is C.AUTH:
        return {
            **base,
            "action": ROTATE,
            "automatic": False,
            "description": (
                f"the service refused step {issue.node_id!r}'s credentials: rotate the key or "
                "token the step sends, then apply to retry the execution from that step"
            ),
        }
    if issue.category in (C.NOT_FOUND, C.BAD_REQUEST):
        what = "address" if issue.category is C.NOT_FOUND else "payload"
        return {
            **base,
            "action": CHECK_TARGET,
            "automatic": False,
            "description": (
                f"step {issue.node_id!r} sent a request the service rejects: correct its "
                f"{what} (or the data it comes from), then apply to retry from that step"
            ),
        }
    return {
        **base,
        "action": INVESTIGATE,
        "automatic": False,
        "description": "no safe automatic fix: read the evidence; apply retries from the step",
    }
