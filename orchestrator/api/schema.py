"""The OpenAPI 3.1 description of the events API, served at /api/v1/schema.

Written by hand: three routes do not need a framework (and drf is not one this
project uses). The event object is audit.jsonl.LINE_SCHEMA itself, which OpenAPI
3.1 takes as is (its schemas are JSON Schema 2020-12), so the document cannot
drift from what parse_record validates. tests/orchestrator/api/test_schema.py
fails when a route in urls.py is missing here.
"""

import copy
from typing import Any

from django.conf import settings

from audit.jsonl import LINE_SCHEMA

VERSION = "1.0.0"


def _event_schema() -> dict[str, Any]:
    schema = copy.deepcopy(LINE_SCHEMA)
    # Inside an OpenAPI document the dialect is the document's (jsonSchemaDialect).
    schema.pop("$schema", None)
    schema["description"] = (
        "An event in the legacy JSON Lines format. Without event_id, the id is derived "
        "from the content, so sending the same line twice stores it once. event_type "
        "must be a registered type."
    )
    return schema


def _errors(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}

COMMON_ERRORS: dict[str, Any] = {
    "401": _errors("No key, a malformed Authorization header, or an unknown key."),
    "403": _errors("The key is revoked or lacks the scope this operation needs."),
    "429": {**_errors("Too many requests for this key."), "headers": RETRY_AFTER},
    "503": {
        **_errors("The database cannot be reached or refuses writes; nothing was stored."),
        "headers": RETRY_AFTER,
    },
}

CURSOR = _query("cursor", "Where the page starts; take it from `next` rather than building it.")


def openapi_document(server_url: str = "/") -> dict[str, Any]:
    max_events = settings.EVENTS_API_MAX_EVENTS
    max_bytes = settings.EVENTS_API_MAX_BYTES
    event_array = {
        "type": "array",
        "maxItems": max_events,
        "items": {"$ref": "#/components/schemas/Event"},
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Automation orchestrator events API",
            "version": VERSION,
            "description": (
                "Write events into the audit trail and read them back. Authenticate with "
                "`Authorization: Bearer <key>`; keys are made by `manage.py create_api_key "
                "--scope events:read --scope events:write`. Every call a key makes is "
                f"itself audited (actor `api:<key name>`). At most {max_events} events and "
                f"{max_bytes} bytes per POST; requests per key are rate-limited "
                f"({settings.EVENTS_API_RATE})."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/events": {
                "post": {
                    "operationId": "writeEvents",
                    "summary": "Store events (scope events:write)",
                    "description": (
                        "Each event is validated on its own; valid ones are stored in one "
                        "transaction with the request's audit event, or (503) none is. "
                        "Idempotent by event id: a repeat is listed in `already_present`."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": event_array},
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "One event object per line (JSON Lines).",
                                },
                            },
                            "application/jsonl": {
                                "schema": {
                                    "type": "string",
                                    "description": "One event object per line (JSON Lines).",
                                },
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "What became of each event.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/WriteResult"}
                                }
                            },
                        },
                        "400": _errors("The body is not JSON, or not an array of events."),
                        "413": _errors(f"More than {max_bytes} bytes or {max_events} events."),
                        "415": _errors("A Content-Type other than the three accepted."),
                        **COMMON_ERRORS,
                    },
                },
                "get": {
                    "operationId": "listEvents",
                    "summary": "Page through events, newest first (scope events:read)",
                    "description": "The event browser's filters, with the same meaning.",
                    "parameters": [
                        _query(
                            "range",
                            "The period: 24h, 7d (default), 30d, 90d, or custom with since "
                            "and until.",
                            {"type": "string", "enum": ["24h", "7d", "30d", "90d", "custom"]},
                        ),
                        _query("since", "Start of a custom range: a date or ISO datetime."),
                        _query("until", "End of a custom range (a date counts whole)."),
                        {
                            **_query(
                                "type",
                                "Event types; repeat for several.",
                                {"type": "array", "items": {"type": "string"}},
                            ),
                            "style": "form",
                            "explode": True,
                        },
                        _query("workflow", "Workflow name."),
                        _query("lead", "Lead id."),
                        _query("actor", "Actor, e.g. api:siem or user:alice."),
                        _query("correlation", "Correlation id."),
                        _query("fingerprint", "Error group."),
                        _query("q", "Text in details."),
                        CURSOR,
                    ],
                    "responses": {
                        "200": {
                            "description": "One page of events.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/EventPage"}
                                }
                            },
                        },
                        "400": _errors("A bad filter or cursor; the message says which."),
                        **COMMON_ERRORS,
                    },
                },
            },
            "/api/v1/leads/{lead_id}/history": {
                "get": {
                    "operationId": "leadHistory",
                    "summary": "One lead's events, oldest first (scope events:read)",
                    "parameters": [
                        {
                            "name": "lead_id",
                            "in": "path",
                            "required": True,
                            "description": "The lead's public id, percent-encoded; may hold '/'.",
                            "schema": {"type": "string"},
                        },
                        CURSOR,
                    ],
                    "responses": {
                        "200": {
                            "description": "One page of the lead's history.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/LeadHistory"}
                                }
                            },
                        },
                        "400": _errors("A bad cursor."),
                        "404": _errors("No events for this lead id."),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/api/v1/schema": {
                "get": {
                    "operationId": "schema",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "lo_<prefix>_<secret>",
                }
            },
            "schemas": {
                "Event": _event_schema(),
                "WriteResult": {
                    "type": "object",
                    "required": ["accepted", "already_present", "rejected"],
                    "properties": {
                        "accepted": {
                            "type": "array",
                            "items": {"type": "string", "format": "uuid"},
                            "description": "Ids of the events stored by this request.",
                        },
                        "already_present": {
                            "type": "array",
                            "items": {"type": "string", "format": "uuid"},
                            "description": "Ids stored before (or sent twice in this request).",
                        },
                        "rejected": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["index", "reason"],
                                "properties": {
                                    "index": {
                                        "type": "integer",
                                        "description": (
                                            "Position in the array, or the line's number "
                                            "from 0 in JSON Lines (blank lines count)."
                                        ),
                                    },
                                    "reason": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "EventPage": {
                    "type": "object",
                    "required": ["events", "next"],
                    "properties": {
                        "events": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Event"},
                        },
                        "next": {
                            "type": ["string", "null"],
                            "description": "URL of the next page; null on the last.",
                        },
                    },
                },
                "LeadHistory": {
                    "type": "object",
                    "required": ["lead_id", "events", "next"],
                    "properties": {
                        "lead_id": {"type": "string"},
                        "events": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Event"},
                        },
                        "next": {"type": ["string", "null"]},
                    },
                },
                "Errors": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "object",
                            "description": "Messages by field; non_field_errors for the rest.",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        }
                    },
                },
            },
        },
    }
