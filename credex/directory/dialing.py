"""The directory's channels to nodes: only to endpoints its policy allows, whoever stored them
(an announcement, an operator command, or a database from before endpoints were checked)."""

from __future__ import annotations

import logging

import grpc

from credex.protocol.channels import ChannelPool
from credex.protocol.endpoints import EndpointError, EndpointPolicy
from credex.protocol.errors import Reason, refused
from credex.protocol.tls import TlsIdentity

log = logging.getLogger(__name__)


class GuardedChannels(ChannelPool):
    def __init__(
        self, tls: TlsIdentity, policy: EndpointPolicy, *, max_receive_bytes: int | None = None
    ) -> None:
        super().__init__(tls, max_receive_bytes=max_receive_bytes)
        self._policy = policy

    def get(self, target: str) -> grpc.aio.Channel:
        """A channel to `target`; ENDPOINT_REFUSED, logged, if the policy
        refuses it: nothing is dialed."""
        try:
            self._policy.check(target)
        except EndpointError as exc:
            log.warning("not dialing %r: %s", target, exc)
            raise refused(Reason.ENDPOINT_REFUSED, str(exc)) from None
        return super().get(target)
