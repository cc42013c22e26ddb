"""How the OpenAPI schema describes API-key authentication (imported by AppConfig.ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "portal.apikeys.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "nac_<key id>_<secret><checksum>",
            "description": "An API key from /api-keys/, sent as `Authorization: Bearer <key>`.",
        }
