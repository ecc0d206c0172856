"""X.509 primitives shared by the webhook's TLS material and the local control plane.

One place builds keys, self-signed CAs and CA-signed leaf certificates so that
:mod:`acns_operator.operator.certs` (production: the webhook's serving certificate)
and :mod:`acns_operator.local.certs` (the test harness's cluster PKI) cannot drift.
Pure functions over ``cryptography`` objects; time is passed in.

Keys are ECDSA P-256: generating one takes microseconds where RSA-2048 takes tens of
milliseconds, and Go's TLS stack (kube-apiserver, kubectl, etcd) and Python's ``ssl``
all accept them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "BACKDATE",
    "certificate_pem",
    "key_pem",
    "new_key",
    "self_signed_ca",
    "sign_leaf",
]

# Tolerate clocks a little behind the signer's (the API server's, another replica's).
BACKDATE = timedelta(minutes=5)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A new P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def self_signed_ca(
    common_name: str, now: datetime, validity: timedelta
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA key and its self-signed certificate (path length 0), valid from
    ``now - BACKDATE`` to ``now + validity``."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def sign_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_subject: x509.Name,
    subject: x509.Name,
    *,
    usage: x509.ObjectIdentifier,
    alt_names: Sequence[x509.GeneralName],
    not_before: datetime,
    not_after: datetime,
    key_usage: bool = True,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and an end-entity certificate for it signed by the CA.

    ``usage`` is the extended key usage (server or client auth); ``alt_names`` become
    the subjectAltName extension when not empty; ``key_usage`` adds the critical
    digitalSignature key usage.
    """
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if alt_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(alt_names)), critical=False
        )
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if key_usage:
        builder = builder.add_extension(_key_usage(ca=False), critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
    )
    return key, builder.sign(ca_key, hashes.SHA256())
