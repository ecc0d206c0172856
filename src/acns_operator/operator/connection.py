"""Where the API server is and how to authenticate: kubeconfig or in-cluster.

One :class:`Connection` feeds both kopf (through a login handler returning
``kopf.ConnectionInfo``) and our own small client (:mod:`.kube`), so the two always
talk to the same server with the same identity. Supported: client certificates,
bearer tokens (inline, from a file, or the pod's service-account token, re-read on
every use because it is rotated), CA data or file, ``insecure-skip-tls-verify``.
Exec and auth-provider plugins are not: they need code we do not ship.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from acns_operator.errors import ConfigurationError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Connection:
    """An API server endpoint and the credentials to use with it."""

    server: str
    ca_data: bytes | None = None
    insecure: bool = False
    certificate_data: bytes | None = None
    private_key_data: bytes | None = None
    token: str | None = None
    token_file: Path | None = None
    default_namespace: str | None = None

    def bearer_token(self) -> str | None:
        """The token to send, re-read from its file each time (projected tokens rotate)."""
        if self.token_file is not None:
            try:
                return self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigurationError(f"cannot read the token {self.token_file}: {exc}") from exc
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the cluster CA and presenting our certificate."""
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            context = ssl.create_default_context(cadata=self.ca_data.decode("ascii"))
        else:
            context = ssl.create_default_context()
        if self.certificate_data is not None and self.private_key_data is not None:
            # load_cert_chain only reads files: write them to a private directory that
            # is removed as soon as OpenSSL has loaded them.
            with tempfile.TemporaryDirectory(prefix="acns-client-") as folder:
                cert_path = Path(folder, "tls.crt")
                key_path = Path(folder, "tls.key")
                cert_path.write_bytes(self.certificate_data)
                key_path.touch(mode=0o600)
                key_path.write_bytes(self.private_key_data)
                context.load_cert_chain(cert_path, key_path)
        return context


def _read_material(entry: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    """``<key>-data`` (base64) or ``<key>`` (a path relative to the kubeconfig)."""
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(data)
    path = entry.get(key)
    if path:
        full = (base / str(path)).expanduser()
        try:
            return full.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {key} {full}: {exc}") from exc
    return None


def _named(items: Any, name: str, what: str, source: Path) -> Mapping[str, Any]:
    for item in items or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            value = item.get(what)
            return value if isinstance(value, Mapping) else {}
    raise ConfigurationError(f"{source}: no {what} named {name!r}")


def load_kubeconfig(path: Path, context: str | None = None) -> Connection:
    """The connection a kubeconfig file describes (its current or the given context)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read the kubeconfig {path}: {exc}") from exc
    if not isinstance(document, Mapping):
        raise ConfigurationError(f"{path} is not a kubeconfig")
    context_name = context or document.get("current-context")
    if not context_name:
        raise ConfigurationError(f"{path} has no current-context; pass a context")
    ctx = _named(document.get("contexts"), str(context_name), "context", path)
    cluster = _named(document.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user: Mapping[str, Any] = {}
    if ctx.get("user"):
        user = _named(document.get("users"), str(ctx.get("user")), "user", path)
    if "exec" in user or "auth-provider" in user:
        raise ConfigurationError(
            f"{path}: user {ctx.get('user')!r} needs an exec/auth-provider plugin, which "
            "acns operator does not support; use a client certificate or a token"
        )
    server = cluster.get("server")
    if not server:
        raise ConfigurationError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    base = path.parent
    token_file = user.get("tokenFile")
    return Connection(
        server=str(server).rstrip("/"),
        ca_data=_read_material(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        certificate_data=_read_material(user, "client-certificate", base),
        private_key_data=_read_material(user, "client-key", base),
        token=user.get("token") or None,
        token_file=(base / str(token_file)).expanduser() if token_file else None,
        default_namespace=ctx.get("namespace") or None,
    )


def load_in_cluster(directory: Path = SERVICE_ACCOUNT_DIR) -> Connection:
    """The pod's own service account, as client-go's rest.InClusterConfig reads it."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigurationError("not in a cluster: KUBERNETES_SERVICE_HOST is not set")
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    try:
        ca = (directory / "ca.crt").read_bytes()
        namespace = (directory / "namespace").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the service account in {directory}: {exc}") from exc
    return Connection(
        server=f"https://{host}:{port}",
        ca_data=ca,
        token_file=directory / "token",
        default_namespace=namespace or None,
    )


def load_connection(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """Connect as configured: a given kubeconfig, else in-cluster, else the default file."""
    if kubeconfig:
        return load_kubeconfig(Path(kubeconfig).expanduser(), context)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
        return load_in_cluster()
    env = os.environ.get("KUBECONFIG", "")
    candidates = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    candidates.append(Path("~/.kube/config").expanduser())
    for candidate in candidates:
        if candidate.exists():
            return load_kubeconfig(candidate, context)
    raise ConfigurationError(
        "no cluster to connect to: pass --kubeconfig, set KUBECONFIG, or run in a pod"
    )
