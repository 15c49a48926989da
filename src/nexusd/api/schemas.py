"""JSON Schemas (OpenAPI 3.1 dialect) of what the routes read and answer, for the OpenAPI
documents (`nexusd.api.openapi`).

Each schema says what the server really does, read from the code that does it: request bodies
from the parsers (`pipeline.intake.parse_members`, `pipeline.cancelling.parse_cancellation`,
`pipeline.completing.parse_report`, the tag update in `api.runs`), answers from
`pipeline.results` and the handlers. Optional text fields read `null` as "" (upstream's Go
zero value), hence `["string", "null"]`. Answers never hold `null` (contract §0.1), and the
result shapes have every key they always have marked required.
"""

from __future__ import annotations

from typing import Any

from nexusd.core.lifecycle import Stage
from nexusd.pipeline.cancelling import POLICIES
from nexusd.pipeline.intake import MAX_TAG, MAX_TEXT

Schema = dict[str, Any]

TEXT: Schema = {"type": "string"}
OPTIONAL_TEXT: Schema = {"type": ["string", "null"]}
EMPTY_OBJECT: Schema = {"type": "object", "maxProperties": 0}
STAGE: Schema = {"type": "string", "enum": [str(stage) for stage in Stage]}
#: A Kubernetes object name (RFC 1123 subdomain): what names a template, and a run's Job.
OBJECT_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}

# --- path and query parameters ----------------------------------------------------------

#: Every path parameter of the routes, by its name in the route.
PATH_PARAMETERS: dict[str, Schema] = {
    "algorithm": {
        "description": "Name of the NexusAlgorithmTemplate to run (an unknown one is a 400).",
        "schema": OBJECT_NAME,
        "examples": {"hello": {"value": "hello"}},
    },
    "request_id": {
        "description": "The requestId the run's submission answered.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "tag": {
        "description": "The tag the runs were submitted with (may contain '/').",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TAG},
    },
}

#: Go's `strconv.ParseBool` spellings, as `api.runs` reads `dryRun`.
DRY_RUN: Schema = {
    "name": "dryRun",
    "in": "query",
    "required": False,
    "description": "Store the run (payload, checkpoint, Job manifest) but create no Job; the "
    "run is COMPLETED at once. Any other spelling is a 400.",
    "schema": {
        "type": "string",
        "enum": [
            "true",
            "false",
            "1",
            "0",
            "t",
            "f",
            "T",
            "F",
            "TRUE",
            "FALSE",
            "True",
            "False",
            "",
        ],
    },
}

IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Experimental (latest API only; ignored under the versioned prefixes). A "
    "client-chosen key for retrying a submission safely: the same key with the same request "
    "(route, dryRun, body) answers the original answer again and submits nothing new; the "
    "same key with a different request answers 409 naming the key. At most "
    "http.max_idempotency_key characters (default 255), else a 400. Keys live as long as "
    "the run holding them.",
    "schema": {"type": "string", "minLength": 1, "pattern": "^[ -~]+$"},
}

# --- request bodies -----------------------------------------------------------------------

_PARENT: Schema = {
    "type": ["object", "null"],
    "description": "Makes the run's Job a child of the parent run's Job (same shard).",
    "required": ["requestId", "algorithmName"],
    "properties": {"requestId": OBJECT_NAME, "algorithmName": OBJECT_NAME},
}

ALGORITHM_REQUEST: Schema = {
    "type": "object",
    "description": "An AlgorithmRequest (contract §2.1). Unknown members are ignored.",
    "required": ["algorithmParameters"],
    "properties": {
        "algorithmParameters": {
            "type": "object",
            "description": "The payload given to the algorithm, stored exactly as sent.",
        },
        "customConfiguration": {
            "type": ["object", "null"],
            "description": "Per-run overrides of the template spec (NexusAlgorithmSpec, "
            "partial): container.versionTag, computeResources (cpuLimit/memoryLimit or "
            "limits/requests), runtimeEnvironment, workgroupRef. Validated against the "
            "template; a bad override is a 400 naming it.",
        },
        "requestApiVersion": {**OPTIONAL_TEXT, "maxLength": MAX_TEXT},
        "tag": {**OPTIONAL_TEXT, "maxLength": MAX_TAG},
        "parentRequest": _PARENT,
        "payloadValidFor": {
            **OPTIONAL_TEXT,
            "description": "Lifetime of the payload URL given to the pod, a Go duration "
            "(6h, 90m); positive and at most the configured maximum.",
        },
    },
}

BATCH_REQUEST: Schema = {
    "type": "array",
    "description": "One AlgorithmRequest per run, at most http.max_batch_runs of them (more "
    "is a 413). A bad run is that run's error; the others stand.",
    "minItems": 1,
    "items": ALGORITHM_REQUEST,
}

CANCELLATION_REQUEST: Schema = {
    "type": "object",
    "properties": {
        "initiator": OPTIONAL_TEXT,
        "reason": OPTIONAL_TEXT,
        "cancellationPolicy": {
            "type": ["string", "null"],
            "enum": [*sorted(POLICIES), "", None],
            "description": "Kubernetes deletion propagation of the run's Job; empty or "
            "missing is Background.",
        },
    },
}

TAG_UPDATE: Schema = {
    "type": "object",
    "required": ["newTag"],
    "properties": {"newTag": OPTIONAL_TEXT},
}

ALGORITHM_RESULT: Schema = {
    "type": "object",
    "description": "The algorithm's report: an empty errorCause is success.",
    "properties": {
        "resultUri": OPTIONAL_TEXT,
        "errorCause": OPTIONAL_TEXT,
        "errorDetails": OPTIONAL_TEXT,
    },
}

# --- answers ------------------------------------------------------------------------------


def _strings(*names: str) -> Schema:
    return {
        "type": "object",
        "required": list(names),
        "properties": {name: STAGE if name == "status" else TEXT for name in names},
        "additionalProperties": False,
    }


REQUEST_ID: Schema = _strings("requestId")
#: `pipeline.results.request_result`
REQUEST_RESULT: Schema = _strings("requestId", "status", "resultUri", "runErrorMessage")
#: `pipeline.results.tagged_result`, one per run of the tag
TAGGED_RESULTS: Schema = {
    "type": "array",
    "items": _strings("requestId", "algorithmName", "status", "resultUri", "runErrorMessage"),
}
_TIMESTAMP: Schema = {
    "type": "string",
    "description": "RFC 3339 UTC with milliseconds; 0001-01-01T00:00:00Z when not yet set.",
}
#: `pipeline.results.metadata`: the checkpoint with upstream's snake_case keys
METADATA: Schema = {
    "type": "object",
    "required": [
        "algorithm",
        "id",
        "lifecycle_stage",
        "payload_uri",
        "result_uri",
        "algorithm_failure_cause",
        "algorithm_failure_details",
        "received_by_host",
        "received_at",
        "sent_at",
        "applied_configuration",
        "content_hash",
        "last_modified",
        "api_version",
        "payload_valid_for",
    ],
    "properties": {
        "algorithm": TEXT,
        "id": TEXT,
        "lifecycle_stage": STAGE,
        "payload_uri": TEXT,
        "result_uri": TEXT,
        "algorithm_failure_cause": TEXT,
        "algorithm_failure_details": TEXT,
        "received_by_host": TEXT,
        "received_at": _TIMESTAMP,
        "sent_at": _TIMESTAMP,
        "applied_configuration": {"type": "object", "description": "The merged template spec."},
        "configuration_overrides": {"type": "object"},
        "content_hash": TEXT,
        "last_modified": _TIMESTAMP,
        "tag": TEXT,
        "api_version": TEXT,
        "job_uid": TEXT,
        "parent": {**_strings("requestId", "algorithmName")},
        "payload_valid_for": {"type": "string", "description": "A Go duration (24h0m0s)."},
    },
    "additionalProperties": False,
}
_BATCH_ITEM: Schema = {
    "oneOf": [
        REQUEST_ID,
        {
            "type": "object",
            "required": ["status", "error"],
            "properties": {"status": {"type": "integer"}, "error": TEXT},
            "additionalProperties": False,
        },
    ]
}
#: `api.runs.create_runs`
BATCH_RESULT: Schema = {
    "type": "object",
    "required": ["accepted", "refused", "runs"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "refused": {"type": "integer", "minimum": 0},
        "runs": {"type": "array", "items": _BATCH_ITEM},
    },
    "additionalProperties": False,
}
PROCESSED: Schema = {
    "type": "object",
    "required": ["is_processed"],
    "properties": {"is_processed": {"type": "boolean"}},
    "additionalProperties": False,
}
