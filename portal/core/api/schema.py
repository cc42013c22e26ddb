"""Every operation documents its error responses, in the one error shape (drf-spectacular
postprocessing hook)."""

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
        }
    },
}
ALWAYS = {
    "400": "The request is not valid; `fields` says which parts.",
    "401": "No key, or a malformed, unknown, revoked or expired one.",
    "403": "The key lacks a scope, or its owner may not do this.",
    "404": "Not found, or not yours.",
    "406": "The Accept header asks for something other than JSON.",
    "429": "The key's rate limit is reached; see Retry-After.",
}
ON_POST = {
    "409": "Wrong state for this, or the same Idempotency-Key is still in flight.",
    "415": "The body is not JSON.",
    "422": "This Idempotency-Key was used with a different request.",
}


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            errors = {**ALWAYS, **(ON_POST if method == "post" else {})}
            responses = operation.setdefault("responses", {})
            for code, description in errors.items():
                responses.setdefault(code, {"description": description, "content": reference})
    return result
