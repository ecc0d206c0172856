"""Every kopf decorator of the operator, and nothing else.

:func:`build_registry` registers, on a fresh ``kopf.OperatorRegistry`` (never kopf's
global one), handlers that close over the components they call:

- ``login``: the connection from our settings, so kopf and our client agree;
- ``validate-cnp`` / ``validate-ccnp``: the admission webhook, one per kind, whose ids
  are the URL paths registered in the ValidatingWebhookConfiguration;
- ``observe-cnp`` / ``observe-ccnp``: raw watch events (no state kept in annotations),
  fed to the reconciler.

Errors of the project's hierarchy are mapped to kopf's here, at the boundary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import kopf

from acns_operator.errors import AcnsError
from acns_operator.operator.admission import DENIAL_CODE, decide_admission
from acns_operator.operator.connection import Connection
from acns_operator.operator.judgement import Judge
from acns_operator.operator.manifests import GROUP, RESOURCES, VERSION
from acns_operator.operator.reconciler import Reconciler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandlerDeps:
    """What the handlers call into."""

    connection: Connection
    judge: Judge
    reconciler: Reconciler
    webhook: bool


def to_connection_info(connection: Connection) -> kopf.ConnectionInfo:
    """The connection in kopf's terms (the token re-read, as it may have rotated)."""
    return kopf.ConnectionInfo(
        server=connection.server,
        ca_data=connection.ca_data,
        insecure=connection.insecure,
        token=connection.bearer_token(),
        scheme="Bearer" if connection.token or connection.token_file else None,
        certificate_data=connection.certificate_data,
        private_key_data=connection.private_key_data,
        default_namespace=connection.default_namespace,
    )


def build_registry(deps: HandlerDeps) -> kopf.OperatorRegistry:
    """A registry with the operator's handlers, bound to ``deps``."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        try:
            return to_connection_info(deps.connection)
        except AcnsError as exc:
            raise kopf.LoginError(str(exc)) from exc

    async def validate(
        body: kopf.Body,
        old: kopf.Body | None,
        new: kopf.Body | None,
        operation: str | None,
        warnings: list[str],
        **_: Any,
    ) -> None:
        try:
            judgement = deps.judge(body)
            decision = decide_admission(
                judgement,
                operation=operation,
                namespace=body.metadata.namespace,
                name=body.metadata.name,
                old=old,
                new=new,
            )
        except AcnsError as exc:
            raise kopf.AdmissionError(f"acns-operator could not judge it: {exc}", code=500) from exc
        warnings.extend(decision.warnings)
        if not decision.allowed:
            logger.info(
                "denied %s %s/%s: %d error(s)",
                operation,
                body.metadata.namespace or "-",
                body.metadata.name,
                len(judgement.errors),
            )
            raise kopf.AdmissionError(decision.message, code=DENIAL_CODE)

    async def observe(event: kopf.RawEvent, **_: Any) -> None:
        try:
            if event["type"] == "DELETED":
                deps.reconciler.forget(event["object"])
            else:
                deps.reconciler.observe(event["object"])
        except AcnsError as exc:
            raise kopf.PermanentError(str(exc)) from exc

    # kopf's handler protocols spell out every kwarg kopf may pass; ours take only what
    # they use plus **_, which kopf supports but the protocol type cannot express.
    for resource in RESOURCES:
        if deps.webhook:
            kopf.on.validate(
                GROUP,
                VERSION,
                resource.plural,
                id=resource.handler_id,
                operations=["CREATE", "UPDATE"],
                registry=registry,
            )(cast(Any, validate))
        kopf.on.event(
            GROUP, VERSION, resource.plural, id=f"observe-{resource.plural}", registry=registry
        )(observe)
    return registry
