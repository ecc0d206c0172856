"""Certificates made at run time for the local control plane and its clients.

Everything here is in memory and pure apart from :meth:`Certificate.write`: a
:class:`CertificateAuthority` signs a serving certificate for the API server, client
certificates (the admin with ``O=system:masters``, or any user and groups bound by RBAC)
and, through :func:`new_signing_key`, the service-account token key pair.

Keys and certificates are built by :mod:`acns_operator.pki` (ECDSA P-256), the code
the operator's webhook certificates use too.
"""

from __future__ import annotations

import datetime
import ipaddress
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acns_operator import pki

__all__ = [
    "Certificate",
    "CertificateAuthority",
    "SigningKey",
    "new_signing_key",
]

# Long enough for any test session or demo; short enough that a leaked key is useless soon.
DEFAULT_VALIDITY = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Certificate:
    """A PEM certificate and its PEM private key (unencrypted PKCS#8)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def x509(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (mode 0600) into ``directory``.

        Returns the certificate path and the key path.
        """
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


@dataclass(frozen=True)
class SigningKey:
    """A key pair in PEM form, for signing tokens (not bound to any certificate)."""

    private_pem: bytes
    public_pem: bytes


def new_signing_key() -> SigningKey:
    """Make a key pair for service-account tokens (``--service-account-*key-file``)."""
    key = pki.new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(private_pem=pki.key_pem(key), public_pem=public)


class CertificateAuthority:
    """A self-signed CA that issues serving and client certificates.

    Build one with :meth:`create`; keep it for the life of the cluster, because every
    kubeconfig minted later (:meth:`issue_client`) must chain to the CA the API server
    was started with.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        """Wrap an existing CA key and certificate (see :meth:`create`)."""
        self._key = key
        self._cert = certificate

    @classmethod
    def create(
        cls, common_name: str = "acns-local-ca", validity: datetime.timedelta = DEFAULT_VALIDITY
    ) -> CertificateAuthority:
        """Make a new CA key and self-signed certificate."""
        key, cert = pki.self_signed_ca(common_name, datetime.datetime.now(datetime.UTC), validity)
        return cls(key, cert)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate in PEM form (a kubeconfig's ``certificate-authority-data``)."""
        return pki.certificate_pem(self._cert)

    @property
    def certificate(self) -> Certificate:
        """The CA certificate with its key, e.g. to write both to disk."""
        return Certificate(cert_pem=self.cert_pem, key_pem=pki.key_pem(self._key))

    def issue_server(
        self,
        common_name: str,
        *,
        ip_addresses: Sequence[str] = ("127.0.0.1",),
        dns_names: Sequence[str] = ("localhost",),
        validity: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> Certificate:
        """Issue a TLS serving certificate.

        Go's TLS client ignores the common name and requires a subjectAltName matching
        the address it dialled, so every address a client uses must be listed.
        """
        if not ip_addresses and not dns_names:
            raise ValueError("a serving certificate needs at least one IP address or DNS name")
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        return self._issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            alt_names=names,
            validity=validity,
        )

    def issue_client(
        self,
        user: str,
        groups: Sequence[str] = (),
        *,
        validity: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> Certificate:
        """Issue a client certificate that the API server reads as ``user`` in ``groups``.

        kube-apiserver's x509 authenticator takes the user name from the subject's CN and
        the groups from its O attributes; ``groups=["system:masters"]`` is cluster-admin.
        Names longer than X.520's 64-character bound are allowed, as Kubernetes needs.
        """
        # X.520 caps CN and O at 64 characters, but Kubernetes names are longer
        # (system:serviceaccount:<63>:<253>) and Go's x509 never checks the cap;
        # cryptography then warns instead of raising, which says nothing new here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Attribute's length must be")
            attributes = [x509.NameAttribute(NameOID.COMMON_NAME, user, _validate=False)]
            attributes += [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, group, _validate=False)
                for group in groups
            ]
        return self._issue(
            x509.Name(attributes),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            alt_names=[],
            validity=validity,
        )

    def _issue(
        self,
        subject: x509.Name,
        *,
        usage: x509.ObjectIdentifier,
        alt_names: list[x509.GeneralName],
        validity: datetime.timedelta,
    ) -> Certificate:
        now = datetime.datetime.now(datetime.UTC)
        key, cert = pki.sign_leaf(
            self._key,
            self._cert.subject,
            subject,
            usage=usage,
            alt_names=alt_names,
            not_before=now - pki.BACKDATE,
            not_after=now + validity,
        )
        return Certificate(cert_pem=pki.certificate_pem(cert), key_pem=pki.key_pem(key))
