//! The JSON Schema in `schema/computation-payload-manifest.schema.json`,
//! compiled once and applied to every manifest before it is read into types.

use std::sync::OnceLock;

use boon::{Compiler, SchemaIndex, Schemas, ValidationError};

/// The schema text, as kept in the repository.
pub const SCHEMA_JSON: &str = include_str!("../schema/computation-payload-manifest.schema.json");

const SCHEMA_URL: &str = "urn:sealpod:computation-payload-manifest";

struct Compiled {
    schemas: Schemas,
    index: SchemaIndex,
}

fn compile() -> Result<Compiled, String> {
    let value: serde_json::Value = serde_json::from_str(SCHEMA_JSON).map_err(|e| e.to_string())?;
    let mut compiler = Compiler::new();
    compiler.add_resource(SCHEMA_URL, value).map_err(|e| e.to_string())?;
    let mut schemas = Schemas::new();
    let index = compiler.compile(SCHEMA_URL, &mut schemas).map_err(|e| e.to_string())?;
    Ok(Compiled { schemas, index })
}

fn compiled() -> Result<&'static Compiled, &'static str> {
    static COMPILED: OnceLock<Result<Compiled, String>> = OnceLock::new();
    COMPILED.get_or_init(compile).as_ref().map_err(String::as_str)
}

/// A schema violation: where in the document (`payload[0].hash`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaViolation {
    pub path: String,
    pub message: String,
}

/// Validates `instance` against the manifest schema.
pub(crate) fn validate(instance: &serde_json::Value) -> Result<(), SchemaViolation> {
    let compiled = compiled().map_err(|e| SchemaViolation {
        path: String::new(),
        message: format!("the built-in JSON Schema is broken: {e}"),
    })?;
    match compiled.schemas.validate(instance, compiled.index) {
        Ok(()) => Ok(()),
        Err(error) => Err(most_specific(&error)),
    }
}

/// The leaf error deepest in the document: the one that names a field rather
/// than "validation failed" for the whole manifest.
fn most_specific(error: &ValidationError<'_, '_>) -> SchemaViolation {
    let mut best: Option<&ValidationError<'_, '_>> = None;
    let mut stack = vec![error];
    while let Some(e) = stack.pop() {
        if e.causes.is_empty() {
            let deeper = best.is_none_or(|b| e.instance_location.tokens.len() > b.instance_location.tokens.len());
            if deeper {
                best = Some(e);
            }
        }
        stack.extend(e.causes.iter().rev());
    }
    let leaf = best.unwrap_or(error);
    SchemaViolation { path: field_path(&leaf.instance_location.tokens), message: leaf.kind.to_string() }
}

fn field_path(tokens: &[boon::InstanceToken<'_>]) -> String {
    let mut path = String::new();
    for token in tokens {
        match token {
            boon::InstanceToken::Prop(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
            }
            boon::InstanceToken::Item(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_schema_compiles() {
        assert!(compiled().is_ok(), "{:?}", compiled().err());
    }

    #[test]
    fn violations_name_the_deepest_field() {
        let doc = serde_json::json!({
            "version": "0.1.0", "createdAt": "x", "expiresAt": "y",
            "payload": [{"urls": [], "hash": 5}]
        });
        let v = validate(&doc).unwrap_err();
        assert_eq!(v.path, "payload[0].hash");
        let doc = serde_json::json!({"version": "0.1.0", "createdAt": "x", "expiresAt": "y", "payload": [],
            "compManifest": {"version": "1.0.0", "script": {"commands": [], "match": "glob"}}});
        let v = validate(&doc).unwrap_err();
        assert!(v.path == "payload" || v.path == "compManifest.script.match", "{v:?}");
    }
}
