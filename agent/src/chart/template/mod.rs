//! A Go `text/template` engine with the Helm and sprig functions charts use, so `ferry k8s
//! render` renders the chart's own templates without Helm.
//!
//! ```text
//!   parse.rs   text → items (trim markers, comments) → tree of nodes + named templates
//!   exec.rs    nodes × Value → text; variables, control flow, include/tpl/required/fail
//!   funcs.rs   Go built-ins and sprig functions
//!   value.rs   Value: Go's interface{} (shared maps), %v printing, YAML and JSON
//! ```
//!
//! What it does not do: methods on values, `call`, HTML escaping functions, and sprig
//! functions no chart of ours uses (a template naming one fails to parse, naming it).
//!
//! # Security
//! Templates and values may be anything: errors name the template and line, never panic, and
//! [`Limits`] bound steps, output and nesting, so no input loops or allocates without end.

mod exec;
mod funcs;
mod parse;
mod value;

use std::collections::HashMap;
use std::rc::Rc;

pub use value::{Map, TooDeep, Value};

use parse::Node;

/// Why a template did not parse or render.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template text does not parse.
    #[error("{template}:{line}: {message}")]
    Syntax {
        /// The file (or template) name.
        template: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Running the template failed (a nil map, a bad argument, an unknown template).
    #[error("{template}:{line}: {message}")]
    Exec {
        /// The file the failing action is in.
        template: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The chart refused its values itself, with `fail` or `required`: `message` is the
    /// chart's own words, as Helm prints them.
    #[error("{template}:{line}: {message}")]
    Fail {
        /// The file of the `fail` or `required`.
        template: String,
        /// 1-based line.
        line: usize,
        /// The chart's message.
        message: String,
    },
    /// No template has this name.
    #[error("no template named {0:?}")]
    NoTemplate(String),
    /// A [`Limits`] bound was reached.
    #[error("rendering went past its limit of {limit} {what}")]
    Limit {
        /// Which bound.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
}

/// Bounds on one render.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nodes and commands evaluated.
    pub max_steps: u64,
    /// Bytes written, counting every nested template's output.
    pub max_output: u64,
    /// Nested `include`/`template`/`tpl` calls (Helm stops at 1000; recursion is all a
    /// deeper one could be).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_steps: 10_000_000, max_output: 64 << 20, max_depth: 100 }
    }
}

/// A set of parsed template files and the named templates they define, as Helm loads a
/// chart's `templates/`: every file's `define`s are visible to every file.
#[derive(Debug, Default)]
pub struct Templates {
    /// Name → (file it is in, body). Files are named templates too.
    named: HashMap<String, (Rc<str>, Rc<[Node]>)>,
    files: Vec<String>,
}

impl Templates {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `src` as the file `name` and adds it and its `define`s.
    ///
    /// # Errors
    /// [`TemplateError::Syntax`] naming the file and line.
    pub fn add(&mut self, name: &str, src: &str) -> Result<(), TemplateError> {
        let parsed = parse::parse(name, src)?;
        let file: Rc<str> = name.into();
        for (n, body) in parsed.defines {
            self.named.insert(n, (file.clone(), body.into()));
        }
        self.named.insert(name.to_owned(), (file, parsed.body.into()));
        self.files.push(name.to_owned());
        Ok(())
    }

    /// The files added, in order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Renders the file or named template `name` with `data` as dot and `$`.
    ///
    /// # Errors
    /// Any [`TemplateError`].
    pub fn render(
        &self,
        name: &str,
        data: &Value,
        limits: Limits,
    ) -> Result<String, TemplateError> {
        exec::Exec::new(self, limits).call(name, data, None)
    }

    fn lookup(&self, name: &str) -> Option<(Rc<str>, Rc<[Node]>)> {
        self.named.get(name).cloned()
    }

    /// This set plus `extra` (the templates a `tpl` string defines).
    fn with_extra(&self, extra: HashMap<String, Vec<Node>>) -> Templates {
        let mut named = self.named.clone();
        let file: Rc<str> = "tpl".into();
        for (n, body) in extra {
            named.insert(n, (file.clone(), body.into()));
        }
        Templates { named, files: self.files.clone() }
    }
}

#[cfg(test)]
mod tests;
