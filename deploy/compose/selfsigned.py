"""A certificate authority of one's own and a certificate it signs, to try HTTPS locally.

The compose deployment runs this once (its ``tls`` service) when the TLS volume has no
certificate yet, so that https://localhost:8443/ works out of the box; trust ``ca.pem`` in a
browser to see it without a warning, or put a real certificate in its place
(docs/operations.md, "HTTPS").  The tests use it for their own test CA.

    python selfsigned.py DIRECTORY [NAME ...]    (names: DNS names or IP addresses;
                                                  default localhost, 127.0.0.1, ::1)

writes ``ca.pem``, ``fullchain.pem`` (certificate, then the CA) and ``privkey.pem``, and leaves a
directory that already has ``fullchain.pem`` alone.  Only Python's ``cryptography``, which the
Anygle image has (Twisted's SSH console needs it).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Pair = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
DAY = datetime.timedelta(days=1)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def authority(common: str = "Anygle local test CA", days: int = 825) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def certificate(ca: Pair, names: list[str], days: int = 365, client: bool = False) -> Pair:
    """A server certificate for ``names`` (DNS names or IP addresses), signed by ``ca``; with
    ``client``, a client certificate instead (e.g. for a Redis that asks for one)."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + days * DAY)
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write(directory: str, names: list[str]) -> bool:
    """Write a new CA and certificate into ``directory`` unless it has one; True if written."""
    if os.path.exists(os.path.join(directory, "fullchain.pem")):
        return False
    os.makedirs(directory, exist_ok=True)
    ca = authority()
    key, cert = certificate(ca, names)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files = {"ca.pem": pem(ca[1]), "privkey.pem": private, "fullchain.pem": pem(cert) + pem(ca[1])}
    for name, data in files.items():  # fullchain.pem last: its presence means "done"
        path = os.path.join(directory, name)
        with open(f"{path}.tmp", "wb") as f:
            f.write(data)
        os.chmod(f"{path}.tmp", 0o600 if name == "privkey.pem" else 0o644)
        os.replace(f"{path}.tmp", path)
    return True


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory, names = sys.argv[1], sys.argv[2:] or ["localhost", "127.0.0.1", "::1"]
    made = write(directory, names)
    print(f"{directory}: {'new certificate for ' + ', '.join(names) if made else 'kept'}")
