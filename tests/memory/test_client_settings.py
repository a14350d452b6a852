"""
ssh_config settings that change what rfwd-client does on the wire: HostKeyAlgorithms,
PubkeyAcceptedAlgorithms, AddressFamily and BindAddress (in memory, and the endpoint chosen).
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from tests.support.memory import MemoryRig
from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.tunnel import client_endpoint
from twisted_rfwd.errors import AuthenticationFailed
from twisted_rfwd.protocol.spec import parse_remote_forward


class AlgorithmSettingsTests(TestCase):
    def rig(self) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])

    def test_host_key_algorithms_are_what_the_client_offers(self) -> None:
        """HostKeyAlgorithms decides the host key algorithms the client offers, in its order."""
        rig = self.rig()
        rig.client_config.host_key_algorithms = [b"ecdsa-sha2-nistp256", b"ssh-ed25519"]
        self.successResultOf(rig.connect())
        assert rig.client is not None
        self.assertEqual(rig.client.supportedPublicKeys, [b"ecdsa-sha2-nistp256", b"ssh-ed25519"])
        self.assertEqual(rig.client.keyAlg, b"ssh-ed25519")

    def test_no_common_host_key_algorithm_fails(self) -> None:
        """With only ECDSA allowed and an ed25519 host key, the key exchange fails."""
        rig = self.rig()
        rig.client_config.host_key_algorithms = [b"ecdsa-sha2-nistp256"]
        self.failureResultOf(rig.connect())

    def test_pubkey_accepted_algorithms_skips_other_keys(self) -> None:
        """An ed25519 identity is not offered when PubkeyAcceptedAlgorithms lists only ECDSA."""
        rig = self.rig()
        rig.client_config.pubkey_accepted_algorithms = [b"ecdsa-sha2-nistp256"]
        failure = self.failureResultOf(rig.connect(), AuthenticationFailed)
        self.assertEqual(failure.value.tried, [])


class EndpointTests(TestCase):
    def endpoint(self, **settings: object) -> object:
        config = ClientConfig(host="hostb.example", user="u", **settings)  # type: ignore[arg-type]
        return client_endpoint(MemoryReactorClock(), config)

    def test_address_family(self) -> None:
        """AddressFamily any/inet/inet6 pick a dual-stack, IPv4 or IPv6 endpoint."""
        self.assertIsInstance(self.endpoint(), HostnameEndpoint)
        self.assertIsInstance(self.endpoint(address_family="inet"), TCP4ClientEndpoint)
        self.assertIsInstance(self.endpoint(address_family="inet6"), TCP6ClientEndpoint)

    def test_bind_address(self) -> None:
        """BindAddress is the local address the SSH connection leaves from."""
        endpoint = self.endpoint(address_family="inet", bind_address="127.0.0.2")
        assert isinstance(endpoint, TCP4ClientEndpoint)
        self.assertEqual(endpoint._bindAddress, ("127.0.0.2", 0))
