"""The SSH Manhole: a Python prompt inside the running instance, for operators.

Public-key authentication only (an ``authorized_keys`` file, re-read at every login, so adding a
key needs no restart; any user name).  The host key is an Ed25519 key generated on first start.
Bind it to loopback (``tcp:2222:interface=127.0.0.1``) and reach it through SSH to the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred.portal import IRealm, Portal
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
    return cast(keys.Key, keys.Key.fromFile(path))  # conch's keys module has no type hints


@implementer(IRealm)
class ManholeRealm(manhole_ssh.TerminalRealm):
    """Twisted's TerminalRealm (an IRealm that does not declare it) whose terminals run a
    ``ColoredManhole`` over ``namespace``."""

    # Twisted leaves this unannotated, so mypy takes the type of its default (the class
    # ServerProtocol); Twisted only ever calls it with no arguments, and its own manhole_tap
    # assigns a plain callable, as here
    chainedProtocolFactory: Callable[[], insults.ServerProtocol]  # type: ignore[assignment]

    def __init__(self, namespace: dict[str, Any]) -> None:
        super().__init__()
        self.chainedProtocolFactory = lambda: insults.ServerProtocol(
            manhole.ColoredManhole, namespace
        )


def manhole_factory(
    namespace: dict[str, Any], authorized_keys: str, host_key_path: str
) -> manhole_ssh.ConchFactory:
    checker = SSHPublicKeyChecker(AuthorizedKeysFile(authorized_keys))
    factory = manhole_ssh.ConchFactory(Portal(ManholeRealm(namespace), [checker]))
    host_key = load_or_create_host_key(host_key_path)
    key_type: bytes = host_key.sshType()
    factory.publicKeys = {key_type: host_key.public()}
    # ConchFactory annotates the key maps as dict[bytes, bytes], but Twisted's SSH code uses
    # the values as keys.Key (twisted.conch.ssh.factory calls supportedSignatureAlgorithms)
    factory.privateKeys = {key_type: host_key}  # type: ignore[dict-item]
    return factory
