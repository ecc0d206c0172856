"""Certificates for the local control plane: names, chains, and real TLS handshakes."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acns_operator.local.certs import Certificate, CertificateAuthority, new_signing_key


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test-ca")


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two contexts entirely in memory (no sockets)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_side, server_side
    raise AssertionError("TLS handshake did not finish")


def _contexts(
    tmp_path: Path, ca: CertificateAuthority, server_cert: Certificate, client_cert: Certificate
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca_file, _ = ca.certificate.write(tmp_path, "ca")
    server_crt, server_key = server_cert.write(tmp_path, "server")
    client_crt, client_key = client_cert.write(tmp_path, "client")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    server.load_cert_chain(str(server_crt), str(server_key))
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(ca_file))
    client.load_cert_chain(str(client_crt), str(client_key))
    return server, client


def test_the_serving_certificate_names_loopback_by_ip_and_by_name(
    ca: CertificateAuthority,
) -> None:
    cert = ca.issue_server("kube-apiserver").x509
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_issued_certificates_chain_to_the_ca_and_the_ca_is_a_ca(
    ca: CertificateAuthority,
) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for issued in (ca.issue_server("s"), ca.issue_client("u")):
        issued.x509.verify_directly_issued_by(ca_cert)
        assert not issued.x509.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_client_certificate_carries_the_user_as_cn_and_each_group_as_o(
    ca: CertificateAuthority,
) -> None:
    cert = ca.issue_client("system:serviceaccount:ns:op", ["system:serviceaccounts", "g2"]).x509
    subject = cert.subject
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "system:serviceaccount:ns:op"
    ]
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:serviceaccounts",
        "g2",
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_python_tls_accepts_the_serving_certificate_for_127_0_0_1_with_a_client_cert(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    server, client = _contexts(
        tmp_path, ca, ca.issue_server("apiserver"), ca.issue_client("admin", ["system:masters"])
    )
    _, server_side = _handshake(server, client, "127.0.0.1")
    peer = server_side.getpeercert()
    assert peer is not None
    assert (("commonName", "admin"),) in peer["subject"]


def test_tls_refuses_a_host_name_the_serving_certificate_does_not_list(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    server, client = _contexts(tmp_path, ca, ca.issue_server("apiserver"), ca.issue_client("a"))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, client, "10.0.0.1")


def test_tls_refuses_a_certificate_from_another_ca(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    other = CertificateAuthority.create("other-ca")
    server, client = _contexts(tmp_path, ca, other.issue_server("impostor"), ca.issue_client("a"))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(server, client, "127.0.0.1")


def test_a_serving_certificate_without_any_name_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="at least one"):
        ca.issue_server("nameless", ip_addresses=(), dns_names=())


def test_written_keys_are_readable_by_their_owner_only(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    cert_path, key_path = ca.issue_client("u").write(tmp_path / "sub", "u")
    assert cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    serialization.load_pem_private_key(key_path.read_bytes(), password=None)


def test_the_signing_key_pair_signs_what_its_public_half_verifies() -> None:
    pair = new_signing_key()
    private = serialization.load_pem_private_key(pair.private_pem, password=None)
    public = serialization.load_pem_public_key(pair.public_pem)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = private.sign(b"token", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"token", ec.ECDSA(hashes.SHA256()))  # raises if wrong
    assert public.public_numbers() == private.public_key().public_numbers()


def test_a_client_certificate_may_carry_a_service_account_name_longer_than_64_chars(
    ca: CertificateAuthority,
) -> None:
    user = f"system:serviceaccount:{'n' * 63}:{'s' * 100}"
    issued = ca.issue_client(user, [f"system:serviceaccounts:{'n' * 63}"])
    # Issuing is silent; cryptography still warns when it parses the long name back.
    with pytest.warns(UserWarning, match="length must be >= 1 and <= 64"):
        subject = issued.x509.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
