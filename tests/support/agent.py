"""
An ssh-agent in memory, for L{twisted_rfwd.client.agent.AgentClient}: it holds keys and answers
the client's requests only when the test calls L{FakeAgent.pump}, so every signature arrives
later, as a real agent's does.
"""

from __future__ import annotations

import struct

from twisted.conch.ssh.keys import Key
from twisted.internet.testing import StringTransport

from twisted_rfwd.client.agent import (
    SSH_AGENT_FAILURE,
    SSH_AGENT_IDENTITIES_ANSWER,
    SSH_AGENT_RSA_SHA2_256,
    SSH_AGENT_RSA_SHA2_512,
    SSH_AGENT_SIGN_RESPONSE,
    SSH_AGENTC_REQUEST_IDENTITIES,
    SSH_AGENTC_SIGN_REQUEST,
    AgentClient,
    AgentIdentity,
)
from twisted_rfwd.protocol.wire import Reader, pack_string


class FakeAgent:
    """Keys and a connected L{AgentClient}; C{requests} records (type, key blob, flags)."""

    def __init__(self, keys: list[Key], comment: str = "test@agent") -> None:
        self.keys = {key.blob(): key for key in keys}
        self.comment = comment
        self.refuse_signing = False
        self.requests: list[tuple[int, bytes, int]] = []
        self.transport = StringTransport()
        self.client = AgentClient()
        self.client.makeConnection(self.transport)

    def identities(self) -> list[AgentIdentity]:
        """One identity per key, signing through this agent."""
        return [
            AgentIdentity(key.public(), f"agent key {self.comment}", self.client)
            for key in self.keys.values()
        ]

    def pump(self) -> int:
        """Answer every request written so far; how many there were."""
        data = self.transport.value()
        self.transport.clear()
        answered = 0
        while data:
            (length,) = struct.unpack(">I", data[:4])
            message, data = data[4 : 4 + length], data[4 + length :]
            self.client.dataReceived(self._answer(message))
            answered += 1
        return answered

    def _answer(self, message: bytes) -> bytes:
        kind, reader = message[0], Reader(message[1:], "agent request")
        if kind == SSH_AGENTC_REQUEST_IDENTITIES:
            self.requests.append((kind, b"", 0))
            body = struct.pack(">I", len(self.keys)) + b"".join(
                pack_string(blob) + pack_string(self.comment.encode()) for blob in self.keys
            )
            return _frame(SSH_AGENT_IDENTITIES_ANSWER, body)
        if kind == SSH_AGENTC_SIGN_REQUEST:
            blob, data, flags = reader.string(), reader.string(), reader.uint32()
            self.requests.append((kind, blob, flags))
            key = self.keys.get(blob)
            if key is None or self.refuse_signing:
                return _frame(SSH_AGENT_FAILURE, b"")
            algorithm = key.sshType()
            if algorithm == b"ssh-rsa":
                if flags & SSH_AGENT_RSA_SHA2_512:
                    algorithm = b"rsa-sha2-512"
                elif flags & SSH_AGENT_RSA_SHA2_256:
                    algorithm = b"rsa-sha2-256"
            signature = key.sign(data, signatureType=algorithm)
            return _frame(SSH_AGENT_SIGN_RESPONSE, pack_string(signature))
        return _frame(SSH_AGENT_FAILURE, b"")


def _frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body
