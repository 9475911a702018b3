//! Checks values against the chart's `values.schema.json`, as Helm does before rendering.
//!
//! A JSON Schema (draft-07) validator for the keywords such a file uses: types, properties,
//! `required`, `additionalProperties`, `items`, lengths and counts, `pattern`, `enum`,
//! `const`, bounds, `if`/`then`/`else`, `allOf`/`anyOf`/`oneOf`/`not` and local `$ref`s.
//! A keyword it does not know is an error, not a silent pass: a schema that grows one must
//! grow this too, and the chart's CI check says so. `format` is an annotation, as in Helm.

use std::collections::HashMap;

use serde_json::Value as Json;

/// How deep `$ref`s and nested schemas may go: a schema can refer to itself.
const MAX_DEPTH: usize = 64;

/// One way the values break the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a values path (`destination.modules[0].name`); empty for the top.
    pub path: String,
    /// What is wrong, with the schema's description of the value when it has one.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.path.is_empty() { "(values)" } else { &self.path };
        write!(f, "{at}: {}", self.message)
    }
}

/// The schema itself is beyond this validator.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A keyword this validator does not implement.
    #[error("values.schema.json: unsupported keyword {keyword:?} at {at}")]
    Unsupported {
        /// The keyword.
        keyword: String,
        /// Where in the schema.
        at: String,
    },
    /// A malformed schema (a `pattern` that is no regular expression, a `$ref` to nowhere, a
    /// keyword with a value of the wrong type).
    #[error("values.schema.json: {0}")]
    Invalid(String),
}

/// Validates `values` against `schema`; an empty list means they conform.
///
/// # Errors
/// [`SchemaError`] when the schema uses what this validator cannot check.
pub fn validate(schema: &Json, values: &Json) -> Result<Vec<Violation>, SchemaError> {
    let mut v = Validator { root: schema, regexes: HashMap::new() };
    let mut out = Vec::new();
    v.check(schema, values, "", "#", 0, &mut out)?;
    Ok(out)
}

struct Validator<'a> {
    root: &'a Json,
    regexes: HashMap<String, regex::Regex>,
}

impl<'a> Validator<'a> {
    fn resolve(&self, r: &str) -> Result<&'a Json, SchemaError> {
        let ptr = r
            .strip_prefix('#')
            .ok_or_else(|| SchemaError::Invalid(format!("only local $refs are supported: {r}")))?;
        self.root.pointer(ptr).ok_or_else(|| SchemaError::Invalid(format!("$ref to nowhere: {r}")))
    }

    fn matches(&mut self, schema: &'a Json, v: &Json, depth: usize) -> Result<bool, SchemaError> {
        let mut out = Vec::new();
        self.check(schema, v, "", "#", depth, &mut out)?;
        Ok(out.is_empty())
    }

    fn check(
        &mut self,
        schema: &'a Json,
        v: &Json,
        path: &str,
        at: &str,
        depth: usize,
        out: &mut Vec<Violation>,
    ) -> Result<(), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError::Invalid(format!(
                "schemas nest deeper than {MAX_DEPTH} at {at}"
            )));
        }
        let obj = match schema {
            Json::Bool(true) => return Ok(()),
            Json::Bool(false) => {
                out.push(Violation { path: path.to_owned(), message: "is not allowed".into() });
                return Ok(());
            }
            Json::Object(o) => o,
            _ => return Err(SchemaError::Invalid(format!("a schema must be an object at {at}"))),
        };
        let described = |m: String| match obj.get("description").and_then(Json::as_str) {
            Some(d) => format!("{m} ({d})"),
            None => m,
        };
        let mut fail =
            |m: String| out.push(Violation { path: path.to_owned(), message: described(m) });
        let mut nested: Vec<Violation> = Vec::new();
        for (k, kv) in obj {
            let here = format!("{at}/{k}");
            match k.as_str() {
                "$schema" | "$id" | "$comment" | "title" | "description" | "default"
                | "examples" | "definitions" | "$defs" | "format" | "then" | "else"
                | "readOnly" | "writeOnly" | "deprecated" => {}
                "$ref" => {
                    let r = kv.as_str().ok_or_else(|| {
                        SchemaError::Invalid(format!("$ref is not a string at {here}"))
                    })?;
                    let target = self.resolve(r)?;
                    self.check(target, v, path, r, depth + 1, &mut nested)?;
                }
                "type" => {
                    let types: Vec<&str> = match kv {
                        Json::String(s) => vec![s.as_str()],
                        Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
                        _ => return Err(SchemaError::Invalid(format!("bad type at {here}"))),
                    };
                    if !types.iter().any(|t| is_type(v, t)) {
                        fail(format!("is {}, want {}", json_type(v), types.join(" or ")));
                    }
                }
                "enum" => {
                    let a = kv.as_array().ok_or_else(|| {
                        SchemaError::Invalid(format!("enum is not a list at {here}"))
                    })?;
                    if !a.iter().any(|e| same(e, v)) {
                        let allowed: Vec<String> = a.iter().map(Json::to_string).collect();
                        fail(format!("{} is not one of {}", short(v), allowed.join(", ")));
                    }
                }
                "const" => {
                    if !same(kv, v) {
                        fail(format!("{} is not {}", short(v), kv));
                    }
                }
                "pattern" => {
                    if let Json::String(s) = v {
                        let p = kv.as_str().ok_or_else(|| {
                            SchemaError::Invalid(format!("pattern is not a string at {here}"))
                        })?;
                        if !self.regexes.contains_key(p) {
                            let re = regex::Regex::new(p).map_err(|e| {
                                SchemaError::Invalid(format!("pattern at {here}: {e}"))
                            })?;
                            self.regexes.insert(p.to_owned(), re);
                        }
                        if !self.regexes.get(p).is_some_and(|re| re.is_match(s)) {
                            fail(format!("{} does not match {p}", short(v)));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let Json::String(s) = v {
                        let n = count(kv, &here)?;
                        let len = s.chars().count() as u64;
                        if k == "minLength" && len < n {
                            fail(format!("{} is shorter than {n} characters", short(v)));
                        } else if k == "maxLength" && len > n {
                            fail(format!("{} is longer than {n} characters", short(v)));
                        }
                    }
                }
                "minItems" | "maxItems" => {
                    if let Json::Array(a) = v {
                        let n = count(kv, &here)?;
                        if k == "minItems" && (a.len() as u64) < n {
                            fail(format!("has {} items, want at least {n}", a.len()));
                        } else if k == "maxItems" && a.len() as u64 > n {
                            fail(format!("has {} items, want at most {n}", a.len()));
                        }
                    }
                }
                "minProperties" | "maxProperties" => {
                    if let Json::Object(o) = v {
                        let n = count(kv, &here)?;
                        if (k == "minProperties" && (o.len() as u64) < n)
                            || (k == "maxProperties" && o.len() as u64 > n)
                        {
                            fail(format!(
                                "has {} keys, want {} {n}",
                                o.len(),
                                if k == "minProperties" { "at least" } else { "at most" }
                            ));
                        }
                    }
                }
                "uniqueItems" => {
                    if let (Json::Array(a), Json::Bool(true)) = (v, kv) {
                        let dup =
                            a.iter().enumerate().any(|(i, x)| a[..i].iter().any(|y| same(x, y)));
                        if dup {
                            fail("has duplicate items".into());
                        }
                    }
                }
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                    if let (Some(x), Some(b)) = (v.as_f64(), kv.as_f64()) {
                        let ok = match k.as_str() {
                            "minimum" => x >= b,
                            "maximum" => x <= b,
                            "exclusiveMinimum" => x > b,
                            _ => x < b,
                        };
                        if !ok {
                            fail(format!("{x} is out of range ({k} {b})"));
                        }
                    }
                }
                "required" => {
                    if let Json::Object(o) = v {
                        for r in kv.as_array().into_iter().flatten().filter_map(Json::as_str) {
                            if !o.contains_key(r) {
                                nested.push(Violation {
                                    path: join(path, r),
                                    message: "is required".into(),
                                });
                            }
                        }
                    }
                }
                "properties" => {
                    if let Json::Object(o) = v {
                        let props = kv.as_object().ok_or_else(|| {
                            SchemaError::Invalid(format!("properties is not an object at {here}"))
                        })?;
                        for (name, sub) in props {
                            if let Some(x) = o.get(name) {
                                self.check(
                                    sub,
                                    x,
                                    &join(path, name),
                                    &format!("{here}/{name}"),
                                    depth + 1,
                                    &mut nested,
                                )?;
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Json::Object(o) = v {
                        let props = obj.get("properties").and_then(Json::as_object);
                        for (name, x) in o {
                            if props.is_some_and(|p| p.contains_key(name)) {
                                continue;
                            }
                            if kv == &Json::Bool(false) {
                                nested.push(Violation {
                                    path: join(path, name),
                                    message: "is not a known key here".into(),
                                });
                            } else {
                                self.check(
                                    kv,
                                    x,
                                    &join(path, name),
                                    &here,
                                    depth + 1,
                                    &mut nested,
                                )?;
                            }
                        }
                    }
                }
                "items" => {
                    if let Json::Array(a) = v {
                        if !kv.is_object() && !kv.is_boolean() {
                            return Err(SchemaError::Unsupported {
                                keyword: "items (a list)".into(),
                                at: here,
                            });
                        }
                        for (i, x) in a.iter().enumerate() {
                            self.check(
                                kv,
                                x,
                                &format!("{path}[{i}]"),
                                &here,
                                depth + 1,
                                &mut nested,
                            )?;
                        }
                    }
                }
                "if" => {
                    let branch = if self.matches(kv, v, depth + 1)? { "then" } else { "else" };
                    if let Some(s) = obj.get(branch) {
                        self.check(s, v, path, &format!("{at}/{branch}"), depth + 1, &mut nested)?;
                    }
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let subs = kv.as_array().ok_or_else(|| {
                        SchemaError::Invalid(format!("{k} is not a list at {here}"))
                    })?;
                    if k == "allOf" {
                        for (i, s) in subs.iter().enumerate() {
                            self.check(s, v, path, &format!("{here}/{i}"), depth + 1, &mut nested)?;
                        }
                    } else {
                        let mut n = 0;
                        for s in subs {
                            if self.matches(s, v, depth + 1)? {
                                n += 1;
                            }
                        }
                        if (k == "anyOf" && n == 0) || (k == "oneOf" && n != 1) {
                            fail(format!("matches {n} of the {k} alternatives"));
                        }
                    }
                }
                "not" => {
                    if self.matches(kv, v, depth + 1)? {
                        fail("matches a schema it must not".into());
                    }
                }
                _ => return Err(SchemaError::Unsupported { keyword: k.clone(), at: here }),
            }
        }
        out.append(&mut nested);
        Ok(())
    }
}

fn count(kv: &Json, at: &str) -> Result<u64, SchemaError> {
    kv.as_u64().ok_or_else(|| SchemaError::Invalid(format!("not a count at {at}")))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn is_type(v: &Json, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a map",
    }
}

/// JSON equality with 1 and 1.0 the same number, as JSON Schema compares.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same(p, q)))
        }
        _ => a == b,
    }
}

/// A value for a message, cut short.
fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(schema: Json, v: Json) -> Vec<String> {
        let mut e: Vec<String> =
            validate(&schema, &v).unwrap().iter().map(ToString::to_string).collect();
        e.sort();
        e
    }

    #[test]
    fn the_chart_keywords_check_what_they_say() {
        let s = json!({
            "definitions": {"label": {"type": "string", "pattern": "^[a-z]+$", "description": "a label"}},
            "type": "object",
            "properties": {
                "mods": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {"name": {"$ref": "#/definitions/label"}}}},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "mode": {"enum": ["a", "b"]}
            },
            "if": {"properties": {"mode": {"const": "b"}}},
            "then": {"required": ["port"]}
        });
        assert!(
            errs(s.clone(), json!({"mods": [{"name": "db"}], "port": 80, "mode": "a"})).is_empty()
        );
        assert_eq!(
            errs(s.clone(), json!({"mods": [{"name": "Db", "x": 1}, {}], "mode": "a"})),
            vec![
                "mods[0].name: \"Db\" does not match ^[a-z]+$ (a label)",
                "mods[0].x: is not a known key here",
                "mods[1].name: is required",
            ]
        );
        assert_eq!(
            errs(s.clone(), json!({"mods": [], "port": 1})),
            vec!["mods: has 0 items, want at least 1"]
        );
        assert_eq!(
            errs(s.clone(), json!({"port": 0})),
            vec!["port: 0 is out of range (minimum 1)"]
        );
        assert_eq!(errs(s.clone(), json!({"port": "x"})), vec!["port: is a string, want integer"]);
        // `if` holds when mode is "b", and also when it is absent (JSON Schema's rule).
        assert_eq!(errs(s.clone(), json!({"mode": "b"})), vec!["port: is required"]);
        assert_eq!(errs(s.clone(), json!({})), vec!["port: is required"]);
        assert_eq!(errs(s, json!({"mode": "c"})), vec!["mode: \"c\" is not one of \"a\", \"b\""]);
    }

    #[test]
    fn an_unknown_keyword_or_bad_ref_is_an_error_not_a_pass() {
        assert!(matches!(
            validate(&json!({"patternProperties": {}}), &json!({})),
            Err(SchemaError::Unsupported { .. })
        ));
        assert!(matches!(
            validate(&json!({"$ref": "#/nowhere"}), &json!(1)),
            Err(SchemaError::Invalid(_))
        ));
        // A schema that refers to itself ends, with an error.
        assert!(validate(&json!({"$ref": "#"}), &json!(1)).is_err());
    }
}
