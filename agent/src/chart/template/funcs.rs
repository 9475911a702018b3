//! The functions a template can call: Go's built-ins and the part of sprig and Helm that
//! charts use. Argument conversions are sprig's: lenient, a string that is not a number is 0.
//! `include`, `tpl`, `required`, `fail`, `and` and `or` need the executor and live there.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::value::{go_float, Value, MAX_DEPTH};

/// The longest list `until`/`seq`-like functions build, and the longest string `repeat` and
/// `indent` make: well past any chart, short of exhausting memory.
const MAX_BUILT: usize = 1 << 20;

const NAMES: &[&str] = &[
    // Executor-level.
    "include",
    "tpl",
    "required",
    "fail",
    "and",
    "or",
    // Go built-ins.
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "slice",
    // sprig: logic and defaults.
    "default",
    "empty",
    "coalesce",
    "ternary",
    "kindIs",
    "kindOf",
    "typeOf",
    "typeIs",
    // Strings.
    "quote",
    "squote",
    "trim",
    "trimSuffix",
    "trimPrefix",
    "upper",
    "lower",
    "replace",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "trunc",
    "indent",
    "nindent",
    "repeat",
    "substr",
    "join",
    "splitList",
    "toString",
    "cat",
    "trimAll",
    "title",
    "nospace",
    // Numbers.
    "add",
    "add1",
    "sub",
    "mul",
    "div",
    "mod",
    "max",
    "min",
    "int",
    "int64",
    "float64",
    "atoi",
    // Lists.
    "list",
    "append",
    "push",
    "prepend",
    "concat",
    "first",
    "last",
    "rest",
    "initial",
    "has",
    "uniq",
    "without",
    "until",
    "sortAlpha",
    "compact",
    "reverse",
    // Dicts.
    "dict",
    "set",
    "unset",
    "hasKey",
    "get",
    "keys",
    "values",
    "merge",
    "mergeOverwrite",
    "deepCopy",
    "pick",
    "omit",
    "pluck",
    "dig",
    // Encodings and Helm.
    "toYaml",
    "fromYaml",
    "fromYamlArray",
    "fromJsonArray",
    "toJson",
    "fromJson",
    "toPrettyJson",
    "lookup",
];

/// Whether `name` is a function a template may call.
pub(crate) fn known(name: &str) -> bool {
    NAMES.contains(&name)
}

/// Calls `name` with `args` (a piped value is the last argument).
pub(crate) fn call(name: &str, mut a: Vec<Value>) -> Result<Value, String> {
    let n = a.len();
    let want = |k: usize| {
        if n == k {
            Ok(())
        } else {
            Err(format!("wrong number of args: want {k} got {n}"))
        }
    };
    let at_least = |k: usize| {
        if n >= k {
            Ok(())
        } else {
            Err(format!("wrong number of args: want at least {k} got {n}"))
        }
    };
    Ok(match name {
        "not" => {
            want(1)?;
            Value::Bool(!a[0].truthy())
        }
        "eq" => {
            at_least(2)?;
            Value::Bool(a[1..].iter().any(|b| equal(&a[0], b)))
        }
        "ne" => {
            want(2)?;
            Value::Bool(!equal(&a[0], &a[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let o = order(&a[0], &a[1])?;
            Value::Bool(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "len" => {
            want(1)?;
            Value::Int(match &a[0] {
                Value::Str(s) => s.len(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.borrow().len(),
                v => return Err(format!("len of {}", v.type_name())),
            } as i64)
        }
        "index" => {
            at_least(1)?;
            let mut cur = a[0].clone();
            for k in &a[1..] {
                cur = match (&cur, k) {
                    (Value::List(l), k) => {
                        let i = int_arg(k)?;
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| l.get(i))
                            .cloned()
                            .ok_or(format!("index out of range: {i}"))?
                    }
                    (Value::Map(m), k) => m.borrow().get(&string(k)).cloned().unwrap_or_default(),
                    (Value::Nil, _) => Value::Nil,
                    (v, _) => return Err(format!("can't index item of type {}", v.type_name())),
                };
            }
            cur
        }
        "slice" => {
            at_least(1)?;
            let idx: Vec<i64> = a[1..].iter().map(int_arg).collect::<Result<_, _>>()?;
            match &a[0] {
                Value::List(l) => {
                    let (i, j) = bounds(&idx, l.len())?;
                    Value::list(l[i..j].to_vec())
                }
                Value::Str(s) => {
                    let (i, j) = bounds(&idx, s.len())?;
                    Value::str(s.get(i..j).ok_or("slice splits a character")?)
                }
                v => return Err(format!("can't slice item of type {}", v.type_name())),
            }
        }
        "print" => Value::str(go_print(&a)?),
        "println" => {
            Value::str(a.iter().map(show).collect::<Result<Vec<_>, _>>()?.join(" ") + "\n")
        }
        "printf" => {
            at_least(1)?;
            let f = string(&a[0]);
            Value::str(sprintf(&f, &a[1..])?)
        }
        "default" => {
            at_least(1)?;
            if n >= 2 && !empty(&a[1]) {
                a.swap_remove(1)
            } else {
                a.swap_remove(0)
            }
        }
        "empty" => {
            want(1)?;
            Value::Bool(empty(&a[0]))
        }
        "coalesce" => a.into_iter().find(|v| !empty(v)).unwrap_or_default(),
        "ternary" => {
            want(3)?;
            if a[2].truthy() {
                a.swap_remove(0)
            } else {
                a.swap_remove(1)
            }
        }
        "kindIs" => {
            want(2)?;
            Value::Bool(string(&a[0]) == a[1].kind())
        }
        "kindOf" => {
            want(1)?;
            Value::str(a[0].kind())
        }
        "typeOf" => {
            want(1)?;
            Value::str(a[0].type_name())
        }
        "typeIs" => {
            want(2)?;
            Value::Bool(string(&a[0]) == a[1].type_name())
        }
        "quote" | "squote" => {
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(|v| {
                    if name == "quote" {
                        go_quote(&string(v))
                    } else {
                        format!("'{}'", string(v))
                    }
                })
                .collect();
            Value::str(parts.join(" "))
        }
        "trim" => {
            want(1)?;
            Value::str(string(&a[0]).trim())
        }
        "nospace" => {
            want(1)?;
            Value::str(string(&a[0]).split_whitespace().collect::<String>())
        }
        "trimAll" => {
            want(2)?;
            let cut = string(&a[0]);
            Value::str(string(&a[1]).trim_matches(|c| cut.contains(c)))
        }
        "trimSuffix" => {
            want(2)?;
            let (suf, s) = (string(&a[0]), string(&a[1]));
            Value::str(s.strip_suffix(suf.as_str()).unwrap_or(&s))
        }
        "trimPrefix" => {
            want(2)?;
            let (pre, s) = (string(&a[0]), string(&a[1]));
            Value::str(s.strip_prefix(pre.as_str()).unwrap_or(&s))
        }
        "upper" => {
            want(1)?;
            Value::str(string(&a[0]).to_uppercase())
        }
        "lower" => {
            want(1)?;
            Value::str(string(&a[0]).to_lowercase())
        }
        "title" => {
            want(1)?;
            let s = string(&a[0]);
            let mut out = String::with_capacity(s.len());
            let mut start = true;
            for c in s.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = c.is_whitespace();
            }
            Value::str(out)
        }
        "replace" => {
            want(3)?;
            let (old, new, s) = (string(&a[0]), string(&a[1]), string(&a[2]));
            if old.is_empty() {
                return Err("replacing the empty string".into());
            }
            let out = s.replace(old.as_str(), &new);
            if out.len() > MAX_BUILT.max(s.len()) {
                return Err("the result is too long".into());
            }
            Value::str(out)
        }
        "contains" => {
            want(2)?;
            Value::Bool(string(&a[1]).contains(string(&a[0]).as_str()))
        }
        "hasPrefix" => {
            want(2)?;
            Value::Bool(string(&a[1]).starts_with(string(&a[0]).as_str()))
        }
        "hasSuffix" => {
            want(2)?;
            Value::Bool(string(&a[1]).ends_with(string(&a[0]).as_str()))
        }
        "trunc" => {
            want(2)?;
            let c = int_arg(&a[0])?;
            let s = string(&a[1]);
            let len = s.len() as i64;
            let cut = |i: usize| {
                let mut i = i.min(s.len());
                while !s.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            Value::str(if c < 0 && len + c > 0 {
                s[cut((len + c) as usize)..].to_owned()
            } else if c >= 0 && len > c {
                s[..cut(c as usize)].to_owned()
            } else {
                s
            })
        }
        "indent" | "nindent" => {
            want(2)?;
            let w = usize::try_from(int_arg(&a[0])?).unwrap_or(0);
            let s = string(&a[1]);
            let lines = s.matches('\n').count() + 1;
            if w.saturating_mul(lines).saturating_add(s.len()) > MAX_BUILT.max(s.len() * 2) {
                return Err("the result is too long".into());
            }
            let pad = " ".repeat(w);
            let body = format!("{pad}{}", s.replace('\n', &format!("\n{pad}")));
            Value::str(if name == "nindent" { format!("\n{body}") } else { body })
        }
        "repeat" => {
            want(2)?;
            let c = usize::try_from(int_arg(&a[0])?).unwrap_or(0);
            let s = string(&a[1]);
            if c.saturating_mul(s.len()) > MAX_BUILT {
                return Err("the result is too long".into());
            }
            Value::str(s.repeat(c))
        }
        "substr" => {
            want(3)?;
            let (i, j, s) = (int_arg(&a[0])?, int_arg(&a[1])?, string(&a[2]));
            let len = s.len() as i64;
            let i = if i < 0 { 0 } else { i.min(len) } as usize;
            let j = if j < 0 || j > len { len } else { j } as usize;
            Value::str(s.get(i..j.max(i)).unwrap_or_default())
        }
        "join" => {
            want(2)?;
            let sep = string(&a[0]);
            let parts: Vec<String> = match &a[1] {
                Value::List(l) => {
                    l.iter().filter(|v| !matches!(v, Value::Nil)).map(string).collect()
                }
                v => vec![string(v)],
            };
            Value::str(parts.join(&sep))
        }
        "splitList" => {
            want(2)?;
            let (sep, s) = (string(&a[0]), string(&a[1]));
            if sep.is_empty() {
                Value::list(s.chars().map(|c| Value::str(c.to_string())).collect())
            } else {
                Value::list(s.split(sep.as_str()).map(Value::str).collect())
            }
        }
        "toString" => {
            want(1)?;
            Value::str(string(&a[0]))
        }
        "cat" => Value::str(
            a.iter().filter(|v| !matches!(v, Value::Nil)).map(string).collect::<Vec<_>>().join(" "),
        ),
        "add" => Value::Int(
            a.iter().try_fold(0i64, |s, v| Ok::<_, String>(s.wrapping_add(int_arg(v)?)))?,
        ),
        "add1" => {
            want(1)?;
            Value::Int(int_arg(&a[0])?.wrapping_add(1))
        }
        "sub" | "div" | "mod" => {
            want(2)?;
            let (x, y) = (int_arg(&a[0])?, int_arg(&a[1])?);
            Value::Int(match name {
                "sub" => x.wrapping_sub(y),
                "div" => x.checked_div(y).ok_or("integer divide by zero")?,
                _ => x.checked_rem(y).ok_or("integer divide by zero")?,
            })
        }
        "mul" => Value::Int(
            a.iter().try_fold(1i64, |s, v| Ok::<_, String>(s.wrapping_mul(int_arg(v)?)))?,
        ),
        "max" | "min" => {
            at_least(1)?;
            let xs: Vec<i64> = a.iter().map(int_arg).collect::<Result<_, _>>()?;
            let it = xs.into_iter();
            Value::Int(if name == "max" { it.max() } else { it.min() }.unwrap_or(0))
        }
        "int" | "int64" | "atoi" => {
            want(1)?;
            Value::Int(int_arg(&a[0])?)
        }
        "float64" => {
            want(1)?;
            Value::Float(match &a[0] {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                Value::Str(s) => s.trim().parse().unwrap_or(0.0),
                Value::Bool(b) => f64::from(u8::from(*b)),
                _ => 0.0,
            })
        }
        "list" => Value::list(a),
        "append" | "push" => {
            want(2)?;
            let mut l = list_arg(&a[0])?;
            l.push(a.swap_remove(1));
            Value::list(l)
        }
        "prepend" => {
            want(2)?;
            let mut l = list_arg(&a[0])?;
            l.insert(0, a.swap_remove(1));
            Value::list(l)
        }
        "concat" => {
            let mut out = Vec::new();
            for v in &a {
                out.extend(list_arg(v)?);
            }
            Value::list(out)
        }
        "first" | "last" | "rest" | "initial" | "uniq" | "compact" | "reverse" | "sortAlpha" => {
            want(1)?;
            let l = list_arg(&a[0])?;
            match name {
                "first" => l.first().cloned().unwrap_or_default(),
                "last" => l.last().cloned().unwrap_or_default(),
                "rest" => Value::list(l.get(1..).unwrap_or_default().to_vec()),
                "initial" => Value::list(l[..l.len().saturating_sub(1)].to_vec()),
                "uniq" => {
                    let mut out: Vec<Value> = Vec::new();
                    for v in l {
                        if !out.iter().any(|o| equal(o, &v)) {
                            out.push(v);
                        }
                    }
                    Value::list(out)
                }
                "compact" => Value::list(l.into_iter().filter(|v| !empty(v)).collect()),
                "reverse" => Value::list(l.into_iter().rev().collect()),
                _ => {
                    let mut s: Vec<String> = l.iter().map(string).collect();
                    s.sort();
                    Value::list(s.into_iter().map(Value::str).collect())
                }
            }
        }
        "has" => {
            want(2)?;
            Value::Bool(list_arg(&a[1])?.iter().any(|v| equal(v, &a[0])))
        }
        "without" => {
            at_least(1)?;
            let l = list_arg(&a[0])?;
            Value::list(l.into_iter().filter(|v| !a[1..].iter().any(|w| equal(v, w))).collect())
        }
        "until" => {
            want(1)?;
            let c = int_arg(&a[0])?;
            if c.unsigned_abs() > MAX_BUILT as u64 {
                return Err("the list is too long".into());
            }
            let r: Vec<Value> = if c >= 0 {
                (0..c).map(Value::Int).collect()
            } else {
                (c + 1..=0).rev().map(Value::Int).collect()
            };
            Value::list(r)
        }
        "dict" => {
            let mut m = BTreeMap::new();
            let mut it = a.into_iter();
            while let Some(k) = it.next() {
                m.insert(string(&k), it.next().unwrap_or_else(|| Value::str("")));
            }
            Value::map(m)
        }
        "set" => {
            want(3)?;
            let m = map_arg(&a[0])?;
            m.borrow_mut().insert(string(&a[1]), a[2].clone());
            a.swap_remove(0)
        }
        "unset" => {
            want(2)?;
            map_arg(&a[0])?.borrow_mut().remove(&string(&a[1]));
            a.swap_remove(0)
        }
        "hasKey" => {
            want(2)?;
            Value::Bool(map_arg(&a[0])?.borrow().contains_key(&string(&a[1])))
        }
        "get" => {
            want(2)?;
            map_arg(&a[0])?.borrow().get(&string(&a[1])).cloned().unwrap_or_else(|| Value::str(""))
        }
        "keys" => {
            let mut out = Vec::new();
            for v in &a {
                out.extend(map_arg(v)?.borrow().keys().map(|k| Value::str(k.as_str())));
            }
            Value::list(out)
        }
        "values" => {
            want(1)?;
            Value::list(map_arg(&a[0])?.borrow().values().cloned().collect())
        }
        "pick" | "omit" => {
            at_least(1)?;
            let names: Vec<String> = a[1..].iter().map(string).collect();
            let m = map_arg(&a[0])?;
            let out = m
                .borrow()
                .iter()
                .filter(|(k, _)| names.contains(k) == (name == "pick"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Value::map(out)
        }
        "pluck" => {
            at_least(1)?;
            let key = string(&a[0]);
            let mut out = Vec::new();
            for m in &a[1..] {
                if let Some(v) = map_arg(m)?.borrow().get(&key) {
                    out.push(v.clone());
                }
            }
            Value::list(out)
        }
        "dig" => {
            at_least(3)?;
            let dict = a.pop().unwrap_or_default();
            let default = a.pop().unwrap_or_default();
            let mut cur = dict;
            for k in &a {
                let next = match &cur {
                    Value::Map(m) => m.borrow().get(&string(k)).cloned(),
                    _ => None,
                };
                match next {
                    Some(v) => cur = v,
                    None => return Ok(default),
                }
            }
            cur
        }
        "merge" | "mergeOverwrite" => {
            at_least(1)?;
            let dst = map_arg(&a[0])?;
            for src in &a[1..] {
                let src = map_arg(src)?;
                if std::rc::Rc::ptr_eq(&dst, &src) {
                    continue;
                }
                // A copy of the source's top: the merge may write into a map the source
                // holds, which must not be borrowed meanwhile.
                let src = src.borrow().clone();
                merge_into(&dst, &src, name == "mergeOverwrite", 0)?;
            }
            a.swap_remove(0)
        }
        "deepCopy" => {
            want(1)?;
            a[0].deep_copy().map_err(|e| e.to_string())?
        }
        "toYaml" => {
            want(1)?;
            Value::str(a[0].to_yaml().map_err(|e| e.to_string())?)
        }
        "toJson" | "toPrettyJson" => {
            want(1)?;
            let j = a[0].to_json().map_err(|e| e.to_string())?;
            let s = if name == "toJson" {
                serde_json::to_string(&j)
            } else {
                serde_json::to_string_pretty(&j)
            };
            Value::str(s.unwrap_or_default())
        }
        "fromYaml" | "fromJson" | "fromYamlArray" | "fromJsonArray" => {
            want(1)?;
            let s = string(&a[0]);
            let array = name.ends_with("Array");
            let parsed: Result<Value, String> = if name.starts_with("fromJson") {
                serde_json::from_str::<serde_json::Value>(&s)
                    .map_err(|e| e.to_string())
                    .and_then(|j| Value::from_json(&j).map_err(|e| e.to_string()))
            } else {
                serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&s)
                    .map_err(|e| e.to_string())
                    .and_then(|y| Value::from_yaml(&y).map_err(|e| e.to_string()))
            };
            // Helm's fromYaml reports a parse error as the result's "Error" key, not a failure.
            match (array, parsed) {
                (true, Ok(Value::List(l))) => Value::List(l),
                (true, Ok(Value::Nil)) => Value::list(Vec::new()),
                (true, Ok(v)) => {
                    Value::list(vec![Value::str(format!("not a list: {}", v.type_name()))])
                }
                (true, Err(e)) => Value::list(vec![Value::str(e)]),
                (_, Ok(Value::Map(m))) => Value::Map(m),
                (_, Ok(Value::Nil)) => Value::map(BTreeMap::new()),
                (_, Ok(v)) => error_map(format!("cannot unmarshal {} into a map", v.type_name())),
                (_, Err(e)) => error_map(e),
            }
        }
        // Offline, as in `helm template`: the cluster has nothing.
        "lookup" => Value::map(BTreeMap::new()),
        _ => return Err("unknown function".into()),
    })
}

fn error_map(e: String) -> Value {
    Value::map(BTreeMap::from([("Error".to_owned(), Value::str(e))]))
}

fn bounds(idx: &[i64], len: usize) -> Result<(usize, usize), String> {
    let get = |k: usize, d: usize| -> Result<usize, String> {
        match idx.get(k) {
            None => Ok(d),
            Some(&i) => usize::try_from(i)
                .ok()
                .filter(|i| *i <= len)
                .ok_or(format!("index out of range: {i}")),
        }
    };
    let (i, j) = (get(0, 0)?, get(1, len)?);
    if i > j {
        return Err(format!("invalid slice index: {i} > {j}"));
    }
    Ok((i, j))
}

/// mergo's deep merge, which sprig's `merge` (fill in what is missing or empty) and
/// `mergeOverwrite` (non-empty values of `src` win) use. Values are copied, so the sources
/// stay as they were.
fn merge_into(
    dst: &super::value::Map,
    src: &BTreeMap<String, Value>,
    overwrite: bool,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("the maps nest too deep".into());
    }
    for (k, s) in src {
        let d = dst.borrow().get(k).cloned();
        match (d, s) {
            (Some(Value::Map(dm)), Value::Map(sm)) if !std::rc::Rc::ptr_eq(&dm, sm) => {
                let sm = sm.borrow().clone();
                merge_into(&dm, &sm, overwrite, depth + 1)?;
            }
            (d, s) => {
                let take = match &d {
                    None => true,
                    Some(d) => empty(d) || (overwrite && !empty(s)),
                };
                if take {
                    let v = s.deep_copy().map_err(|e| e.to_string())?;
                    dst.borrow_mut().insert(k.clone(), v);
                }
            }
        }
    }
    Ok(())
}

/// sprig's `empty`.
pub(crate) fn empty(v: &Value) -> bool {
    !v.truthy()
}

/// Go's `eq` for the values templates compare; numbers compare by value whatever their type.
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (*x as f64) == *y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::List(x), Value::List(y)) => std::rc::Rc::ptr_eq(x, y),
        (Value::Map(x), Value::Map(y)) => std::rc::Rc::ptr_eq(x, y),
        _ => false,
    }
}

fn order(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    let num = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    };
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).ok_or_else(|| "comparing NaN".to_owned()),
            _ => Err(format!(
                "incompatible types for comparison: {} and {}",
                a.type_name(),
                b.type_name()
            )),
        },
    }
}

/// sprig's `toInt64`: numbers truncate, strings parse (else 0), booleans are 0 or 1.
fn int_arg(v: &Value) -> Result<i64, String> {
    Ok(match v {
        Value::Int(i) => *i,
        Value::Float(f) if f.is_finite() => *f as i64,
        Value::Float(_) => 0,
        Value::Str(s) => {
            let t = s.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
                .unwrap_or(0)
        }
        Value::Bool(b) => i64::from(*b),
        Value::Nil => 0,
        v => return Err(format!("cannot convert {} to a number", v.type_name())),
    })
}

fn list_arg(v: &Value) -> Result<Vec<Value>, String> {
    match v {
        Value::List(l) => Ok(l.as_ref().clone()),
        Value::Nil => Ok(Vec::new()),
        v => Err(format!("cannot use {} as a list", v.type_name())),
    }
}

fn map_arg(v: &Value) -> Result<super::value::Map, String> {
    match v {
        Value::Map(m) => Ok(m.clone()),
        v => Err(format!("cannot use {} as a map", v.type_name())),
    }
}

/// sprig's `strval`: strings as they are, anything else as `%v` prints it.
fn string(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Nil => String::new(),
        v => v.to_go_string().unwrap_or_default(),
    }
}

fn show(v: &Value) -> Result<String, String> {
    v.to_go_string().map_err(|e| e.to_string())
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
fn go_print(a: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(a[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&show(v)?);
    }
    Ok(out)
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %d %v %q %t %f %e %g %x %X %o %b %c
/// %%`, with flags `-+ 0#`, width and precision. Mismatches print as Go prints them
/// (`%!d(string=x)`).
pub(crate) fn sprintf(f: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = f.chars().peekable();
    let mut next = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&fl) = it.peek() {
            match fl {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            it.next();
        }
        let num = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize).min(4096));
                it.next();
            }
            n
        };
        let width = num(&mut it);
        let prec = if it.peek() == Some(&'.') {
            it.next();
            Some(num(&mut it).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let bad =
            || format!("%!{verb}({}={})", arg.type_name(), arg.to_go_string().unwrap_or_default());
        let sign = |s: String, neg: bool| {
            if neg {
                s
            } else if plus {
                format!("+{s}")
            } else if space {
                format!(" {s}")
            } else {
                s
            }
        };
        let body = match (verb, arg) {
            ('v', Value::Nil) => "<nil>".to_owned(),
            ('v', v) => show(v)?,
            ('s', Value::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.to_string(),
            },
            ('s', Value::Nil) => "%!s(<nil>)".to_owned(),
            (
                's',
                v @ (Value::List(_)
                | Value::Map(_)
                | Value::Int(_)
                | Value::Float(_)
                | Value::Bool(_)),
            ) => {
                if matches!(v, Value::Int(_) | Value::Float(_) | Value::Bool(_)) {
                    bad()
                } else {
                    show(v)?
                }
            }
            ('q', Value::Str(s)) => go_quote(s),
            ('q', Value::Int(i)) => match u32::try_from(*i).ok().and_then(char::from_u32) {
                Some(c) => format!("'{c}'"),
                None => bad(),
            },
            ('t', Value::Bool(b)) => b.to_string(),
            ('d', Value::Int(i)) => sign(i.to_string(), *i < 0),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('X', Value::Int(i)) => format!("{i:X}"),
            ('o', Value::Int(i)) => format!("{i:o}"),
            ('b', Value::Int(i)) => format!("{i:b}"),
            ('c', Value::Int(i)) => match u32::try_from(*i).ok().and_then(char::from_u32) {
                Some(c) => c.to_string(),
                None => bad(),
            },
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('f' | 'F', Value::Float(x)) => sign(format!("{x:.*}", prec.unwrap_or(6)), *x < 0.0),
            ('e', Value::Float(x)) => sign(go_exp(*x, prec.unwrap_or(6)), *x < 0.0),
            ('g', Value::Float(x)) => sign(go_float(*x), *x < 0.0),
            _ => bad(),
        };
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if minus {
                    out.push_str(&body);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else if zero && matches!(verb, 'd' | 'f' | 'x' | 'X' | 'o' | 'b' | 'e' | 'g') {
                    let (s, digits) = match body.strip_prefix(['-', '+']) {
                        Some(d) => (&body[..1], d),
                        None => ("", body.as_str()),
                    };
                    out.push_str(s);
                    out.extend(std::iter::repeat_n('0', pad));
                    out.push_str(digits);
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.to_go_string().unwrap_or_default()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    Ok(out)
}

fn go_exp(x: f64, prec: usize) -> String {
    let s = format!("{x:.prec$e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}
