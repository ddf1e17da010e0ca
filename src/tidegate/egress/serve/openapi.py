"""The OpenAPI 3.1 description of the serving API, written out, with every error declared.

Every route is plain Starlette (see the README, "Why this ASGI stack"), so the document
is written out rather than inferred; the routes other stages add (event ingestion,
consent, subject requests) bring their own paths, merged in by `api/`. The
schemathesis suite (`tests/security/`) checks every response against this document.
"""

from __future__ import annotations

from typing import Any

from tidegate.egress.serve.service import MAX_KEY_LENGTH, MAX_LOOKUP_KEYS

JSON = "application/json"
REF = "#/components/schemas/"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TREATMENTS = {
    "type": "object",
    "additionalProperties": {
        "type": "string",
        "enum": ["clear", "mask", "hash", "generalize", "drop"],
    },
}
_ROW = {"type": "object", "additionalProperties": True, "description": "treated columns"}
_PURPOSE_LIST = {"type": "array", "items": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "Entity": {
        "type": "object",
        "required": ["product", "key", "purpose", "version", "treatments", "data"],
        "properties": {
            "product": {"type": "string"},
            "key": {"type": "string"},
            "purpose": {"type": "string"},
            "version": {"type": "integer"},
            "built_at": _NULLABLE_TIME,
            "updated_at": {**_NULLABLE_TIME, "description": "when this value was last written"},
            "treatments": _TREATMENTS,
            "data": _ROW,
        },
    },
    "LookupRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_LOOKUP_KEYS,
                "items": {
                    "oneOf": [
                        {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                        {"type": "integer"},
                    ]
                },
            }
        },
    },
    "LookupResult": {
        "type": "object",
        "required": ["key", "found"],
        "properties": {
            "key": {"type": "string"},
            "found": {"type": "boolean"},
            "data": _ROW,
            "updated_at": _NULLABLE_TIME,
        },
    },
    "Lookup": {
        "type": "object",
        "required": ["product", "purpose", "treatments", "results"],
        "properties": {
            "product": {"type": "string"},
            "purpose": {"type": "string"},
            "version": {"type": ["integer", "null"]},
            "built_at": _NULLABLE_TIME,
            "treatments": _TREATMENTS,
            "results": {"type": "array", "items": {"$ref": REF + "LookupResult"}},
        },
    },
    "ProductSummary": {
        "type": "object",
        "required": ["name", "owner", "purposes", "allowed_purposes"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "owner": {"type": "string"},
            "purposes": _PURPOSE_LIST,
            "allowed_purposes": _PURPOSE_LIST,
        },
    },
    "ProductList": {
        "type": "object",
        "required": ["products"],
        "properties": {"products": {"type": "array", "items": {"$ref": REF + "ProductSummary"}}},
    },
    "Product": {
        "type": "object",
        "required": ["name", "owner", "key", "purposes", "columns", "freshness"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "owner": {"type": "string"},
            "contract_version": {"type": ["string", "null"]},
            "key": {"type": "string"},
            "subject": {"type": ["string", "null"]},
            "purposes": _PURPOSE_LIST,
            "allowed_purposes": _PURPOSE_LIST,
            "columns": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "description": {"type": "string"},
                        "classification": {"type": ["string", "null"]},
                        "nullable": {"type": "boolean"},
                    },
                },
            },
            "freshness": {
                "type": "object",
                "properties": {
                    "slo": {"type": "string"},
                    "slo_seconds": {"type": "number"},
                    "mode": {"type": ["string", "null"]},
                    "last_update": _NULLABLE_TIME,
                    "lag_seconds": {"type": ["number", "null"]},
                    "breaches": {"type": "integer"},
                },
            },
            "ttl_seconds": {"type": ["number", "null"]},
            "version": {"type": ["integer", "null"]},
            "built_at": _NULLABLE_TIME,
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "project": {"type": "string"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "project": {"type": "string"},
            "down": {"type": "array", "items": {"type": "string"}},
            "checks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "backend": {"type": "string"},
                        "ok": {"type": "boolean"},
                        "ms": {"type": "number"},
                        "note": {"type": "string"},
                    },
                },
            },
        },
    },
}

_DESCRIPTIONS = {
    "400": "No purpose declared, or a malformed request",
    "401": "No, unknown, expired or revoked credentials",
    "403": "The caller's roles may not use this purpose or product, or the purpose is unknown",
    "404": "Unknown product or entity, or a subject without a legal basis for the purpose "
    "(the same answer either way)",
    "413": "Request body too large",
    "415": "The body is not JSON",
    "422": "The body does not match the schema (e.g. more than 1,000 keys)",
    "503": "A backend is unavailable",
    "429": "Rate limit exceeded; see Retry-After",
}


def _errors(*codes: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS[code],
            "content": {JSON: {"schema": {"$ref": REF + "Error"}}},
        }
        if code == "429":
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        out[code] = response
    return out


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {JSON: {"schema": {"$ref": REF + schema}}}}
    }


_PURPOSE = {
    "name": "X-Purpose",
    "in": "header",
    "required": True,
    "description": "Why the data is read; the caller's roles must allow it (e.g. support)",
    "schema": {"type": "string"},
}
_PRODUCT = {"name": "product", "in": "path", "required": True, "schema": {"type": "string"}}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def build(
    extra: dict[str, Any] | None = None,
    version: str = "0.1.0",
    products: list[str] | None = None,
) -> dict[str, Any]:
    """The document; `extra` holds other stages' paths and component schemas, merged in;
    `products` (the project's) become the `product` parameter's enum."""
    product_param = dict(_PRODUCT)
    if products:
        product_param["schema"] = {"type": "string", "enum": sorted(products)}
    paths: dict[str, Any] = {
        "/v1/health": {
            "get": {
                "summary": "Liveness",
                "operationId": "health",
                "security": [],
                "responses": _ok("Health", "The server answers"),
            }
        },
        "/v1/health/live": {
            "get": {
                "summary": "Liveness: the process answers (backends are not checked)",
                "operationId": "healthLive",
                "security": [],
                "responses": _ok("Health", "The server answers"),
            }
        },
        "/v1/health/ready": {
            "get": {
                "summary": "Readiness: warehouse, online store, event log and metadata answer",
                "operationId": "healthReady",
                "security": [],
                "responses": {
                    **_ok("Readiness", "Every backend answers"),
                    "503": {
                        "description": "A backend is down; `down` names it",
                        "content": {JSON: {"schema": {"$ref": REF + "Readiness"}}},
                    },
                },
            }
        },
        "/v1/products": {
            "get": {
                "summary": "Products the caller's roles may read",
                "operationId": "listProducts",
                "responses": {
                    **_ok("ProductList", "The products"),
                    **_errors("400", "401", "429"),
                },
            }
        },
        "/v1/products/{product}": {
            "get": {
                "summary": "A product's contract, owner, freshness and allowed purposes",
                "operationId": "describeProduct",
                "parameters": [product_param],
                "responses": {
                    **_ok("Product", "The product"),
                    **_errors("400", "401", "403", "404", "429"),
                },
            }
        },
        "/v1/products/{product}/entities/{key}": {
            "get": {
                "summary": "One entity, as the declared purpose may see it",
                "operationId": "getEntity",
                "parameters": [
                    product_param,
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                    _PURPOSE,
                ],
                "responses": {
                    **_ok("Entity", "The entity, treated for the purpose"),
                    **_errors("400", "401", "403", "404", "429"),
                },
            }
        },
        "/v1/products/{product}/lookup": {
            "post": {
                "summary": f"Up to {MAX_LOOKUP_KEYS:,} entities in one call",
                "description": "A key whose subject may not be seen for the purpose is "
                "`found: false`, exactly like a key that does not exist.",
                "operationId": "lookup",
                "parameters": [product_param, _PURPOSE],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"$ref": REF + "LookupRequest"}}},
                },
                "responses": {
                    **_ok("Lookup", "One result per requested key, in order"),
                    **_errors("400", "401", "403", "404", "413", "415", "422", "429"),
                },
            }
        },
    }
    schemas = dict(SCHEMAS)
    if extra:
        for path, item in extra.get("paths", {}).items():
            for operation in item.values():
                # these routes answer errors through the same handlers, in the same shape
                operation.setdefault("responses", {}).update(
                    _errors("400", "401", "403", "404", "413", "422", "429")
                )
            paths.setdefault(path, item)
        for name, schema in extra.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(name, schema)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tidegate",
            "version": version,
            "description": "Governed data products, served through purpose and consent checks.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (tg_…) or, when configured, a JWT",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": _SECURITY,
    }
