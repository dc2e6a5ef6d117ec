"""Schemathesis hooks for Sarvam's contract test (Tests/ChatServerTests/ContractFuzzTests.swift).

Every generated case is kept as generated, except that a generating request asks for at most
3 tokens, conversations included (the contract allows any positive max_tokens; this keeps 1,000
cases within minutes on two cores), and three of four leave out `model` so that most cases reach the engine instead of
stopping at 404 model_not_found.
"""
import zlib

import schemathesis

GENERATING = {"/v1/chat/completions", "/v1/completions"}
REPLYING = {"/api/conversations/{id}/messages", "/api/conversations/{id}/regenerate", "/api/conversations"}
LIMIT = 3


@schemathesis.hook
def map_body(context, body):
    path = context.operation.path
    if not isinstance(body, dict):
        return body
    if path in GENERATING:
        if zlib.crc32(repr(sorted(body.items(), key=lambda kv: kv[0])).encode()) % 4 != 0:
            body.pop("model", None)
        if "max_completion_tokens" in body:
            body["max_completion_tokens"] = min(body["max_completion_tokens"], LIMIT)
        else:
            body["max_tokens"] = min(body.get("max_tokens", LIMIT), LIMIT)
        if "min_tokens" in body:
            body["min_tokens"] = min(body["min_tokens"], LIMIT)
    elif path in REPLYING:
        body["max_tokens"] = min(body.get("max_tokens", LIMIT), LIMIT)
    return body
