"""The webhook's TLS material: a private CA, a serving certificate, and when to renew.

Pure functions over PEM bytes (``cryptography`` only; kopf's own self-signed path
needs ``oscrypto``, which cannot find OpenSSL 3.0 on Debian 12). Time is passed in.

The material lives in one Secret shared by every replica (keys ``tls.crt``,
``tls.key``, ``ca.crt`` as cert-manager writes them, plus ``ca.key`` when the
operator generated the CA), so all replicas serve a certificate the registered
``caBundle`` trusts. When the CA itself is renewed the previous CA stays in
``ca.crt`` until it expires, so the API server keeps trusting a replica that has not
reloaded yet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acns_operator.errors import ConfigurationError

CA_COMMON_NAME = "acns-operator webhook CA"
# Tolerate clocks a little behind ours (the API server's, another replica's).
BACKDATE = timedelta(minutes=5)

DATA_CERT = "tls.crt"
DATA_KEY = "tls.key"
DATA_CA = "ca.crt"
DATA_CA_KEY = "ca.key"


@dataclass(frozen=True)
class TlsMaterial:
    """PEM-encoded serving certificate and key, the CA bundle, and the CA key if ours."""

    cert_pem: bytes
    key_pem: bytes
    ca_bundle_pem: bytes
    ca_key_pem: bytes | None = None

    def to_secret_data(self) -> dict[str, bytes]:
        """The Secret's data (unencoded), in cert-manager's key names."""
        data = {DATA_CERT: self.cert_pem, DATA_KEY: self.key_pem, DATA_CA: self.ca_bundle_pem}
        if self.ca_key_pem is not None:
            data[DATA_CA_KEY] = self.ca_key_pem
        return data

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> TlsMaterial:
        """Read the material back; a missing key or unreadable PEM is a ConfigurationError."""
        missing = [key for key in (DATA_CERT, DATA_KEY, DATA_CA) if not data.get(key)]
        if missing:
            raise ConfigurationError(f"the TLS Secret lacks {', '.join(missing)}")
        material = cls(
            cert_pem=data[DATA_CERT],
            key_pem=data[DATA_KEY],
            ca_bundle_pem=data[DATA_CA],
            ca_key_pem=data.get(DATA_CA_KEY) or None,
        )
        try:
            material.certificate()
            material.ca_certificates()
        except ValueError as exc:
            raise ConfigurationError(f"the TLS Secret holds unreadable PEM: {exc}") from exc
        return material

    def certificate(self) -> x509.Certificate:
        """The serving certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)

    def ca_certificates(self) -> list[x509.Certificate]:
        """Every CA in the bundle, newest first as written."""
        certs = x509.load_pem_x509_certificates(self.ca_bundle_pem)
        if not certs:
            raise ValueError("no certificate in the CA bundle")
        return certs


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: accepted by Go's TLS stack (the API server) and cheap to generate.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate_ca(now: datetime, validity: timedelta) -> tuple[bytes, bytes]:
    """A new self-signed CA: (certificate PEM, key PEM)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_serving_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    hosts: Sequence[str],
    now: datetime,
    validity: timedelta,
) -> tuple[bytes, bytes]:
    """A serving certificate for ``hosts`` (DNS names or IPs) signed by the CA."""
    if not hosts:
        raise ConfigurationError("a serving certificate needs at least one host name")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError("the CA key is not an EC key generated by acns-operator")
    key = _new_key()
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def certificate_hosts(cert: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    hosts = {str(name) for name in sans.get_values_for_type(x509.DNSName)}
    hosts |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return hosts


def _normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


RenewalPlan = Literal["keep", "new-certificate", "new-ca"]


def plan_renewal(
    material: TlsMaterial | None,
    hosts: Iterable[str],
    now: datetime,
    renew_before: timedelta,
) -> RenewalPlan:
    """What generated material needs: nothing, a new serving certificate, or a new CA.

    A new CA when there is none we can sign with, or ours expires within
    ``renew_before``; a new certificate when it expires within ``renew_before`` or
    does not cover every host (settings changed).
    """
    if material is None or material.ca_key_pem is None:
        return "new-ca"
    newest_ca = material.ca_certificates()[0]
    if newest_ca.not_valid_after_utc - renew_before <= now:
        return "new-ca"
    cert = material.certificate()
    if cert.not_valid_after_utc - renew_before <= now:
        return "new-certificate"
    if cert.issuer != newest_ca.subject or not {_normal_host(h) for h in hosts} <= {
        _normal_host(h) for h in certificate_hosts(cert)
    }:
        return "new-certificate"
    return "keep"


def renew(
    material: TlsMaterial | None,
    hosts: Sequence[str],
    now: datetime,
    *,
    certificate_validity: timedelta,
    ca_validity: timedelta,
    renew_before: timedelta,
) -> TlsMaterial | None:
    """The material to store, or None when the current one is fine as it is."""
    plan = plan_renewal(material, hosts, now, renew_before)
    if plan == "keep":
        return None
    if plan == "new-ca" or material is None or material.ca_key_pem is None:
        ca_pem, ca_key_pem = generate_ca(now, ca_validity)
        # keep the CAs still valid so servers not yet reloaded stay trusted
        previous = [] if material is None else material.ca_certificates()
        kept = [
            ca.public_bytes(serialization.Encoding.PEM)
            for ca in previous
            if ca.not_valid_after_utc > now
        ]
        bundle = b"".join([ca_pem, *kept])
    else:
        ca_key_pem = material.ca_key_pem
        bundle = material.ca_bundle_pem
        ca_pem = material.ca_certificates()[0].public_bytes(serialization.Encoding.PEM)
    cert_pem, key_pem = issue_serving_certificate(
        ca_pem, ca_key_pem, hosts, now, certificate_validity
    )
    return TlsMaterial(
        cert_pem=cert_pem, key_pem=key_pem, ca_bundle_pem=bundle, ca_key_pem=ca_key_pem
    )
