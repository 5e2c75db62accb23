"""The OpenAPI document against the running submit function: schemathesis finds no 5xx and no
response outside the spec."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dataset_export.http_api import openapi_document
from dataset_export_tools.localstack.stack import StackInfo

from ..conftest import TEST_PORTS

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi_document())
schema.config.update(base_url=f"http://127.0.0.1:{TEST_PORTS.submit}")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, stack: StackInfo) -> None:
    """Every generated request gets a documented status, content type and body; never a 5xx."""
    case.call_and_validate(
        headers={"x-api-key": stack.env["EXPORT_API_KEY"]},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ],
    )
