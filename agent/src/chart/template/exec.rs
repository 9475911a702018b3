//! Runs a parsed template over a [`Value`], with Go's scoping of variables and Helm's
//! `include`, `tpl`, `required` and `fail`. Work is bounded: steps, output bytes and the depth
//! of nested template calls each have a limit, so a template that loops or recurses forever
//! ends in an error.

use std::rc::Rc;

use super::funcs;
use super::parse::{Command, Node, Operand, Pipeline};
use super::value::Value;
use super::{Limits, TemplateError, Templates};

/// What a body's execution ended with.
enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) struct Exec<'t> {
    set: &'t Templates,
    limits: Limits,
    steps: u64,
    out_bytes: u64,
    depth: usize,
}

/// The variables of one template call: `$` and those declared so far, innermost last.
struct Frame {
    file: Rc<str>,
    vars: Vec<(String, Value)>,
}

impl<'t> Exec<'t> {
    pub(crate) fn new(set: &'t Templates, limits: Limits) -> Self {
        Exec { set, limits, steps: 0, out_bytes: 0, depth: 0 }
    }

    /// Runs the template `name` with `dot` and returns its output.
    pub(crate) fn call(
        &mut self,
        name: &str,
        dot: &Value,
        line: Option<(&str, usize)>,
    ) -> Result<String, TemplateError> {
        let Some((file, body)) = self.set.lookup(name) else {
            return Err(match line {
                Some((f, l)) => TemplateError::Exec {
                    template: f.to_owned(),
                    line: l,
                    message: format!("no template {name:?} is defined"),
                },
                None => TemplateError::NoTemplate(name.to_owned()),
            });
        };
        if self.depth >= self.limits.max_depth {
            return Err(TemplateError::Limit {
                what: "nested template calls",
                limit: self.limits.max_depth as u64,
            });
        }
        self.depth += 1;
        let mut frame = Frame { file, vars: vec![("$".to_owned(), dot.clone())] };
        let mut out = String::new();
        let r = self.nodes(&body, dot, &mut frame, &mut out);
        self.depth -= 1;
        r.map(|_| out)
    }

    /// Runs `src` (Helm's `tpl`) as a template of its own, named `name`, with `dot`.
    fn tpl(
        &mut self,
        file: &str,
        line: usize,
        src: &str,
        dot: &Value,
    ) -> Result<String, TemplateError> {
        let parsed = super::parse::parse(&format!("{file}:{line}: tpl"), src)?;
        if self.depth >= self.limits.max_depth {
            return Err(TemplateError::Limit {
                what: "nested template calls",
                limit: self.limits.max_depth as u64,
            });
        }
        // Templates that `tpl` text defines are visible only inside it, which is all a chart
        // can rely on without Helm's shared, mutable template set.
        let set = self.set.with_extra(parsed.defines);
        let mut sub = Exec {
            set: &set,
            limits: self.limits,
            steps: self.steps,
            out_bytes: self.out_bytes,
            depth: self.depth + 1,
        };
        let mut frame = Frame {
            file: format!("{file}:{line}: tpl").into(),
            vars: vec![("$".to_owned(), dot.clone())],
        };
        let mut out = String::new();
        let r = sub.nodes(&parsed.body, dot, &mut frame, &mut out);
        self.steps = sub.steps;
        self.out_bytes = sub.out_bytes;
        r.map(|_| out)
    }

    fn step(&mut self) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > self.limits.max_steps {
            return Err(TemplateError::Limit {
                what: "evaluation steps",
                limit: self.limits.max_steps,
            });
        }
        Ok(())
    }

    fn write(&mut self, out: &mut String, s: &str) -> Result<(), TemplateError> {
        self.out_bytes += s.len() as u64;
        if self.out_bytes > self.limits.max_output {
            return Err(TemplateError::Limit {
                what: "output bytes",
                limit: self.limits.max_output,
            });
        }
        out.push_str(s);
        Ok(())
    }

    fn nodes(
        &mut self,
        nodes: &[Node],
        dot: &Value,
        f: &mut Frame,
        out: &mut String,
    ) -> Result<Flow, TemplateError> {
        for n in nodes {
            self.step()?;
            match n {
                Node::Text(t) => self.write(out, t)?,
                Node::Action { line, pipe } => {
                    let v = self.pipeline(pipe, dot, f, *line)?;
                    if pipe.vars.is_empty() {
                        let s = printed(&v).map_err(|m| err(f, *line, m))?;
                        self.write(out, &s)?;
                    }
                }
                Node::If { line, with, pipe, then, otherwise } => {
                    let mark = f.vars.len();
                    let v = self.pipeline(pipe, dot, f, *line)?;
                    let flow = if v.truthy() {
                        let d = if *with { v } else { dot.clone() };
                        self.nodes(then, &d, f, out)?
                    } else {
                        self.nodes(otherwise, dot, f, out)?
                    };
                    f.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range { line, pipe, body, otherwise } => {
                    let mark = f.vars.len();
                    let flow = self.range(*line, pipe, body, otherwise, dot, f, out);
                    f.vars.truncate(mark);
                    flow?;
                }
                Node::Template { line, name, pipe } => {
                    let d = match pipe {
                        Some(p) => self.pipeline(p, dot, f, *line)?,
                        None => Value::Nil,
                    };
                    let file = f.file.clone();
                    let s = self.call(name, &d, Some((&file, *line)))?;
                    // The called template's output was counted as it was written.
                    out.push_str(&s);
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    #[allow(clippy::too_many_arguments)]
    fn range(
        &mut self,
        line: usize,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
        f: &mut Frame,
        out: &mut String,
    ) -> Result<(), TemplateError> {
        // The range variables are set per element, not by the pipeline itself.
        let bare = Pipeline { vars: Vec::new(), assign: false, cmds: pipe.cmds.clone() };
        let v = self.pipeline(&bare, dot, f, line)?;
        // What to visit, element by element: a count is never materialised as a list.
        enum Items {
            List(Rc<Vec<Value>>),
            Map(Vec<(String, Value)>),
            Count(i64),
        }
        let items = match &v {
            Value::Nil => Items::Count(0),
            Value::List(l) => Items::List(l.clone()),
            Value::Map(m) => {
                Items::Map(m.borrow().iter().map(|(k, x)| (k.clone(), x.clone())).collect())
            }
            Value::Int(n) if *n >= 0 => Items::Count(*n),
            other => return Err(err(f, line, format!("range can't iterate over {}", show(other)))),
        };
        let len = match &items {
            Items::List(l) => l.len() as u64,
            Items::Map(m) => m.len() as u64,
            Items::Count(n) => n.unsigned_abs(),
        };
        if len == 0 {
            self.nodes(otherwise, dot, f, out)?;
            return Ok(());
        }
        let element = |i: u64| -> (Value, Value) {
            let n = i as usize;
            match &items {
                Items::List(l) => (Value::Int(i as i64), l.get(n).cloned().unwrap_or_default()),
                Items::Map(m) => {
                    m.get(n).map(|(k, x)| (Value::str(k.as_str()), x.clone())).unwrap_or_default()
                }
                Items::Count(_) => (Value::Int(i as i64), Value::Int(i as i64)),
            }
        };
        let mark = f.vars.len();
        for i in 0..len {
            self.step()?;
            let (k, x) = element(i);
            match pipe.vars.as_slice() {
                [] => {}
                [one] => set_var(f, one, x.clone(), pipe.assign, mark),
                [key, elem, ..] => {
                    set_var(f, key, k, pipe.assign, mark);
                    set_var(f, elem, x.clone(), pipe.assign, mark);
                }
            }
            let inner = f.vars.len();
            let flow = self.nodes(body, &x, f, out)?;
            f.vars.truncate(inner);
            if matches!(flow, Flow::Break) {
                break;
            }
        }
        Ok(())
    }

    fn pipeline(
        &mut self,
        p: &Pipeline,
        dot: &Value,
        f: &mut Frame,
        line: usize,
    ) -> Result<Value, TemplateError> {
        let mut v: Option<Value> = None;
        for c in &p.cmds {
            self.step()?;
            v = Some(self.command(c, dot, f, line, v)?);
        }
        let v = v.unwrap_or_default();
        for name in &p.vars {
            if p.assign {
                match f.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => return Err(err(f, line, format!("undefined variable: {name}"))),
                }
            } else {
                f.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        c: &Command,
        dot: &Value,
        f: &mut Frame,
        line: usize,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let Some(first) = c.args.first() else {
            return Err(err(f, line, "missing value for command"));
        };
        let Operand::Func(name) = first else {
            if c.args.len() > 1 || piped.is_some() {
                return Err(err(f, line, "can't give argument to non-function"));
            }
            return self.operand(first, dot, f, line);
        };
        let rest = &c.args[1..];
        // `and` and `or` stop at the first argument that decides them, as Go's do.
        if name == "and" || name == "or" {
            let mut last = Value::Nil;
            let n = rest.len() + usize::from(piped.is_some());
            if n == 0 {
                return Err(err(
                    f,
                    line,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            for a in rest {
                last = self.operand(a, dot, f, line)?;
                if last.truthy() != (name == "and") {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut args = Vec::with_capacity(rest.len() + 1);
        for a in rest {
            args.push(self.operand(a, dot, f, line)?);
        }
        args.extend(piped);
        match name.as_str() {
            "include" => {
                let [Value::Str(n), data] = args.as_slice() else {
                    return Err(err(f, line, "include wants a template name and its data"));
                };
                let file = f.file.clone();
                Ok(Value::str(self.call(n, data, Some((&file, line)))?))
            }
            "tpl" => {
                let [Value::Str(src), data] = args.as_slice() else {
                    return Err(err(f, line, "tpl wants a template string and its data"));
                };
                let file = f.file.clone();
                Ok(Value::str(self.tpl(&file, line, src, data)?))
            }
            "required" => {
                let [msg, v] = args.as_slice() else {
                    return Err(err(f, line, "required wants a message and a value"));
                };
                let missing = matches!(v, Value::Nil) || matches!(v, Value::Str(s) if s.is_empty());
                if missing {
                    return Err(TemplateError::Fail {
                        template: f.file.to_string(),
                        line,
                        message: plain(msg),
                    });
                }
                Ok(v.clone())
            }
            "fail" => Err(TemplateError::Fail {
                template: f.file.to_string(),
                line,
                message: args.first().map(plain).unwrap_or_default(),
            }),
            _ => match funcs::call(name, args) {
                Ok(v) => Ok(v),
                Err(m) => Err(err(f, line, format!("{name}: {m}"))),
            },
        }
    }

    fn operand(
        &mut self,
        o: &Operand,
        dot: &Value,
        f: &mut Frame,
        line: usize,
    ) -> Result<Value, TemplateError> {
        Ok(match o {
            // A function named as an argument is called without arguments.
            Operand::Func(_) => {
                self.command(&Command { args: vec![o.clone()] }, dot, f, line, None)?
            }
            Operand::Field(fs) => fields(dot, fs).map_err(|m| err(f, line, m))?,
            Operand::Var(name, fs) => {
                let Some((_, v)) = f.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err(err(f, line, format!("undefined variable: {name}")));
                };
                let v = v.clone();
                fields(&v, fs).map_err(|m| err(f, line, m))?
            }
            Operand::Sub(p, fs) => {
                let v = self.pipeline(p, dot, f, line)?;
                fields(&v, fs).map_err(|m| err(f, line, m))?
            }
            Operand::Nil => Value::Nil,
            Operand::Bool(b) => Value::Bool(*b),
            Operand::Int(i) => Value::Int(*i),
            Operand::Float(x) => Value::Float(*x),
            Operand::Str(s) => Value::Str(s.clone()),
        })
    }
}

fn err(f: &Frame, line: usize, m: impl Into<String>) -> TemplateError {
    TemplateError::Exec { template: f.file.to_string(), line, message: m.into() }
}

/// Declares `name`, or with `assign`, sets the one in scope (range variables of `=`).
fn set_var(f: &mut Frame, name: &str, v: Value, assign: bool, mark: usize) {
    if assign {
        if let Some(slot) = f.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = v;
            return;
        }
    }
    match f.vars[mark..].iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = v,
        None => f.vars.push((name.to_owned(), v)),
    }
}

/// Selects `fs` from `v`: map keys; a missing key is nil, and selecting from nil is an error,
/// as in Go.
fn fields(v: &Value, fs: &[String]) -> Result<Value, String> {
    let mut cur = v.clone();
    for name in fs {
        cur = match &cur {
            Value::Map(m) => m.borrow().get(name).cloned().unwrap_or(Value::Nil),
            Value::Nil => return Err(format!("nil pointer evaluating interface {{}}.{name}")),
            other => {
                return Err(format!("can't evaluate field {name} in type {}", other.type_name()))
            }
        };
    }
    Ok(cur)
}

fn show(v: &Value) -> String {
    v.to_go_string().unwrap_or_else(|_| v.type_name().to_owned())
}

/// A value as an action prints it; nil prints nothing (Helm removes Go's `<no value>`).
fn printed(v: &Value) -> Result<String, String> {
    match v {
        Value::Nil => Ok(String::new()),
        v => v.to_go_string().map_err(|e| e.to_string()),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        v => show(v),
    }
}
