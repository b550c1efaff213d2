"""A pilot's keys and certificates, made with ``cryptography``: the federation's CA, the SuperLink's TLS
certificate, and one SuperNode authentication key pair per institution.

Formats are the ones Flower 1.41 reads: PEM certificates and keys for the SuperLink's TLS
(``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``, ``--root-certificates`` on a SuperNode), and OpenSSH
ECDSA P-384 keys for node authentication (``flwr supernode register KEY.pub``, ``flower-supernode
--auth-supernode-private-key KEY``). A federation is named by its CA: ``federation_id`` is the SHA-256 of the CA
certificate, written into every kit so that a kit of another federation is told apart at start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedlearn.errors import ConfigError

CURVE = ec.SECP384R1()
CA_DAYS = 3 * 365
SERVER_DAYS = 365


@dataclass(frozen=True)
class Authority:
    """The federation's certificate authority: signs the SuperLink's certificate, nothing else."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def federation_id(self) -> str:
        return federation_id(self.certificate)


def federation_id(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _name(common_name: str, federation: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_authority(federation: str, now: dt.datetime | None = None) -> Authority:
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(CURVE)
    name = _name(f"{federation} CA", federation)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return Authority(key, certificate)


def make_server_certificate(authority: Authority, host: str, federation: str,
                            now: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's key and certificate; its SAN is ``host`` (an IP address or a DNS name) and, so that the
    same kit serves a proof of concept, localhost and 127.0.0.1."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(CURVE)
    names: list[x509.GeneralName] = []
    for entry in dict.fromkeys([host, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    certificate = (
        x509.CertificateBuilder().subject_name(_name(host, federation))
        .issuer_name(authority.certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
                       critical=False)
        .sign(authority.key, hashes.SHA384())
    )
    return key, certificate


def make_node_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE)


def pem_certificate(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def pem_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ssh_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def ssh_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"


def write_secret(path: Path, data: bytes) -> None:
    """A private key: readable by its owner only."""
    path.write_bytes(data)
    path.chmod(0o600)


def read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"certificate {path} cannot be read: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def read_node_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = _read_ssh(path, lambda data: serialization.load_ssh_private_key(data, None), "private key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an ECDSA key (node authentication needs P-384)")
    return key


def read_node_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    key = _read_ssh(path, serialization.load_ssh_public_key, "public key")
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{path} is not an ECDSA key (node authentication needs P-384)")
    return key


def _read_ssh(path: Path, load: Callable[[bytes], object], what: str) -> object:
    try:
        return load(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"node {what} {path} cannot be read: {exc.strerror}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path} is not an OpenSSH {what}") from None


def same_key(a: ec.EllipticCurvePublicKey, b: ec.EllipticCurvePublicKey) -> bool:
    return ssh_public_key(a) == ssh_public_key(b)


def issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``certificate``."""
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
