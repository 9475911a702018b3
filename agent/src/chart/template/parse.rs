//! Go's `text/template` syntax, the part charts use: text with `{{ }}` actions and their
//! `{{-`/`-}}` whitespace trimming, comments, pipelines, variables, and the control structures
//! `if`/`else if`/`with`/`else with`/`range`/`define`/`template`/`block`/`break`/`continue`.
//!
//! The parser returns a tree of [`Node`]s and the named templates each file defines.

use std::collections::HashMap;
use std::rc::Rc;

use super::TemplateError;

/// How deep parentheses and control structures may nest in one file: the parser recurses,
/// and a template is data.
const MAX_NESTING: usize = 200;

/// One piece of a parsed template.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Text copied to the output.
    Text(Rc<str>),
    /// `{{ pipeline }}`: prints the value unless the pipeline declares a variable.
    Action { line: usize, pipe: Pipeline },
    /// `{{ if }}` and `{{ with }}` (`with` sets dot).
    If { line: usize, with: bool, pipe: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    /// `{{ range }}`.
    Range { line: usize, pipe: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
    /// `{{ template "name" pipeline }}`.
    Template { line: usize, name: String, pipe: Option<Pipeline> },
    /// `{{ break }}`.
    Break,
    /// `{{ continue }}`.
    Continue,
}

/// Commands joined by `|`, with an optional variable declaration or assignment.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    /// Variables declared (`$x :=`, `$i, $v :=` in range) or assigned (`$x =`).
    pub(crate) vars: Vec<String>,
    /// `=` rather than `:=`.
    pub(crate) assign: bool,
    pub(crate) cmds: Vec<Command>,
}

/// One command: a function and its arguments, or a single operand.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub(crate) args: Vec<Operand>,
}

/// An operand of a command.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    /// A function name.
    Func(String),
    /// `.` followed by fields: `.Values.a` is `Field(["Values", "a"])`, `.` is `Field([])`.
    Field(Vec<String>),
    /// `$name` followed by fields.
    Var(String, Vec<String>),
    /// `( pipeline )` followed by fields.
    Sub(Box<Pipeline>, Vec<String>),
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
}

/// A parsed file: its body and the templates it defines.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) body: Vec<Node>,
    pub(crate) defines: HashMap<String, Vec<Node>>,
}

/// Parses `src`, named `name` in messages.
pub(crate) fn parse(name: &str, src: &str) -> Result<Parsed, TemplateError> {
    let items = lex(name, src)?;
    let mut p = Parser { name, items, pos: 0, defines: HashMap::new(), depth: 0, ranges: 0 };
    let (body, stop) = p.block()?;
    match stop {
        Stop::Eof => Ok(Parsed { body, defines: p.defines }),
        Stop::End(line) => Err(p.err(line, "unexpected {{end}}")),
        Stop::Else(line, _) => Err(p.err(line, "unexpected {{else}}")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(String),
    Dot,
    Var(String),
    Str(Rc<str>),
    Int(i64),
    Float(f64),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Whitespace came before it: `.a .b` is two operands, `.a.b` one.
    spaced: bool,
    line: usize,
}

#[derive(Debug)]
enum Item {
    Text(String),
    Action { line: usize, toks: Vec<Token> },
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits `src` into text and actions, applying the trim markers.
fn lex(name: &str, src: &str) -> Result<Vec<Item>, TemplateError> {
    let err = |line: usize, m: String| TemplateError::Syntax {
        template: name.to_owned(),
        line,
        message: m,
    };
    let b = src.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut line = 1;
    let mut trim_next = false;
    loop {
        let open = src[pos..].find("{{").map_or(src.len(), |i| pos + i);
        let left_trim =
            b.get(open + 2) == Some(&b'-') && b.get(open + 3).is_some_and(|&c| is_space(c));
        let mut text = &src[pos..open];
        if trim_next {
            text = text.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
        }
        if left_trim {
            text = text.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_owned()));
        }
        line += src[pos..open].matches('\n').count();
        if open == src.len() {
            return Ok(items);
        }
        let start_line = line;
        let mut i = open + if left_trim { 3 } else { 2 };
        // A comment: `{{/* ... */}}`, possibly with trim markers.
        let after = {
            let mut j = i;
            while left_trim && j < b.len() && is_space(b[j]) {
                j += 1;
            }
            j
        };
        if src[after..].starts_with("/*") {
            let Some(end) = src[after + 2..].find("*/") else {
                return Err(err(start_line, "unclosed comment".into()));
            };
            let mut j = after + 2 + end + 2;
            line += src[i..j].matches('\n').count();
            let mut right = false;
            let ws = j;
            while j < b.len() && is_space(b[j]) {
                j += 1;
            }
            if j > ws && src[j..].starts_with("-}}") {
                right = true;
                j += 3;
            } else if src[ws..].starts_with("}}") {
                j = ws + 2;
            } else {
                return Err(err(line, "comment ends before closing delimiter".into()));
            }
            line += src[ws..j].matches('\n').count();
            trim_next = right;
            pos = j;
            continue;
        }
        let mut toks = Vec::new();
        let mut spaced = true;
        let right_trim;
        loop {
            let Some(&c) = b.get(i) else {
                return Err(err(start_line, "unclosed action".into()));
            };
            if is_space(c) {
                let ws = i;
                while i < b.len() && is_space(b[i]) {
                    i += 1;
                }
                line += src[ws..i].matches('\n').count();
                if src[i..].starts_with("-}}") {
                    right_trim = true;
                    i += 3;
                    break;
                }
                spaced = true;
                continue;
            }
            if src[i..].starts_with("}}") {
                right_trim = false;
                i += 2;
                break;
            }
            let tok_line = line;
            let tok = match c {
                b'(' => {
                    i += 1;
                    Tok::LParen
                }
                b')' => {
                    i += 1;
                    Tok::RParen
                }
                b'|' => {
                    i += 1;
                    Tok::Pipe
                }
                b',' => {
                    i += 1;
                    Tok::Comma
                }
                b':' if b.get(i + 1) == Some(&b'=') => {
                    i += 2;
                    Tok::Declare
                }
                b'=' => {
                    i += 1;
                    Tok::Assign
                }
                b'"' => {
                    let (s, n) = quoted(&src[i..]).map_err(|m| err(line, m))?;
                    i += n;
                    Tok::Str(s.into())
                }
                b'`' => {
                    let Some(end) = src[i + 1..].find('`') else {
                        return Err(err(line, "unterminated raw string".into()));
                    };
                    let s = &src[i + 1..i + 1 + end];
                    line += s.matches('\n').count();
                    i += end + 2;
                    Tok::Str(s.into())
                }
                b'\'' => {
                    let (ch, n) = char_const(&src[i..]).map_err(|m| err(line, m))?;
                    i += n;
                    Tok::Int(i64::from(u32::from(ch)))
                }
                b'$' => {
                    let n = ident_len(&b[i + 1..]);
                    let v = src[i..i + 1 + n].to_owned();
                    i += 1 + n;
                    Tok::Var(v)
                }
                b'.' if b.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') => {
                    let n = ident_len(&b[i + 1..]);
                    let f = src[i + 1..i + 1 + n].to_owned();
                    i += 1 + n;
                    Tok::Field(f)
                }
                b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i += 1;
                    Tok::Dot
                }
                b'0'..=b'9' | b'.' | b'-' | b'+' => {
                    let n = number_len(&b[i..]);
                    if n == 0 {
                        return Err(err(line, format!("unexpected {:?} in action", c as char)));
                    }
                    let t = number(&src[i..i + n]).ok_or_else(|| {
                        err(line, format!("bad number syntax: {:?}", &src[i..i + n]))
                    })?;
                    i += n;
                    t
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let n = ident_len(&b[i..]);
                    let id = src[i..i + n].to_owned();
                    i += n;
                    Tok::Ident(id)
                }
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(err(line, format!("unexpected {ch:?} in action")));
                }
            };
            toks.push(Token { tok, spaced, line: tok_line });
            spaced = false;
        }
        items.push(Item::Action { line: start_line, toks });
        trim_next = right_trim;
        pos = i;
    }
}

fn ident_len(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count()
}

fn number_len(b: &[u8]) -> usize {
    let mut n = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        n = 1;
    }
    if !b.get(n).is_some_and(|c| c.is_ascii_digit() || *c == b'.') {
        return 0;
    }
    while let Some(&c) = b.get(n) {
        let exp_sign = matches!(c, b'+' | b'-') && matches!(b[n - 1], b'e' | b'E' | b'p' | b'P');
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exp_sign {
            n += 1;
        } else {
            break;
        }
    }
    n
}

fn number(s: &str) -> Option<Tok> {
    let clean: String = s.chars().filter(|c| *c != '_').collect();
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = |p: &str, r: u32| {
        digits
            .strip_prefix(p)
            .or_else(|| digits.strip_prefix(&p.to_uppercase()))
            .and_then(|d| i64::from_str_radix(d, r).ok())
    };
    let int = radix("0x", 16).or_else(|| radix("0o", 8)).or_else(|| radix("0b", 2)).or_else(|| {
        if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|c| c.is_ascii_digit())
        {
            i64::from_str_radix(&digits[1..], 8).ok()
        } else {
            digits.parse::<i64>().ok()
        }
    });
    if let Some(i) = int {
        return Some(Tok::Int(if neg { i.checked_neg()? } else { i }));
    }
    if digits.bytes().any(|c| c.is_ascii_alphabetic() && !matches!(c, b'e' | b'E')) {
        return None;
    }
    let f: f64 = digits.parse().ok()?;
    Some(Tok::Float(if neg { -f } else { f }))
}

/// A Go interpreted string literal at the start of `s`: its value and its length in bytes.
fn quoted(s: &str) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => return Err("newline in string".into()),
            '\\' => {
                let Some((_, e)) = it.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut v = 0u32;
                        for _ in 0..n {
                            let Some((_, h)) = it.next() else { return Err("bad escape".into()) };
                            let d = h.to_digit(16).ok_or("bad escape")?;
                            v = v * 16 + d;
                        }
                        out.push(char::from_u32(v).ok_or("bad escape")?);
                    }
                    _ => return Err(format!("unknown escape sequence \\{e}")),
                }
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

fn char_const(s: &str) -> Result<(char, usize), String> {
    let mut it = s.char_indices().skip(1);
    let (_, c) = it.next().ok_or("unterminated character constant")?;
    let (c, next) = if c == '\\' {
        let (v, n) = quoted(&format!("\"{}\"", &s[1..s[1..].find('\'').map_or(1, |i| i + 1)]))?;
        let mut chars = v.chars();
        let ch = chars.next().ok_or("empty character constant")?;
        (ch, n - 1)
    } else {
        (c, 1 + c.len_utf8())
    };
    if s[next..].starts_with('\'') {
        Ok((c, next + 1))
    } else {
        Err("bad character constant".into())
    }
}

enum Stop {
    Eof,
    End(usize),
    Else(usize, Vec<Token>),
}

struct Parser<'a> {
    name: &'a str,
    items: Vec<Item>,
    pos: usize,
    defines: HashMap<String, Vec<Node>>,
    depth: usize,
    ranges: usize,
}

impl Parser<'_> {
    fn err(&self, line: usize, m: impl Into<String>) -> TemplateError {
        TemplateError::Syntax { template: self.name.to_owned(), line, message: m.into() }
    }

    fn block(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while self.pos < self.items.len() {
            let item = std::mem::replace(&mut self.items[self.pos], Item::Text(String::new()));
            self.pos += 1;
            let (line, toks) = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t.into()));
                    continue;
                }
                Item::Action { line, toks } => (line, toks),
            };
            let kw = match toks.first() {
                Some(Token { tok: Tok::Ident(k), .. }) => k.as_str(),
                None => return Err(self.err(line, "missing value for command")),
                _ => "",
            };
            match kw {
                "end" => {
                    self.expect_empty(line, &toks[1..], "end")?;
                    return Ok((nodes, Stop::End(line)));
                }
                "else" => return Ok((nodes, Stop::Else(line, toks[1..].to_vec()))),
                "if" | "with" | "range" => {
                    let kw = kw.to_owned();
                    nodes.push(self.control(&kw, line, &toks[1..])?);
                }
                "define" | "block" => {
                    let name = self.template_name(line, toks.get(1), kw)?;
                    let pipe = if kw == "block" {
                        Some(self.pipeline(line, &toks[2..], false)?)
                    } else {
                        self.expect_empty(line, &toks[2..], "define")?;
                        None
                    };
                    let body = self.nested(line, |p| p.block())?;
                    match body.1 {
                        Stop::End(_) => {}
                        _ => {
                            return Err(
                                self.err(line, format!("{{{{{kw} {name:?}}}}} has no {{{{end}}}}"))
                            )
                        }
                    }
                    self.defines.insert(name.clone(), body.0);
                    if kw == "block" {
                        nodes.push(Node::Template { line, name, pipe });
                    }
                }
                "template" => {
                    let name = self.template_name(line, toks.get(1), kw)?;
                    let pipe = if toks.len() > 2 {
                        Some(self.pipeline(line, &toks[2..], false)?)
                    } else {
                        None
                    };
                    nodes.push(Node::Template { line, name, pipe });
                }
                "break" | "continue" => {
                    self.expect_empty(line, &toks[1..], kw)?;
                    if self.ranges == 0 {
                        return Err(self.err(line, format!("{{{{{kw}}}}} outside {{{{range}}}}")));
                    }
                    nodes.push(if kw == "break" { Node::Break } else { Node::Continue });
                }
                _ => nodes.push(Node::Action { line, pipe: self.pipeline(line, &toks, false)? }),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    fn nested<T>(
        &mut self,
        line: usize,
        f: impl FnOnce(&mut Self) -> Result<T, TemplateError>,
    ) -> Result<T, TemplateError> {
        if self.depth >= MAX_NESTING {
            return Err(self.err(line, "structures nest too deep"));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// `if`, `with` or `range` whose keyword has been read; consumes up to its `{{end}}`.
    fn control(&mut self, kw: &str, line: usize, toks: &[Token]) -> Result<Node, TemplateError> {
        let range = kw == "range";
        let pipe = self.pipeline(line, toks, range)?;
        if range {
            self.ranges += 1;
        }
        let body = self.nested(line, |p| p.block());
        if range {
            self.ranges -= 1;
        }
        let (body, stop) = body?;
        let otherwise = match stop {
            Stop::End(_) => Vec::new(),
            Stop::Eof => return Err(self.err(line, format!("{{{{{kw}}}}} has no {{{{end}}}}"))),
            Stop::Else(eline, rest) => match rest.first() {
                None => {
                    let (o, stop) = self.nested(eline, |p| p.block())?;
                    match stop {
                        Stop::End(_) => o,
                        Stop::Else(l, _) => return Err(self.err(l, "{{else}} after {{else}}")),
                        Stop::Eof => {
                            return Err(self.err(line, format!("{{{{{kw}}}}} has no {{{{end}}}}")))
                        }
                    }
                }
                Some(Token { tok: Tok::Ident(k), .. }) if (k == "if" || k == "with") && !range => {
                    let k = k.clone();
                    // `{{else if x}}` is an `if` inside the else branch sharing the same end.
                    vec![self.nested(eline, |p| p.control(&k, eline, &rest[1..]))?]
                }
                Some(_) => return Err(self.err(eline, "unexpected tokens after {{else}}")),
            },
        };
        Ok(match kw {
            "range" => Node::Range { line, pipe, body, otherwise },
            _ => Node::If { line, with: kw == "with", pipe, then: body, otherwise },
        })
    }

    fn template_name(
        &self,
        line: usize,
        t: Option<&Token>,
        kw: &str,
    ) -> Result<String, TemplateError> {
        match t {
            Some(Token { tok: Tok::Str(s), .. }) => Ok(s.to_string()),
            _ => Err(self.err(line, format!("{{{{{kw}}}}} needs a quoted template name"))),
        }
    }

    fn expect_empty(&self, line: usize, toks: &[Token], kw: &str) -> Result<(), TemplateError> {
        if toks.is_empty() {
            Ok(())
        } else {
            Err(self.err(line, format!("unexpected tokens in {{{{{kw}}}}}")))
        }
    }

    fn pipeline(
        &mut self,
        line: usize,
        toks: &[Token],
        range: bool,
    ) -> Result<Pipeline, TemplateError> {
        let mut vars = Vec::new();
        let mut assign = false;
        let mut rest = toks;
        let is_var = |t: Option<&Token>| matches!(t, Some(Token { tok: Tok::Var(_), .. }));
        if is_var(toks.first()) {
            let t1 = toks.get(1).map(|t| &t.tok);
            match t1 {
                Some(Tok::Declare | Tok::Assign) => {
                    vars.push(var_name(&toks[0]));
                    assign = t1 == Some(&Tok::Assign);
                    rest = &toks[2..];
                }
                Some(Tok::Comma) if range && is_var(toks.get(2)) => {
                    match toks.get(3).map(|t| &t.tok) {
                        Some(Tok::Declare | Tok::Assign) => {
                            assign = toks[3].tok == Tok::Assign;
                            vars.push(var_name(&toks[0]));
                            vars.push(var_name(&toks[2]));
                            rest = &toks[4..];
                        }
                        _ => return Err(self.err(line, "expected := after the range variables")),
                    }
                }
                _ => {}
            }
        }
        if vars.iter().any(|v| v == "$") {
            return Err(self.err(line, "cannot declare or assign $"));
        }
        let mut cmds = Vec::new();
        let mut start = 0;
        let mut depth = 0usize;
        for (i, t) in rest.iter().enumerate() {
            match t.tok {
                Tok::LParen => depth += 1,
                Tok::RParen => depth = depth.saturating_sub(1),
                Tok::Pipe if depth == 0 => {
                    cmds.push(self.command(line, &rest[start..i])?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        cmds.push(self.command(line, &rest[start..])?);
        Ok(Pipeline { vars, assign, cmds })
    }

    fn command(&mut self, line: usize, toks: &[Token]) -> Result<Command, TemplateError> {
        if toks.is_empty() {
            return Err(self.err(line, "missing value for command"));
        }
        let mut args = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let t = &toks[i];
            let tl = t.line;
            i += 1;
            let mut op = match &t.tok {
                Tok::Ident(id) => match id.as_str() {
                    "true" => Operand::Bool(true),
                    "false" => Operand::Bool(false),
                    "nil" => Operand::Nil,
                    "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block"
                    | "break" | "continue" => {
                        return Err(self.err(tl, format!("unexpected keyword {id} in command")))
                    }
                    _ if super::funcs::known(id) => Operand::Func(id.clone()),
                    _ => return Err(self.err(tl, format!("function {id:?} not defined"))),
                },
                Tok::Field(f) => Operand::Field(vec![f.clone()]),
                Tok::Dot => Operand::Field(Vec::new()),
                Tok::Var(v) => Operand::Var(v.clone(), Vec::new()),
                Tok::Str(s) => Operand::Str(s.clone()),
                Tok::Int(n) => Operand::Int(*n),
                Tok::Float(f) => Operand::Float(*f),
                Tok::LParen => {
                    let mut depth = 1usize;
                    let start = i;
                    while i < toks.len() {
                        match toks[i].tok {
                            Tok::LParen => depth += 1,
                            Tok::RParen => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    if depth != 0 {
                        return Err(self.err(tl, "unclosed left paren"));
                    }
                    let inner = &toks[start..i];
                    i += 1;
                    let p = self.nested(tl, |p| p.pipeline(tl, inner, false))?;
                    if !p.vars.is_empty() {
                        return Err(self.err(tl, "a declaration inside parentheses"));
                    }
                    Operand::Sub(Box::new(p), Vec::new())
                }
                other => {
                    return Err(self.err(tl, format!("unexpected {} in command", describe(other))))
                }
            };
            // Fields written right after an operand, without a space, select from it.
            while let Some(Token { tok: Tok::Field(f), spaced: false, .. }) = toks.get(i) {
                match &mut op {
                    Operand::Field(fs) | Operand::Var(_, fs) | Operand::Sub(_, fs) => {
                        fs.push(f.clone())
                    }
                    _ => return Err(self.err(tl, format!("unexpected .{f} after a literal"))),
                }
                i += 1;
            }
            args.push(op);
        }
        Ok(Command { args })
    }
}

fn var_name(t: &Token) -> String {
    match &t.tok {
        Tok::Var(v) => v.clone(),
        _ => String::new(),
    }
}

fn describe(t: &Tok) -> &'static str {
    match t {
        Tok::RParen => "right paren",
        Tok::Pipe => "|",
        Tok::Declare => ":=",
        Tok::Assign => "=",
        Tok::Comma => "comma",
        _ => "token",
    }
}
