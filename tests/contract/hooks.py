"""Schemathesis hooks for the contract run (scripts/test.sh).

One filter, for the local stack only: `cargo lambda watch`, the stand-in for
API Gateway, answers a JSON body that is not UTF-8 with a 500 of its own
before any function runs (cargo-lambda-watch's trigger_router.rs reads such
bodies with String::from_utf8). That is the emulator, not the service: the
service reads bodies as bytes and answers them 400 invalid_json, which
tests/integration/handlers.rs checks with the base64 event API Gateway sends.
"""

import schemathesis


@schemathesis.hook
def filter_case(context, case):
    body = case.body
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True
