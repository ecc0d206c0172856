"""The webhook's CA and serving certificate: issued, trusted, renewed in time."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from acns_operator.errors import ConfigurationError
from acns_operator.operator.certs import (
    TlsMaterial,
    certificate_hosts,
    generate_ca,
    issue_serving_certificate,
    plan_renewal,
    renew,
)
from acns_operator.operator.tls import load_server_context

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOSTS = ["127.0.0.1", "acns-operator-webhook.acns-system.svc"]


def _fresh(now: datetime = NOW) -> TlsMaterial:
    material = renew(
        None,
        HOSTS,
        now,
        certificate_validity=365 * DAY,
        ca_validity=3650 * DAY,
        renew_before=30 * DAY,
    )
    assert material is not None
    return material


def test_a_generated_certificate_is_signed_by_the_ca_and_covers_every_host() -> None:
    material = _fresh()
    cert = material.certificate()
    ca = material.ca_certificates()[0]
    cert.verify_directly_issued_by(ca)
    assert certificate_hosts(cert) == set(HOSTS)
    assert cert.not_valid_after_utc == NOW + 365 * DAY
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_fresh_material_is_kept() -> None:
    assert plan_renewal(_fresh(), HOSTS, NOW + DAY, 30 * DAY) == "keep"


def test_a_certificate_close_to_expiry_is_reissued_under_the_same_ca() -> None:
    material = _fresh()
    later = NOW + 340 * DAY
    assert plan_renewal(material, HOSTS, later, 30 * DAY) == "new-certificate"
    renewed = renew(
        material,
        HOSTS,
        later,
        certificate_validity=365 * DAY,
        ca_validity=3650 * DAY,
        renew_before=30 * DAY,
    )
    assert renewed is not None
    assert renewed.ca_bundle_pem == material.ca_bundle_pem
    assert renewed.certificate().serial_number != material.certificate().serial_number
    renewed.certificate().verify_directly_issued_by(material.ca_certificates()[0])


def test_a_new_host_gets_a_new_certificate() -> None:
    plan = plan_renewal(_fresh(), [*HOSTS, "10.0.0.7"], NOW, 30 * DAY)
    assert plan == "new-certificate"


def test_hosts_are_compared_in_normal_form() -> None:
    assert (
        plan_renewal(_fresh(), ["ACNS-operator-webhook.acns-system.svc"], NOW, 30 * DAY) == "keep"
    )


def test_a_ca_close_to_expiry_is_replaced_and_the_old_one_stays_trusted() -> None:
    material = renew(
        None,
        HOSTS,
        NOW,
        certificate_validity=10 * DAY,
        ca_validity=40 * DAY,
        renew_before=15 * DAY,
    )
    assert material is not None
    later = NOW + 30 * DAY
    assert plan_renewal(material, HOSTS, later, 15 * DAY) == "new-ca"
    renewed = renew(
        material,
        HOSTS,
        later,
        certificate_validity=10 * DAY,
        ca_validity=40 * DAY,
        renew_before=15 * DAY,
    )
    assert renewed is not None
    cas = renewed.ca_certificates()
    assert len(cas) == 2
    assert cas[1] == material.ca_certificates()[0]
    renewed.certificate().verify_directly_issued_by(cas[0])


def test_a_certificate_never_outlives_its_ca() -> None:
    ca_pem, ca_key = generate_ca(NOW, 10 * DAY)
    cert_pem, _ = issue_serving_certificate(ca_pem, ca_key, HOSTS, NOW, 365 * DAY)
    assert x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc == NOW + 10 * DAY


def test_material_without_our_ca_key_needs_a_new_ca() -> None:
    material = _fresh()
    foreign = TlsMaterial(material.cert_pem, material.key_pem, material.ca_bundle_pem)
    assert plan_renewal(foreign, HOSTS, NOW, 30 * DAY) == "new-ca"
    assert plan_renewal(None, HOSTS, NOW, 30 * DAY) == "new-ca"


def test_material_round_trips_through_secret_data() -> None:
    material = _fresh()
    assert TlsMaterial.from_secret_data(material.to_secret_data()) == material


def test_secret_data_without_a_certificate_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"tls\.crt"):
        TlsMaterial.from_secret_data({"tls.key": b"k", "ca.crt": b"c"})


def test_secret_data_with_garbage_pem_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unreadable"):
        TlsMaterial.from_secret_data({"tls.crt": b"x", "tls.key": b"k", "ca.crt": b"c"})


def test_a_certificate_needs_a_host() -> None:
    ca_pem, ca_key = generate_ca(NOW, DAY)
    with pytest.raises(ConfigurationError):
        issue_serving_certificate(ca_pem, ca_key, [], NOW, DAY)


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="127.0.0.1"
        )
        data = await reader.read()
        writer.close()
        return data
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_client_trusting_the_bundle_completes_a_tls_handshake() -> None:
    material = _fresh(datetime.now(UTC))
    client = ssl.create_default_context(cadata=material.ca_bundle_pem.decode())
    assert await _handshake(load_server_context(material), client) == b"hello"


async def test_a_reloaded_context_serves_the_new_certificate_to_new_connections() -> None:
    now = datetime.now(UTC)
    first, second = _fresh(now), _fresh(now)
    context = load_server_context(first)
    load_server_context(second, context)
    trusts_second = ssl.create_default_context(cadata=second.ca_bundle_pem.decode())
    assert await _handshake(context, trusts_second) == b"hello"
    trusts_first = ssl.create_default_context(cadata=first.ca_bundle_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(context, trusts_first)
