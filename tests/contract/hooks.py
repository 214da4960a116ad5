"""Schemathesis hooks for the contract run (scripts/test.sh).

One filter, for the local stack only: `cargo lambda watch`, the stand-in for
API Gateway, answers two kinds of request itself, before any function runs,
with a response of its own:

- a JSON body that is not UTF-8: a 500 (cargo-lambda-watch's
  trigger_router.rs reads such bodies with String::from_utf8);
- a header value with bytes outside visible ASCII (DEL, Latin-1): a 500 when
  it builds the event's headers, or hyper's bare 400.

That is the emulator, not the service: the service reads bodies as bytes
(400 invalid_json) and header values as bytes (400 invalid_idempotency_key),
which tests/integration/handlers.rs checks with the events API Gateway sends.
"""

import schemathesis


def _visible_ascii(value):
    return all(" " <= ch <= "~" for ch in str(value))


@schemathesis.hook
def filter_case(context, case):
    if not all(_visible_ascii(v) for v in (case.headers or {}).values()):
        return False
    body = case.body
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True
