"""The SSH Manhole: a Python prompt inside the running instance, for operators.

Public-key authentication only (an ``authorized_keys`` file, re-read at every login, so adding a
key needs no restart; any user name).  The host key is an Ed25519 key generated on first start.
Bind it to loopback (``tcp:2222:interface=127.0.0.1``) and reach it through SSH to the host.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred import portal
from twisted.logger import Logger
from zope.interface import implementer

_log = Logger(namespace="anygle.manhole")


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """``IAuthorizedKeysDB`` over one file in OpenSSH ``authorized_keys`` format."""

    def __init__(self, path: str) -> None:
        self.path = path

    def getAuthorizedKeys(self, username: bytes) -> list[keys.Key]:
        try:
            with open(self.path, "rb") as f:
                return list(readAuthorizedKeyFile(f))
        except OSError as e:
            _log.warn("manhole: cannot read {path}: {err}", path=self.path, err=e.strerror)
            return []


def load_or_create_host_key(path: str) -> keys.Key:
    """The host key at ``path``; a new Ed25519 key is written there (mode 0600) if absent."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        key = keys.Key(Ed25519PrivateKey.generate())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.toString("OPENSSH"))
        _log.info("manhole: generated host key {path}", path=path)
    return keys.Key.fromFile(path)


def manhole_factory(namespace: dict[str, Any], authorized_keys: str, host_key_path: str) -> Any:
    realm = manhole_ssh.TerminalRealm()
    realm.chainedProtocolFactory = lambda: insults.ServerProtocol(manhole.ColoredManhole, namespace)
    checker = SSHPublicKeyChecker(AuthorizedKeysFile(authorized_keys))
    factory = manhole_ssh.ConchFactory(portal.Portal(realm, [checker]))
    host_key = load_or_create_host_key(host_key_path)
    key_type = host_key.sshType()
    factory.publicKeys = {key_type: host_key.public()}
    factory.privateKeys = {key_type: host_key}
    return factory
