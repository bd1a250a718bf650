"""A real broker with a SASL_SSL listener, as managed Kafka services run them: SCRAM-SHA-512
users over TLS, with a CA and a broker certificate made here for the test.

The broker keeps a PLAINTEXT listener on its usual port for the harness (readiness, topic
checks); the clients under test get only the SASL_SSL address and the client settings.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from convmetrics.localkafka import LocalBroker
from convmetrics.localkafka.broker import HOST, pick_free_ports

USER = "convmetrics"
PASSWORD = "s3cret-Scram-pw"  # the test's own credential; a wrong one must be refused
MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class SecuredBroker:
    broker: LocalBroker
    bootstrap: str  # the SASL_SSL listener
    ca: Path  # the CA certificate (PEM), for ssl.ca.location

    def client_settings(self, password: str = PASSWORD) -> dict[str, str]:
        """librdkafka settings of a client of this broker."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": USER,
            "sasl.password": password,
            "ssl.ca.location": str(self.ca),
        }

    def environment(self, password: str = PASSWORD) -> dict[str, str]:
        """The same settings as `CONVMETRICS_KAFKA_*` variables."""
        return {
            "CONVMETRICS_KAFKA_" + k.upper().replace(".", "_"): v
            for k, v in self.client_settings(password).items()
        }


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificates(folder: Path) -> tuple[Path, Path]:
    """A CA (PEM certificate) and the broker's keystore (PEM: PKCS#8 key, then its
    certificate signed by the CA, for 127.0.0.1 and localhost)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("convmetrics test CA"))
        .issuer_name(_name("convmetrics test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(HOST))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, keystore = folder / "ca.pem", folder / "broker.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    keystore.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return ca_path, keystore


def start_secured_broker(local_broker: Callable[..., LocalBroker], folder: Path) -> SecuredBroker:
    """A broker (from the `local_broker` fixture) with a SASL_SSL listener and one SCRAM user."""
    ca, keystore = make_certificates(folder / "tls")
    plain, secured, controller = pick_free_ports(3)  # distinct: two listeners on one port fail
    props: dict[str, Any] = {
        "listeners": f"PLAINTEXT://{HOST}:{plain},SASL_SSL://{HOST}:{secured},CONTROLLER://{HOST}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{plain},SASL_SSL://{HOST}:{secured}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": f"1@{HOST}:{controller}",
        "sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
    }
    broker = local_broker(
        port=plain,
        extra_properties=props,
        format_args=["--add-scram", f"{MECHANISM}=[name={USER},password={PASSWORD}]"],
    )
    return SecuredBroker(broker, f"{HOST}:{secured}", ca)
