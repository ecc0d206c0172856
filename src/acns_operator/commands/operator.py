"""``acns operator``: the admission webhook and status writer (kopf inside).

Every option overrides the matching :class:`~acns_operator.settings.OperatorSettings`
field, which otherwise comes from ``ACNS_OPERATOR_*`` environment variables or its
default. Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for a configuration
error, 1 when the API server or another upstream failed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click
from pydantic import ValidationError

from acns_operator.errors import AcnsError, ConfigurationError


def _overrides(options: dict[str, Any]) -> dict[str, Any]:
    """Only the options given on the command line (None and empty mean "not given")."""
    return {k: v for k, v in options.items() if v is not None and v != ()}


@click.command("operator")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file to use.")
@click.option("--context", help="Kubeconfig context (default: its current-context).")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch and admit CiliumNetworkPolicies only in this namespace (repeatable; "
    "default: all namespaces).",
)
@click.option(
    "--operator-namespace", help="Namespace of the leader Lease and the TLS Secret [acns-system]."
)
@click.option("--identity", help="This replica's leader-election identity [hostname_random].")
@click.option(
    "--webhook/--no-webhook",
    "webhook_enabled",
    default=None,
    help="Serve the validating admission webhook [on].",
)
@click.option(
    "--webhook-host",
    help="Address the webhook listens on; also the registered host when neither "
    "--webhook-url nor --webhook-service is given [0.0.0.0].",
)
@click.option("--webhook-port", type=int, help="HTTPS port of the webhook [9443].")
@click.option(
    "--webhook-url",
    help="URL registered for the API server to call, e.g. https://127.0.0.1:9443 "
    "(default: https://WEBHOOK_HOST:WEBHOOK_PORT).",
)
@click.option(
    "--webhook-service",
    "webhook_service_name",
    help="In a cluster: register this Service (in the operator namespace) instead of a URL.",
)
@click.option("--webhook-service-port", type=int, help="Port of --webhook-service [443].")
@click.option(
    "--register/--no-register",
    "webhook_register",
    default=None,
    help="Create/update the ValidatingWebhookConfiguration [on].",
)
@click.option(
    "--unregister-on-exit/--keep-on-exit",
    "webhook_unregister_on_exit",
    default=None,
    help="Delete the ValidatingWebhookConfiguration when stopping (local runs) [keep].",
)
@click.option(
    "--webhook-configuration-name",
    help="Name of the ValidatingWebhookConfiguration [acns-operator].",
)
@click.option(
    "--failure-policy",
    type=click.Choice(["Fail", "Ignore"]),
    help="failurePolicy of the webhook when it cannot be reached [Fail].",
)
@click.option(
    "--tls-source",
    type=click.Choice(["generate", "secret"]),
    help="'generate': own CA and certificate, kept and renewed in --tls-secret; "
    "'secret': read a Secret written by cert-manager [generate].",
)
@click.option(
    "--tls-secret", "tls_secret_name", help="TLS Secret name [acns-operator-webhook-tls]."
)
@click.option("--health-host", help="Address of /healthz, /readyz, /metrics [0.0.0.0].")
@click.option(
    "--health-port", type=int, help="Port of /healthz, /readyz, /metrics (0: any) [8080]."
)
@click.option(
    "--leader-election/--no-leader-election",
    default=None,
    help="Elect one status writer through a Lease [on].",
)
@click.option("--lease-name", help="Name of the leader-election Lease [acns-operator].")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    help="Log level [INFO].",
)
def operator(**options: Any) -> None:
    """Run the operator: admission webhook, Valid status conditions, Events, metrics.

    \b
    In a cluster (what the Helm chart runs):
      acns operator --webhook-service acns-operator-webhook --operator-namespace acns-system
    Locally, against any cluster, with the webhook on this machine:
      acns operator --kubeconfig ~/.kube/config --webhook-host 127.0.0.1 --webhook-port 9443 \\
                    --operator-namespace acns-system --unregister-on-exit

    The webhook serves HTTPS with a certificate the operator generates and keeps in
    the TLS Secret (or reads from it with --tls-source secret) and registers itself in
    a ValidatingWebhookConfiguration with that CA. Settings not given as options come
    from ACNS_OPERATOR_* environment variables (e.g. ACNS_OPERATOR_LEASE_DURATION).
    """
    # Imported here so `acns --help` and other subcommands never import kopf.
    from acns_operator.operator.runner import run_operator
    from acns_operator.settings import OperatorSettings

    try:
        settings = OperatorSettings(**_overrides(options))
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kopf logs every watch event it processes at INFO; keep its noise to warnings
    # unless debugging.
    if settings.log_level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    try:
        asyncio.run(run_operator(settings))
    except ConfigurationError as exc:
        click.echo(f"acns operator: configuration error: {exc}", err=True)
        sys.exit(2)
    except AcnsError as exc:
        click.echo(f"acns operator: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
