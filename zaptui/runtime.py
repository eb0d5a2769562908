"""What a process needs to talk to the outside: URLs, credentials and clients.

The console, the CLI and the headless scheduler each build one `Runtime`; the
services and the sync engine take it instead of reading the environment.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from zaptui import settings
from zaptui.apilog import ApiLog, DatabaseApiLog
from zaptui.domain.address import AddressVerifier
from zaptui.klaviyo.client import KlaviyoClient
from zaptui.klaviyo.client import RetryPolicy as KlaviyoRetry
from zaptui.klaviyo.limiter import RateLimiter
from zaptui.store.secrets import SecretBox
from zaptui.zappost.client import RetryPolicy as ZapPostRetry
from zaptui.zappost.client import ZapPostClient

KLAVIYO_URL = "https://a.klaviyo.com"
ZAPPOST_URL = "https://api.zappost.com"

Sleep = Callable[[float], Awaitable[Any]]


class ConfigurationError(RuntimeError):
    """Something the process needs is not configured."""


def default_actor(environ: Mapping[str, str] | None = None) -> str:
    """Who is acting: ZAPTUI_ACTOR, else the SSH login over SSH, else the OS user.

    A console served over SSH runs as the account the SSH server started it
    under; the login the operator used is in USER (or LOGNAME) and the client's
    address in SSH_CONNECTION, so both go into the audit trail.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("ZAPTUI_ACTOR", "").strip()
    if explicit:
        return explicit[:255]
    connection = env.get("SSH_CONNECTION", "").split()
    if connection:
        login = (env.get("USER") or env.get("LOGNAME") or "").strip()
        if login:
            return f"{login} (ssh from {connection[0]})"[:255]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def process_identity() -> str:
    """A name for this process in leases: host, pid and a random tail."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    """URLs, credentials, client policies, the API log and this process's identity.

    The retry policies, `sleep`, timeouts and `klaviyo_limiter` default to what
    production needs; tests and benchmarks pass faster or unlimited ones.
    `address_verifier` plugs a PAF, gone-away or deceased check into cleansing.
    """

    klaviyo_url: str = KLAVIYO_URL
    zap_url: str = ZAPPOST_URL
    zap_api_key: str | None = None
    zap_api_password: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    api_log: ApiLog = field(default_factory=DatabaseApiLog)
    actor: str = field(default_factory=default_actor)
    owner: str = field(default_factory=process_identity)
    klaviyo_retry: KlaviyoRetry | None = None
    zap_retry: ZapPostRetry | None = None
    klaviyo_limiter: RateLimiter | None = None
    klaviyo_timeout: float = 30.0
    zap_timeout: float = 60.0
    sleep: Sleep = asyncio.sleep
    address_verifier: AddressVerifier | None = None
    _secrets: SecretBox | None = None
    _ssl: ssl.SSLContext | None = None

    @classmethod
    def from_env(
        cls, klaviyo_url: str | None = None, zap_url: str | None = None, **options: Any
    ) -> Runtime:
        """Build from explicit values, else ZAPTUI_* variables, else the real APIs."""
        return cls(
            klaviyo_url=klaviyo_url
            or os.environ.get("ZAPTUI_KLAVIYO_URL")
            or KLAVIYO_URL,
            zap_url=zap_url or os.environ.get("ZAPTUI_ZAP_URL") or ZAPPOST_URL,
            zap_api_key=os.environ.get("ZAPTUI_ZAP_API_KEY") or None,
            zap_api_password=os.environ.get("ZAPTUI_ZAP_API_PASSWORD") or None,
            **options,
        )

    @property
    def secrets(self) -> SecretBox:
        """The box that encrypts and decrypts stored secrets (made on first use)."""
        if self._secrets is None:
            self._secrets = SecretBox()
        return self._secrets

    def http_transport(self) -> httpx.AsyncBaseTransport:
        """The transport for a new client: the given one, else HTTP(S) over TCP.

        Loading the trusted certificates takes tens of milliseconds, so every
        client of this process shares one TLS context.
        """
        if self.transport is not None:
            return self.transport
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return httpx.AsyncHTTPTransport(verify=self._ssl)

    def klaviyo(self, api_key: str) -> KlaviyoClient:
        """A Klaviyo client for one account's private key."""
        return KlaviyoClient(
            api_key,
            base_url=self.klaviyo_url,
            api_log=self.api_log,
            transport=self.http_transport(),
            retry=self.klaviyo_retry,
            limiter=self.klaviyo_limiter,
            timeout=self.klaviyo_timeout,
            sleep=self.sleep,
        )

    def zap_credentials(self) -> tuple[str, str]:
        """The ZAP~POST API key and password: from the environment or the settings."""
        key = self.zap_api_key or settings.get("zap_api_key")
        password = self.zap_api_password
        if not password:
            stored = settings.get("zap_api_password_encrypted")
            password = self.secrets.decrypt(stored) if stored else ""
        if not key or not password:
            raise ConfigurationError(
                "ZAP~POST credentials are not set: export ZAPTUI_ZAP_API_KEY and "
                "ZAPTUI_ZAP_API_PASSWORD, or run `zaptui zap login`"
            )
        return key, password

    def zappost(self) -> ZapPostClient:
        """A ZAP~POST client with this process's credentials."""
        key, password = self.zap_credentials()
        return ZapPostClient(
            key,
            password,
            base_url=self.zap_url,
            api_log=self.api_log,
            transport=self.http_transport(),
            retry=self.zap_retry,
            timeout=self.zap_timeout,
            sleep=self.sleep,
        )
