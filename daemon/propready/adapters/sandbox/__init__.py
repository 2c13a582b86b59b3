"""`propready sandbox`: a local look-alike of the PlanOmatic V3 Order API on a real HTTP socket.

It implements the contract's documented behaviour and the assumptions of planomatic-api.md
section 7, with the uncertain ones (rate limit, duplicate protection, metadata key charset) in
`SandboxConfig`. Tests drive it over loopback and assert on `SandboxServer.orders`, the vendor's
ledger, instead of patching the client.

Modules: `config` (settings), `validation` (pure request checks), `ledger` (stored orders and the
rate limiter), `app` (the protocol without a socket), `server` (the socket).
"""

from propready.adapters.sandbox.config import SandboxConfig
from propready.adapters.sandbox.server import SandboxServer
from propready.adapters.sandbox.validation import validate_create

__all__ = ["SandboxConfig", "SandboxServer", "validate_create"]
