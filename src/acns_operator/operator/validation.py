"""The operator's judge: :func:`acns_operator.policy.validate`, the function the agents
and ``acns lint`` run, so the webhook, the status and enforcement always agree.

Kept apart from :mod:`.judgement` so the operator's own logic (and its unit tests)
does not import the policy engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from acns_operator.api.findings import Finding
from acns_operator.operator.judgement import Issue, Judge, Judgement, kind_of
from acns_operator.policy import validate
from acns_operator.settings import PolicySettings

logger = logging.getLogger(__name__)


def to_issue(finding: Finding) -> Issue:
    """A policy finding in the operator's terms."""
    return Issue(
        severity="error" if finding.is_error else "warning",
        path=finding.path,
        message=finding.message,
    )


def make_judge(settings: PolicySettings) -> Judge:
    """Judge raw API objects under ``settings`` (the AKS profile's cluster facts).

    ``validate`` never raises by contract; should it anyway, the object is judged
    blocked rather than crashing a handler, the same outcome the agents reach.
    """

    def judge(body: Mapping[str, Any]) -> Judgement:
        kind = kind_of(body)
        try:
            # A plain dict copy: kopf hands over read-only views of the raw object.
            verdict = validate(dict(body), settings)
        except Exception as exc:
            logger.exception("validating a %s raised", kind)
            return Judgement(
                kind, (Issue("error", "", f"the policy could not be validated: {exc}"),)
            )
        return Judgement(kind, tuple(to_issue(finding) for finding in verdict.findings))

    return judge
