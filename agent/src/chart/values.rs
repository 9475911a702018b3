//! A chart's values as Helm assembles them: the chart's `values.yaml`, then each `--values`
//! file merged over it, then each `--set`. A `null` removes a default, as in Helm.

use serde_json::{Map, Value as Json};

use super::template::Value;

/// The largest values file read (the chart's own is a few KiB).
pub const MAX_VALUES_FILE: u64 = 4 << 20;

/// Why values could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// A values file is not YAML, or not a map at its top.
    #[error("{what}: {message}")]
    Parse {
        /// The file.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A `--set` expression does not parse.
    #[error("--set {expr:?}: {message}")]
    Set {
        /// The expression.
        expr: String,
        /// What is wrong.
        message: String,
    },
}

/// Parses a values document named `what`: a YAML map (an empty document is an empty map).
///
/// # Errors
/// [`ValuesError::Parse`].
pub fn parse_yaml(what: &str, text: &str) -> Result<Map<String, Json>, ValuesError> {
    let err = |message: String| ValuesError::Parse { what: what.to_owned(), message };
    let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| err(e.to_string()))?;
    let j = Value::from_yaml(&y).and_then(|v| v.to_json()).map_err(|e| err(e.to_string()))?;
    match j {
        Json::Object(m) => Ok(m),
        Json::Null => Ok(Map::new()),
        _ => Err(err("the top level must be a map of values".into())),
    }
}

/// Merges `over` into `base`, as Helm merges a values file into the ones before it: maps
/// merge key by key, anything else replaces.
pub fn merge(base: &mut Map<String, Json>, over: Map<String, Json>) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Json::Object(b)), Json::Object(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The chart's defaults with the user's values over them, as Helm coalesces them: a user's
/// `null` removes the default, a map merges, anything else replaces.
pub fn coalesce(defaults: &Map<String, Json>, user: &Map<String, Json>) -> Map<String, Json> {
    let mut out = defaults.clone();
    for (k, v) in user {
        match (out.get_mut(k), v) {
            (_, Json::Null) => {
                out.remove(k);
            }
            (Some(Json::Object(d)), Json::Object(u)) => {
                let merged = coalesce(d, u);
                *d = merged;
            }
            (_, v) => {
                out.insert(k.clone(), strip_nulls(v));
            }
        }
    }
    out
}

fn strip_nulls(v: &Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        v => v.clone(),
    }
}

/// One step of a `--set` path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The largest list index `--set a[N]=x` may name: Helm pads the list up to it.
const MAX_SET_INDEX: usize = 65_536;

/// Applies a `--set` expression (`a.b=1,c[0].d=x,e={p,q}`) to `values`, with Helm's types:
/// `true`/`false`, `null`, integers (no leading zero) and strings; `\` escapes `,` `.` `=`.
///
/// # Errors
/// [`ValuesError::Set`] for an expression that does not parse.
pub fn apply_set(values: &mut Map<String, Json>, expr: &str) -> Result<(), ValuesError> {
    let err = |m: &str| ValuesError::Set { expr: expr.to_owned(), message: m.to_owned() };
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        // The key path, up to `=`.
        let mut path = Vec::new();
        let mut key = String::new();
        loop {
            let Some(&c) = chars.get(i) else { return Err(err("a key without =value")) };
            i += 1;
            match c {
                '\\' => {
                    key.push(*chars.get(i).ok_or_else(|| err("a trailing \\"))?);
                    i += 1;
                }
                '.' | '=' | '[' => {
                    if !key.is_empty() {
                        path.push(Step::Key(std::mem::take(&mut key)));
                    } else if !matches!(path.last(), Some(Step::Index(_))) {
                        return Err(err("an empty key"));
                    }
                    if c == '[' {
                        let end = chars[i..]
                            .iter()
                            .position(|c| *c == ']')
                            .ok_or_else(|| err("an unclosed ["))?;
                        let n: String = chars[i..i + end].iter().collect();
                        let n: usize =
                            n.parse().map_err(|_| err("a list index that is not a number"))?;
                        if n > MAX_SET_INDEX {
                            return Err(err("a list index that large"));
                        }
                        path.push(Step::Index(n));
                        i += end + 1;
                    }
                    if c == '=' {
                        break;
                    }
                }
                ',' => return Err(err("a key without =value")),
                c => key.push(c),
            }
        }
        // The value, up to an unescaped `,` (or a `{list}`).
        let value = if chars.get(i) == Some(&'{') {
            let end =
                chars[i..].iter().position(|c| *c == '}').ok_or_else(|| err("an unclosed {"))?;
            let inner: String = chars[i + 1..i + end].iter().collect();
            i += end + 1;
            let items = if inner.is_empty() { Vec::new() } else { split_unescaped(&inner) };
            Json::Array(items.iter().map(|s| typed(s)).collect())
        } else {
            let mut v = String::new();
            while let Some(&c) = chars.get(i) {
                if c == ',' {
                    break;
                }
                i += 1;
                if c == '\\' {
                    if let Some(&n) = chars.get(i) {
                        v.push(n);
                        i += 1;
                        continue;
                    }
                }
                v.push(c);
            }
            typed(&v)
        };
        match chars.get(i) {
            None => {}
            Some(',') => i += 1,
            Some(_) => return Err(err("expected , after a value")),
        }
        if path.is_empty() {
            return Err(err("an empty key"));
        }
        let mut root = Json::Object(std::mem::take(values));
        put(&mut root, &path, value);
        if let Json::Object(m) = root {
            *values = m;
        }
    }
    Ok(())
}

fn split_unescaped(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(l)) = (it.next(), out.last_mut()) {
                    l.push(n);
                }
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(l) = out.last_mut() {
                    l.push(c);
                }
            }
        }
    }
    out
}

/// Helm's typing of a `--set` value.
fn typed(s: &str) -> Json {
    match s {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        "null" => Json::Null,
        s if !(s.len() > 1 && s.starts_with('0')) => match s.parse::<i64>() {
            Ok(i) => Json::from(i),
            Err(_) => Json::String(s.to_owned()),
        },
        s => Json::String(s.to_owned()),
    }
}

fn put(at: &mut Json, path: &[Step], value: Json) {
    let Some((first, rest)) = path.split_first() else {
        *at = value;
        return;
    };
    match first {
        Step::Key(k) => {
            if !at.is_object() {
                *at = Json::Object(Map::new());
            }
            if let Json::Object(m) = at {
                let slot = m.entry(k.clone()).or_insert(Json::Null);
                put(slot, rest, value);
            }
        }
        Step::Index(n) => {
            if !at.is_array() {
                *at = Json::Array(Vec::new());
            }
            if let Json::Array(a) = at {
                if a.len() <= *n {
                    a.resize(n + 1, Json::Null);
                }
                put(&mut a[*n], rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(start: Json, expr: &str) -> Json {
        let Json::Object(mut m) = start else { panic!() };
        apply_set(&mut m, expr).unwrap();
        Json::Object(m)
    }

    #[test]
    fn set_paths_types_lists_and_escapes_as_helm() {
        assert_eq!(
            set(json!({"a": {"x": 1}}), "a.b=2,c=true,d=null,e=0123,f=x\\,y,g={p,q}"),
            json!({"a": {"x": 1, "b": 2}, "c": true, "d": null, "e": "0123", "f": "x,y", "g": ["p", "q"]})
        );
        assert_eq!(
            set(json!({}), "m[1].name=db,dots\\.key=v"),
            json!({"m": [null, {"name": "db"}], "dots.key": "v"})
        );
        let mut m = Map::new();
        for bad in ["=x", "a", "a[x]=1", "a[9999999]=1", "a.=1", "a={x"] {
            assert!(apply_set(&mut m, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn coalesce_lets_null_remove_a_default_and_merges_maps() {
        let d = json!({"a": {"x": 1, "y": 2}, "l": [1, 2], "k": 3});
        let u = json!({"a": {"y": null, "z": 3}, "l": [9], "k": null});
        let (Json::Object(d), Json::Object(u)) = (d, u) else { panic!() };
        assert_eq!(Json::Object(coalesce(&d, &u)), json!({"a": {"x": 1, "z": 3}, "l": [9]}));
    }

    proptest::proptest! {
        #[test]
        fn random_set_expressions_never_panic(expr in "[a-c.=,\\[\\]{}0-9\\\\]{0,24}") {
            let mut m = Map::new();
            let _ = apply_set(&mut m, &expr);
        }
    }

    #[test]
    fn a_values_file_must_be_a_map() {
        assert!(parse_yaml("f", "- a").is_err());
        assert!(parse_yaml("f", "a: [").is_err());
        assert_eq!(parse_yaml("f", "").unwrap(), Map::new());
    }
}
