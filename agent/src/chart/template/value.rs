//! The data a template sees: Go's `interface{}` as Helm's templates meet it. Maps are shared
//! and mutable (`set`, `merge` change them in place, as Go maps do); lists are values.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

/// How deep a value may nest before converting or printing it stops: a map can be made to
/// contain itself (`set $d "x" $d`), and no chart needs more.
pub(crate) const MAX_DEPTH: usize = 100;

/// A shared, mutable map, like a Go `map[string]interface{}`; keys iterate sorted, as Go's
/// `range` and `toYaml` order them.
pub type Map = Rc<RefCell<BTreeMap<String, Value>>>;

/// A template value.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// Go's nil: a missing key, `nil`, YAML `null`.
    #[default]
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer (YAML integers, `add`, `int`).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(Rc<str>),
    /// A list.
    List(Rc<Vec<Value>>),
    /// A map.
    Map(Map),
}

/// A value nested deeper than [`MAX_DEPTH`] (usually a map that contains itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a value nests deeper than {MAX_DEPTH} levels (does a map contain itself?)")]
pub struct TooDeep;

impl Value {
    /// A string value.
    pub fn str(s: impl Into<Rc<str>>) -> Value {
        Value::Str(s.into())
    }

    /// A list value.
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v))
    }

    /// A new map value holding `m`.
    pub fn map(m: BTreeMap<String, Value>) -> Value {
        Value::Map(Rc::new(RefCell::new(m)))
    }

    /// Go's truth: false, 0, nil and empty strings, lists and maps are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.borrow().is_empty(),
        }
    }

    /// The Go type name, for messages and `typeOf`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int64",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
        }
    }

    /// sprig's `kindOf`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "invalid",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int64",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
        }
    }

    /// How the value prints with Go's `%v` (`map[a:1 b:2]`, `[x y]`, `<nil>`).
    ///
    /// # Errors
    /// [`TooDeep`] for a value nested past [`MAX_DEPTH`].
    pub fn to_go_string(&self) -> Result<String, TooDeep> {
        let mut s = String::new();
        self.write_go(&mut s, 0)?;
        Ok(s)
    }

    fn write_go(&self, out: &mut String, depth: usize) -> Result<(), TooDeep> {
        if depth > MAX_DEPTH {
            return Err(TooDeep);
        }
        match self {
            Value::Nil => out.push_str("<nil>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&go_float(*f)),
            Value::Str(s) => out.push_str(s),
            Value::List(l) => {
                out.push('[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.write_go(out, depth + 1)?;
                }
                out.push(']');
            }
            Value::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.borrow().iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.write_go(out, depth + 1)?;
                }
                out.push(']');
            }
        }
        Ok(())
    }

    /// A deep copy: new maps all the way down.
    ///
    /// # Errors
    /// [`TooDeep`] for a value nested past [`MAX_DEPTH`].
    pub fn deep_copy(&self) -> Result<Value, TooDeep> {
        self.deep_copy_at(0)
    }

    fn deep_copy_at(&self, depth: usize) -> Result<Value, TooDeep> {
        if depth > MAX_DEPTH {
            return Err(TooDeep);
        }
        Ok(match self {
            Value::List(l) => {
                Value::list(l.iter().map(|v| v.deep_copy_at(depth + 1)).collect::<Result<_, _>>()?)
            }
            Value::Map(m) => Value::map(
                m.borrow()
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.deep_copy_at(depth + 1)?)))
                    .collect::<Result<_, TooDeep>>()?,
            ),
            v => v.clone(),
        })
    }

    /// Converts from JSON data.
    ///
    /// # Errors
    /// [`TooDeep`] for data nested past [`MAX_DEPTH`].
    pub fn from_json(j: &serde_json::Value) -> Result<Value, TooDeep> {
        Self::from_json_at(j, 0)
    }

    fn from_json_at(j: &serde_json::Value, depth: usize) -> Result<Value, TooDeep> {
        if depth > MAX_DEPTH {
            return Err(TooDeep);
        }
        Ok(match j {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::str(s.as_str()),
            serde_json::Value::Array(a) => Value::list(
                a.iter().map(|v| Self::from_json_at(v, depth + 1)).collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(o) => Value::map(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::from_json_at(v, depth + 1)?)))
                    .collect::<Result<_, TooDeep>>()?,
            ),
        })
    }

    /// Converts to JSON data (a non-finite float becomes null, as JSON has no such numbers).
    ///
    /// # Errors
    /// [`TooDeep`] for a value nested past [`MAX_DEPTH`].
    pub fn to_json(&self) -> Result<serde_json::Value, TooDeep> {
        self.to_json_at(0)
    }

    fn to_json_at(&self, depth: usize) -> Result<serde_json::Value, TooDeep> {
        if depth > MAX_DEPTH {
            return Err(TooDeep);
        }
        Ok(match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::List(l) => serde_json::Value::Array(
                l.iter().map(|v| v.to_json_at(depth + 1)).collect::<Result<_, _>>()?,
            ),
            Value::Map(m) => serde_json::Value::Object(
                m.borrow()
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_json_at(depth + 1)?)))
                    .collect::<Result<_, TooDeep>>()?,
            ),
        })
    }

    /// Converts a parsed YAML document. Keys that are not strings become their printed form,
    /// as Helm's YAML-to-JSON step does; tags are dropped.
    ///
    /// # Errors
    /// [`TooDeep`] for data nested past [`MAX_DEPTH`].
    pub fn from_yaml(y: &serde_yaml_ng::Value) -> Result<Value, TooDeep> {
        Self::from_yaml_at(y, 0)
    }

    fn from_yaml_at(y: &serde_yaml_ng::Value, depth: usize) -> Result<Value, TooDeep> {
        use serde_yaml_ng::Value as Y;
        if depth > MAX_DEPTH {
            return Err(TooDeep);
        }
        Ok(match y {
            Y::Null => Value::Nil,
            Y::Bool(b) => Value::Bool(*b),
            Y::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Y::String(s) => Value::str(s.as_str()),
            Y::Sequence(s) => Value::list(
                s.iter().map(|v| Self::from_yaml_at(v, depth + 1)).collect::<Result<_, _>>()?,
            ),
            Y::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let key = match Self::from_yaml_at(k, depth + 1)? {
                        Value::Str(s) => s.to_string(),
                        Value::Nil => "null".to_owned(),
                        other => other.to_go_string()?,
                    };
                    out.insert(key, Self::from_yaml_at(v, depth + 1)?);
                }
                Value::map(out)
            }
            Y::Tagged(t) => Self::from_yaml_at(&t.value, depth + 1)?,
        })
    }

    /// The value as YAML, as Helm's `toYaml` gives it: block style, keys sorted, no trailing
    /// newline; `{}`, `[]` and `null` for empty maps, lists and nil.
    ///
    /// # Errors
    /// [`TooDeep`] for a value nested past [`MAX_DEPTH`].
    pub fn to_yaml(&self) -> Result<String, TooDeep> {
        let j = self.to_json()?;
        // Serializing JSON data to YAML cannot fail: every map key is a string.
        let s = serde_yaml_ng::to_string(&j).unwrap_or_default();
        Ok(s.strip_suffix('\n').unwrap_or(&s).to_owned())
    }
}

/// Go's `%v` of a float64: the shortest digits that round-trip, with an exponent when it is
/// below -4 or at least 6 (`1e+06`), as `strconv.FormatFloat(f, 'g', -1, 64)` does.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".to_owned() } else { "0".to_owned() };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_printing_matches_fmt_v() {
        let m = Value::map(BTreeMap::from([
            ("b".to_owned(), Value::Int(1)),
            ("a".to_owned(), Value::str("x")),
        ]));
        assert_eq!(m.to_go_string().unwrap(), "map[a:x b:1]");
        let l = Value::list(vec![Value::Int(1), Value::str("a"), Value::Nil]);
        assert_eq!(l.to_go_string().unwrap(), "[1 a <nil>]");
        assert_eq!(go_float(2.5), "2.5");
        assert_eq!(go_float(12.0), "12");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn a_map_that_contains_itself_is_refused_not_overflowed() {
        let m = Value::map(BTreeMap::new());
        if let Value::Map(inner) = &m {
            inner.borrow_mut().insert("self".to_owned(), m.clone());
        }
        assert_eq!(m.to_go_string(), Err(TooDeep));
        assert_eq!(m.to_yaml(), Err(TooDeep));
        assert!(m.deep_copy().is_err());
        // Break the cycle so the test does not leak.
        if let Value::Map(inner) = &m {
            inner.borrow_mut().clear();
        }
    }

    #[test]
    fn yaml_round_trip_keeps_types_and_sorts_keys() {
        let y: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("b: [1, 2.5, true, null, '7']\na: {x: y}\n1: one").unwrap();
        let v = Value::from_yaml(&y).unwrap();
        assert_eq!(
            v.to_yaml().unwrap(),
            "'1': one\na:\n  x: y\nb:\n- 1\n- 2.5\n- true\n- null\n- '7'"
        );
        assert_eq!(Value::map(BTreeMap::new()).to_yaml().unwrap(), "{}");
        assert_eq!(Value::list(vec![]).to_yaml().unwrap(), "[]");
    }
}
