"""`propready serve`: the HTTP side of the vendor's news (design.md 8.2 and 8.5).

- `tokens`: the constant-time check of the secret in the callback URL;
- `app`: the Starlette app (POST /webhooks/planomatic/{token}, GET /healthz, GET /metrics);
- `access_log`: one structured log line per request, with the token cut out of the path;
- `metrics`: the receiver's Prometheus series;
- `server`: the configured listeners on uvicorn, bound up front so a busy port is one line.

What a delivery becomes once its bytes are in is `service.webhook_intake`'s business; this
package only moves bytes and answers the vendor.
"""
