//! The engine against Go's and Helm's behaviour, construct by construct; then random
//! templates and values, which must never panic.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn values(yaml: &str) -> Value {
    Value::from_yaml(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
}

/// Renders `src` (with the named templates of `helpers`) over the YAML data `data`.
fn render_with(helpers: &str, src: &str, data: &str) -> Result<String, TemplateError> {
    let mut t = Templates::new();
    t.add("_helpers.tpl", helpers)?;
    t.add("t.yaml", src)?;
    t.render("t.yaml", &values(data), Limits::default())
}

fn render(src: &str, data: &str) -> String {
    render_with("", src, data).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn error(src: &str, data: &str) -> String {
    match render_with("", src, data) {
        Ok(out) => panic!("{src:?} rendered {out:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn text_actions_and_printing() {
    assert_eq!(render("a {{ .x }} b", "x: 1"), "a 1 b");
    assert_eq!(
        render("{{ .m }}|{{ .l }}|{{ .missing }}|{{ .f }}", "m: {b: 2, a: 1}\nl: [x, 2]\nf: 2.5"),
        "map[a:1 b:2]|[x 2]||2.5"
    );
    assert_eq!(render("{{ \"q\\\"\\n\" }}{{ `raw\\n` }}{{ 'a' }}{{ 0x10 }}{{ -3 }}{{ 1.5 }}{{ true }}{{ nil | default 7 }}", "{}"), "q\"\nraw\\n9716-31.5true7");
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(render("a  \n {{- .x -}} \n  b", "x: 1"), "a1b");
    assert_eq!(render("a {{- /* gone */}} b", "{}"), "a b");
    assert_eq!(render("a {{- /* gone */ -}} \n b", "{}"), "ab");
    assert_eq!(render("{{/* multi\nline */}}x", "{}"), "x");
    // `{{-3}}` is the number -3, not a trim marker.
    assert_eq!(render("a {{-3}}", "{}"), "a -3");
}

#[test]
fn if_else_if_with_and_else_with() {
    let t = "{{ if eq .n 1 }}one{{ else if eq .n 2 }}two{{ else }}many{{ end }}";
    assert_eq!(render(t, "n: 1"), "one");
    assert_eq!(render(t, "n: 2"), "two");
    assert_eq!(render(t, "n: 3"), "many");
    assert_eq!(render("{{ with .a }}{{ .b }}{{ else }}none{{ end }}", "a: {b: x}"), "x");
    assert_eq!(
        render("{{ with .a }}{{ .b }}{{ else with .c }}c={{ . }}{{ end }}", "a: {}\nc: 5"),
        "c=5"
    );
    // Go's truth: empty lists, maps, strings, 0 and false are false.
    assert_eq!(
        render(
            "{{ if .l }}y{{ end }}{{ if .m }}y{{ end }}{{ if .s }}y{{ end }}{{ if .z }}y{{ end }}",
            "l: []\nm: {}\ns: ''\nz: 0"
        ),
        ""
    );
    assert_eq!(
        render(
            "{{ if and .a .b }}x{{ end }}{{ if or .c .a }}y{{ end }}{{ if not .c }}z{{ end }}",
            "a: 1\nb: s\nc: false"
        ),
        "xyz"
    );
}

#[test]
fn range_over_lists_maps_sorted_ints_and_nothing() {
    assert_eq!(
        render("{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}", "l: [a, b]"),
        "0=a;1=b;"
    );
    // Maps range in key order, as Go's do.
    assert_eq!(
        render("{{ range $k, $v := .m }}{{ $k }}{{ $v }}{{ end }}", "m: {z: 1, a: 2, m: 3}"),
        "a2m3z1"
    );
    assert_eq!(render("{{ range .m }}{{ . }}{{ end }}", "m: {b: 2, a: 1}"), "12");
    assert_eq!(render("{{ range 3 }}{{ . }}{{ end }}", "{}"), "012");
    assert_eq!(render("{{ range .l }}x{{ else }}empty{{ end }}", "l: []"), "empty");
    assert_eq!(render("{{ range .missing }}x{{ else }}empty{{ end }}", "{}"), "empty");
    assert_eq!(render("{{ range .l }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}", "l: [1, 2, 3, 4, 5]"), "13");
    assert!(error("{{ range .s }}{{ end }}", "s: str").contains("range can't iterate over str"));
}

#[test]
fn variables_scope_and_assignment() {
    // Declared in a block, gone at its end; `=` changes the outer one.
    assert_eq!(
        render("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}", "{}"),
        "21"
    );
    assert_eq!(render("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "{}"), "2");
    assert_eq!(
        render("{{ $n := 0 }}{{ range .l }}{{ $n = add $n . }}{{ end }}{{ $n }}", "l: [1, 2, 3]"),
        "6"
    );
    // `$` is the data the template started with, inside `with` and `range` too.
    assert_eq!(render("{{ range .l }}{{ $.top }}{{ end }}", "l: [1, 2]\ntop: t"), "tt");
    assert!(error("{{ $y }}", "{}").contains("undefined variable: $y"));
    assert!(
        error("{{ if true }}{{ $z := 1 }}{{ end }}{{ $z }}", "{}").contains("undefined variable")
    );
}

#[test]
fn define_template_include_with_dict_and_nindent() {
    let helpers = r#"{{- define "labels" -}}
app: {{ .name }}
tier: {{ .root.tier }}
{{- end -}}
{{- define "self" }}{{ include "self" . }}{{ end -}}"#;
    let t = "metadata:\n  labels:\n    {{- include \"labels\" (dict \"name\" \"x\" \"root\" .) | nindent 4 }}\nend";
    assert_eq!(
        render_with(helpers, t, "tier: web").unwrap(),
        "metadata:\n  labels:\n    app: x\n    tier: web\nend"
    );
    assert_eq!(
        render_with(
            helpers,
            "{{ template \"labels\" (dict \"name\" 1 \"root\" (dict \"tier\" 2)) }}",
            "{}"
        )
        .unwrap(),
        "app: 1\ntier: 2"
    );
    assert_eq!(render("{{ \"a\\nb\" | indent 2 }}", "{}"), "  a\n  b");
    assert_eq!(render("{{ block \"b\" . }}default {{ .x }}{{ end }}", "x: 1"), "default 1");
    // Recursion ends at the depth limit with an error, not a stack overflow.
    let e = render_with(helpers, "{{ include \"self\" . }}", "{}").unwrap_err();
    assert!(matches!(e, TemplateError::Limit { what: "nested template calls", .. }), "{e}");
    let e = render_with(helpers, "{{ include \"nope\" . }}", "{}").unwrap_err().to_string();
    assert!(e.contains("t.yaml:1") && e.contains("no template \"nope\""), "{e}");
}

#[test]
fn sprig_string_and_number_functions() {
    assert_eq!(
        render(
            "{{ printf \"%s-%d-%v-%q-%05d-%-3s|%t\" \"a\" 7 .l \"q\" 42 \"x\" true }}",
            "l: [1]"
        ),
        "a-7-[1]-\"q\"-00042-x  |true"
    );
    assert_eq!(render("{{ printf \"%d %s\" 1 }}", "{}"), "1 %!s(MISSING)");
    assert_eq!(render("{{ printf \"%d\" \"x\" }}", "{}"), "%!d(string=x)");
    assert_eq!(
        render(
            "{{ \"abcdef-\" | trunc 4 }}|{{ \"ab-\" | trimSuffix \"-\" }}|{{ trunc -2 \"abc\" }}",
            "{}"
        ),
        "abcd|ab|bc"
    );
    assert_eq!(
        render(
            "{{ quote \"a\" 1 nil }}|{{ squote \"b\" }}|{{ \"a+b\" | replace \"+\" \"_\" }}",
            "{}"
        ),
        "\"a\" \"1\"|'b'|a_b"
    );
    assert_eq!(render("{{ contains \"b\" \"abc\" }}{{ hasPrefix \"a\" \"abc\" }}{{ upper \"x\" }}{{ lower \"Y\" }}", "{}"), "truetrueXy");
    assert_eq!(render("{{ add 1 2 3 }} {{ add \"4\" 1.9 }} {{ sub 5 2 }} {{ mul 2 3 }} {{ div 7 2 }} {{ mod 7 2 }} {{ max 1 5 2 }} {{ int \"12\" }}", "{}"), "6 5 3 6 3 1 5 12");
    assert!(error("{{ div 1 0 }}", "{}").contains("integer divide by zero"));
    assert_eq!(
        render(
            "{{ default \"d\" .x }}|{{ default \"d\" .y }}|{{ .z | default \"d\" }}",
            "x: ''\ny: v"
        ),
        "d|v|d"
    );
    assert_eq!(
        render(
            "{{ empty .a }}{{ empty .b }}{{ coalesce .a .b }}{{ ternary 1 2 true }}",
            "a: ''\nb: x"
        ),
        "truefalsex1"
    );
    assert_eq!(render("{{ join \",\" (list 1 \"a\") }}|{{ splitList \",\" \"a,b\" }}|{{ kindOf .m }}|{{ typeOf 1 }}", "m: {}"), "1,a|[a b]|map|int64");
}

#[test]
fn lists_and_dicts() {
    assert_eq!(render("{{ $l := list 1 }}{{ $l = append $l 2 }}{{ concat $l (list 3) }}{{ first $l }}{{ last $l }}{{ len $l }}", "{}"), "[1 2 3]122");
    assert_eq!(render("{{ has 2 (list 1 2) }}{{ uniq (list 1 1 2) }}{{ without (list 1 2) 1 }}{{ until 3 }}{{ sortAlpha (list \"b\" \"a\") }}", "{}"), "true[1 2][2][0 1 2][a b]");
    // `set` changes the map itself: every name for it sees the change, as in Go.
    assert_eq!(
        render(
            "{{ $d := dict \"a\" 1 }}{{ $l := list $d }}{{ $_ := set $d \"b\" 2 }}{{ index $l 0 }}",
            "{}"
        ),
        "map[a:1 b:2]"
    );
    assert_eq!(render("{{ hasKey .m \"a\" }}{{ keys .m }}{{ get .m \"a\" }}{{ index .m \"a\" }}{{ pick .m \"a\" }}{{ omit .m \"a\" }}", "m: {a: 1, b: 2}"), "true[a b]11map[a:1]map[b:2]");
    assert_eq!(
        render(
            "{{ dig \"a\" \"b\" \"none\" .m }}{{ dig \"a\" \"x\" \"none\" .m }}",
            "m: {a: {b: 1}}"
        ),
        "1none"
    );
    // merge fills in what is missing or empty; mergeOverwrite lets non-empty values win.
    assert_eq!(
        render("{{ merge (dict \"a\" 1 \"e\" \"\" \"n\" (dict \"x\" 1)) (dict \"a\" 2 \"b\" 3 \"e\" \"f\" \"n\" (dict \"x\" 2 \"y\" 3)) }}", "{}"),
        "map[a:1 b:3 e:f n:map[x:1 y:3]]"
    );
    assert_eq!(
        render("{{ mergeOverwrite (dict \"a\" 1 \"n\" (dict \"x\" 1)) (dict \"a\" 2 \"z\" \"\" \"n\" (dict \"y\" 3)) }}", "{}"),
        "map[a:2 n:map[x:1 y:3] z:]"
    );
    assert!(error("{{ index .l 5 }}", "l: [1]").contains("index out of range"));
    // Maps that hold each other merge without tripping over a borrowed map.
    assert_eq!(
        render("{{ $b := dict \"x\" (dict \"y\" 1) }}{{ $a := dict \"x\" $b }}{{ $_ := merge $a $b }}{{ $_ := mergeOverwrite $a $b }}{{ $a.x.y }}", "{}"),
        "1"
    );
}

#[test]
fn yaml_in_and_out() {
    assert_eq!(
        render("{{ toYaml .m }}", "m: {b: [1, {c: d}], a: 'true'}"),
        "a: 'true'\nb:\n- 1\n- c: d"
    );
    assert_eq!(
        render("{{ toYaml .e }}|{{ toYaml .l }}|{{ toYaml .n }}", "e: {}\nl: []\nn: null"),
        "{}|[]|null"
    );
    assert_eq!(render("{{ (\"a: 1\\nb: [x]\" | fromYaml).b }}", "{}"), "[x]");
    assert!(render("{{ (\"a: [\" | fromYaml).Error }}", "{}").contains("while parsing"));
    assert_eq!(render("{{ toJson .m }}", "m: {a: [1, x]}"), "{\"a\":[1,\"x\"]}");
    assert_eq!(
        render("{{ fromJsonArray \"[1, 2]\" }}|{{ fromJson \"{\\\"a\\\": 1}\" }}", "{}"),
        "[1 2]|map[a:1]"
    );
    // A multi-line string survives toYaml and nindent as YAML.
    let out = render("x:\n  {{- toYaml .m | nindent 2 }}", "m: {s: \"l1\\nl2\"}");
    let back: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(back["x"]["s"].as_str(), Some("l1\nl2"));
}

#[test]
fn tpl_renders_a_string_as_a_template() {
    assert_eq!(render("{{ tpl .t . }}", "t: 'hi {{ .n }}'\nn: 5"), "hi 5");
}

#[test]
fn errors_name_the_template_and_line() {
    let e = error("line1\n{{ .a.b.c }}", "a: {}");
    assert_eq!(e, "t.yaml:2: nil pointer evaluating interface {}.c");
    assert_eq!(error("\n\n{{ required \"x is needed\" .x }}", "{}"), "t.yaml:3: x is needed");
    assert!(matches!(
        render_with("", "{{ fail \"no\" }}", "{}"),
        Err(TemplateError::Fail { line: 1, .. })
    ));
    for (src, want) in [
        ("{{ nosuch 1 }}", "t.yaml:1: function \"nosuch\" not defined"),
        ("a\n{{ .x", "t.yaml:2: unclosed action"),
        ("{{ if .x }}", "t.yaml:1: {{if}} has no {{end}}"),
        ("{{ end }}", "t.yaml:1: unexpected {{end}}"),
        ("{{ break }}", "t.yaml:1: {{break}} outside {{range}}"),
        ("{{ (1 }}", "t.yaml:1: unclosed left paren"),
        ("{{ \"x }}", "t.yaml:1: unterminated quoted string"),
        ("{{ \"x\ny\" }}", "t.yaml:1: newline in string"),
        ("{{ 1 2 }}", "t.yaml:1: can't give argument to non-function"),
        ("{{ .x | .y }}", "t.yaml:1: can't give argument to non-function"),
        ("{{ 1.2.3 }}", "t.yaml:1: bad number syntax: \"1.2.3\""),
        ("{{ }}", "t.yaml:1: missing value for command"),
    ] {
        let got = render_with("", src, "x: 1\ny: 2").map_err(|e| e.to_string());
        assert!(got.as_ref().is_err_and(|e| e.starts_with(want)), "{src:?}: {got:?}");
    }
}

#[test]
fn limits_end_runaway_templates() {
    let mut t = Templates::new();
    // A count is visited, never made into a list: this ends at the step limit, not in OOM.
    t.add("t", "{{ range 9223372036854775807 }}x{{ end }}").unwrap();
    let e =
        t.render("t", &Value::Nil, Limits { max_steps: 10_000, ..Limits::default() }).unwrap_err();
    assert!(matches!(e, TemplateError::Limit { .. }), "{e}");
    let mut t = Templates::new();
    t.add("t", "{{ range 1000 }}{{ repeat 1000 \"x\" }}{{ end }}").unwrap();
    let e = t
        .render("t", &Value::Nil, Limits { max_output: 100_000, ..Limits::default() })
        .unwrap_err();
    assert!(matches!(e, TemplateError::Limit { what: "output bytes", .. }), "{e}");
    assert!(error("{{ until 100000000 }}", "{}").contains("too long"));
    assert!(error("{{ repeat 100000000 \"xy\" }}", "{}").contains("too long"));
    // A map that contains itself cannot be printed or turned into YAML, and says so.
    assert!(error("{{ $d := dict }}{{ $_ := set $d \"d\" $d }}{{ toYaml $d }}", "{}")
        .contains("nests deeper"));
}

#[test]
fn nesting_in_a_template_is_bounded() {
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(50), ")".repeat(50));
    assert_eq!(render(&deep, "{}"), "1");
    let src = "{{ if true }}".repeat(1000) + &"{{ end }}".repeat(1000);
    assert!(render_with("", &src, "{}").unwrap_err().to_string().contains("nest too deep"));
    let parens = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
    assert!(render_with("", &parens, "{}").is_err());
}

fn arb_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z0-9 .{}$-]{0,8}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Pieces templates are made of, so random ones often parse and run.
fn arb_template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{ ".to_owned()),
        Just("{{- ".to_owned()),
        Just(" }}".to_owned()),
        Just(" -}}".to_owned()),
        Just("{{ end }}".to_owned()),
        Just("{{ else }}".to_owned()),
        prop::sample::select(vec![
            "if",
            "range",
            "with",
            "$x :=",
            "$x =",
            "$x",
            "$",
            ".",
            ".a",
            ".b.c",
            "|",
            "(",
            ")",
            "include",
            "\"t\"",
            "define",
            "template",
            "dict",
            "list",
            "toYaml",
            "nindent",
            "2",
            "-1",
            "printf",
            "\"%s %d %v\"",
            "set",
            "merge",
            "default",
            "fromYaml",
            "trunc",
            "index",
            "len",
            "add",
            "until",
            "repeat",
            "required",
            "fail",
            "tpl",
            "quote",
            "`raw`",
            "'c'",
            "nil",
            "true",
            "and",
            "or",
            "not",
            "eq",
            "break",
            "continue",
            "/*",
            "*/",
            "\n",
            "text ",
        ])
        .prop_map(|s| format!(" {s} ")),
        "[ -~]{0,3}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Well-formed templates: nested control structures around expressions that run, so the
/// evaluator (not only the parser) meets random data.
fn arb_structured() -> impl Strategy<Value = String> {
    let expr = prop::sample::select(vec![
        ".",
        ".a",
        ".b.c",
        "$",
        "$x",
        "list 1 . 2",
        "dict \"a\" . \"b\" $",
        "until 3",
        "fromYaml \"a: [1]\"",
        "toYaml .",
        "printf \"%v %d %s\" . . .",
        "default 1 .a",
        "index . \"a\"",
        "len .",
        "merge (dict) . .",
        "mergeOverwrite (dict \"a\" 1) .",
        "keys .",
        "tpl \"{{ . }}\" .",
        "include \"t\" .",
        "set $x \"k\" .",
        "append (list) .",
        "concat (list 1) (list .)",
        "toJson .",
        "quote .",
        "trunc 3 (toString .)",
        "add . 1",
        "eq . 1",
        "and . $x",
        "or .a .",
        "not .",
        "empty .",
        "nindent 2 (toYaml .)",
        "required \"need\" .",
        "kindOf .",
        "hasKey . \"a\"",
        "get . \"a\"",
        "first .",
        "rest .",
    ]);
    let action = expr.clone().prop_map(|e| format!("{{{{ {e} }}}}"));
    let assign = expr.clone().prop_map(|e| format!("{{{{- $x = {e} -}}}}"));
    let leaf = prop_oneof![action, assign, Just("\n  text: ".to_owned())];
    leaf.prop_recursive(4, 40, 5, move |inner| {
        let body = prop::collection::vec(inner, 0..5).prop_map(|v| v.concat());
        (
            prop::sample::select(vec!["if", "with", "range", "range $i, $v :="]),
            expr.clone(),
            body.clone(),
            body,
        )
            .prop_map(|(kw, e, a, b)| {
                let other = if kw.starts_with("range") {
                    String::new()
                } else {
                    format!("{{{{ else }}}}{b}")
                };
                format!("{{{{ {kw} {e} }}}}{a}{other}{{{{ end }}}}")
            })
    })
    .prop_map(|body| format!("{{{{ $x := dict }}}}{body}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_well_formed_templates_parse_and_never_panic(src in arb_structured(), data in arb_value()) {
        let mut t = Templates::new();
        t.add("t", &src).unwrap();
        t.add("h", "{{ define \"t\" }}{{ toYaml . }}{{ end }}").unwrap();
        let data = Value::from_json(&data).unwrap();
        let limits = Limits { max_steps: 50_000, max_output: 1 << 20, max_depth: 20 };
        let _ = t.render("t", &data, limits);
    }

    #[test]
    fn random_templates_and_values_never_panic(src in arb_template(), data in arb_value()) {
        let mut t = Templates::new();
        let data = Value::from_json(&data).unwrap();
        let limits = Limits { max_steps: 20_000, max_output: 1 << 20, max_depth: 20 };
        if t.add("t", &src).is_ok() {
            let _ = t.render("t", &data, limits);
        }
        // Through define/include too: the text as a named template included by another.
        let mut t = Templates::new();
        if t.add("h", &format!("{{{{ define \"t\" }}}}{src}{{{{ end }}}}")).is_ok()
            && t.add("m", "{{ include \"t\" . }}{{ template \"t\" .a }}").is_ok()
        {
            let _ = t.render("m", &data, limits);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_parser(src in "\\PC{0,64}") {
        let mut t = Templates::new();
        let _ = t.add("t", &src);
    }
}

#[test]
fn values_of_every_shape_convert_and_print() {
    let v =
        Value::map(BTreeMap::from([("k".to_owned(), Value::list(vec![Value::Float(f64::NAN)]))]));
    assert_eq!(v.to_go_string().unwrap(), "map[k:[NaN]]");
    assert_eq!(v.to_json().unwrap(), serde_json::json!({"k": [null]}));
}
