"""The OpenAPI document: well-formed, and naming every route the API has."""

import re

import pytest
from django.urls import URLPattern
from jsonschema import Draft202012Validator

from orchestrator.api import urls as api_urls
from orchestrator.api.schema import openapi_document

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def document(client):
    response = client.get("/api/v1/schema")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return response.json()


def openapi_path(pattern: URLPattern) -> str:
    # "api/v1/leads/<path:lead_id>/history" -> "/api/v1/leads/{lead_id}/history"
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))


def resolve(document: dict, ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: object):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_every_route_is_documented_and_nothing_else(document):
    routes = {openapi_path(p) for p in api_urls.urlpatterns}
    assert len(routes) == len(api_urls.urlpatterns) == 3
    assert set(document["paths"]) == routes


def test_document_is_well_formed_openapi_3_1(document):
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert document["info"]["title"] and document["info"]["version"]
    assert document["servers"] == [{"url": "http://testserver/"}]
    schemes = document["components"]["securitySchemes"]
    for requirement in document["security"]:
        assert set(requirement) <= set(schemes)
    operation_ids = []
    for path, item in document["paths"].items():
        assert path.startswith("/")
        templated = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            assert method in METHODS, (path, method)
            operation_ids.append(operation["operationId"])
            responses = operation["responses"]
            assert responses and all(re.fullmatch(r"[1-5]\d\d", code) for code in responses)
            for response in responses.values():
                assert response["description"]
            params = operation.get("parameters", [])
            in_path = {p["name"] for p in params if p["in"] == "path"}
            # Every template variable declared (required), and no other path parameter.
            assert in_path == templated, (path, method)
            for param in params:
                assert param["in"] in {"query", "header", "path", "cookie"}
                assert param["in"] != "path" or param["required"] is True
                Draft202012Validator.check_schema(param["schema"])
    assert len(operation_ids) == len(set(operation_ids))
    for name, schema in document["components"]["schemas"].items():
        assert "$schema" not in schema, name
        Draft202012Validator.check_schema(schema)
    for ref in refs(document):
        resolve(document, ref)


def test_the_documented_methods_are_the_ones_answered(client, document):
    for path, item in document["paths"].items():
        url = path.replace("{lead_id}", "LEAD-1")
        for method in METHODS - set(item) - {"head", "options", "trace"}:
            response = client.generic(method.upper(), url)
            assert response.status_code == 405, (path, method)


def test_limits_in_the_document_follow_the_settings(settings):
    settings.EVENTS_API_MAX_EVENTS = 7
    body = openapi_document()["paths"]["/api/v1/events"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["maxItems"] == 7
