"""REST API v1 put together: the routes of every app's endpoints under /api/v1, the OpenAPI
schema and docs, and the endpoints that read across apps (/me). The plumbing every endpoint
uses lives below: errors, fields and pages in portal.core.api, keys, scopes, rate limits and
Idempotency-Key in portal.apikeys."""
