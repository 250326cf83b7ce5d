//! Every JSON answer of `/api/v1/*` that a test receives is checked against the OpenAPI
//! document the service publishes (`gridwatch::api::openapi_document`): the route's documented
//! response schema for that status, or the `Problem` schema for an error the route does not
//! list (unknown routes, 401 from authentication, 429 from the rate limit). OpenAPI 3.1 schemas
//! are JSON Schema 2020-12, so `#/components/schemas/...` references resolve inside a root
//! schema that carries the document's `components`.

use std::sync::OnceLock;

use serde_json::{json, Value};

/// The OpenAPI document, generated once per test binary.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_json::to_value(gridwatch::api::openapi_document()).expect("openapi document")
    })
}

/// Whether `template` (e.g. `/api/v1/cells/{grid_id}`) matches `path` segment by segment.
fn path_matches(template: &str, path: &str) -> bool {
    let template_segments: Vec<&str> = template.split('/').collect();
    let path_segments: Vec<&str> = path.split('/').collect();
    template_segments.len() == path_segments.len()
        && template_segments
            .iter()
            .zip(&path_segments)
            .all(|(expected, actual)| {
                (expected.starts_with('{') && expected.ends_with('}')) || expected == actual
            })
}

/// The documented path template for `path`; a literal route wins over a templated one
/// (`/api/v1/cells.geojson` is not `/api/v1/cells/{grid_id}`).
fn path_template(path: &str) -> Option<String> {
    let paths = document()["paths"].as_object()?;
    paths
        .keys()
        .filter(|template| path_matches(template, path))
        .min_by_key(|template| template.matches('{').count())
        .cloned()
}

/// The schema `body` must match: the documented response of `method path` for `status`, else
/// the `Problem` schema for an error answer; `None` when the answer is not documented JSON.
fn response_schema(method: &str, path: &str, status: u16, content_type: &str) -> Option<Value> {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    let documented = path_template(path).and_then(|template| {
        let responses = &document()["paths"][template.as_str()][method.to_lowercase()]["responses"];
        responses[status.to_string()]["content"][media_type]["schema"]
            .as_object()
            .map(|schema| Value::Object(schema.clone()))
    });
    if documented.is_some() {
        return documented;
    }
    if status >= 400 {
        assert_eq!(
            media_type, "application/problem+json",
            "{method} {path}: a {status} must be a problem"
        );
        return Some(json!({"$ref": "#/components/schemas/Problem"}));
    }
    None
}

/// Panics unless `instance` matches `schema` (which may reference the document's components).
pub fn assert_matches_schema(schema: &Value, instance: &Value, what: &str) {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document()["components"].clone(),
        "allOf": [schema],
    });
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|error| panic!("the schema for {what} does not compile: {error}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .take(5)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its OpenAPI schema:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string(instance)
            .unwrap_or_default()
            .chars()
            .take(2000)
            .collect::<String>()
    );
}

/// Panics unless `instance` matches the component schema `name`.
pub fn assert_matches_component(name: &str, instance: &Value) {
    assert!(
        document()["components"]["schemas"].get(name).is_some(),
        "no component schema {name}"
    );
    assert_matches_schema(
        &json!({"$ref": format!("#/components/schemas/{name}")}),
        instance,
        name,
    );
}

/// Checks an HTTP answer of the API (`url` as requested) against the document; answers outside
/// `/api/v1/` and non-JSON answers (the stream, `/metrics`) are left alone.
pub fn check_response(method: &str, url: &str, status: u16, content_type: &str, body: &str) {
    let Some(after_scheme) = url.split_once("://").map(|(_, rest)| rest) else {
        return;
    };
    let path_and_query = after_scheme
        .find('/')
        .map(|start| &after_scheme[start..])
        .unwrap_or("/");
    let path = path_and_query.split('?').next().unwrap_or_default();
    if !path.starts_with("/api/v1/") || !content_type.contains("json") {
        return;
    }
    let Some(schema) = response_schema(method, path, status, content_type) else {
        panic!("{method} {path} answered {status} {content_type}, which the OpenAPI document does not describe");
    };
    let instance: Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("{method} {path}: the body is not JSON ({error})"));
    assert_matches_schema(&schema, &instance, &format!("{method} {path} {status}"));
}
