//! Architecture guard for `src/`: owns the crate's layer table (which top-level module may
//! import which), the source scanner that finds references between top-level modules, and
//! the per-file line limit. It reads source text only, so it needs no dependency and sees
//! `#[cfg(test)]` code too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom-up layer ranks of the top-level modules. A module may import only modules of a
/// strictly lower rank (or itself), so modules sharing a rank are siblings that must talk
/// through a lower layer; that keeps the feature modules (rank 6) independently removable.
const LAYERS: &[(&str, u32)] = &[
    ("util", 0),
    ("protocol", 1),
    ("media", 2),
    ("tls", 3),
    ("net", 3),
    ("fanout", 4),
    ("shard", 5),
    ("auth", 6),
    ("record", 6),
    ("relay", 6),
    ("hls", 6),
    ("httpflv", 6),
    ("storage", 6),
    ("channel", 6),
    ("control", 7),
    ("web", 7),
    ("config", 8),
    ("main", 9),
];

const MAX_LINES: usize = 600;

/// The protocol codecs follow the spec section by section and keep their exhaustive tests
/// next to them; splitting them would scatter one state machine over several files.
const LINE_LIMIT_EXEMPT: &[&str] = &[
    "src/protocol/chunk.rs",
    "src/protocol/amf.rs",
    "src/protocol/handshake.rs",
    "src/protocol/session.rs",
    "src/protocol/session/tests.rs",
];

struct SourceFile {
    /// Relative to the manifest directory with `/` separators, as printed in failures.
    rel: String,
    text: String,
}

fn source_files() -> Vec<SourceFile> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    collect_rs(&root.join("src"), &mut paths);
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no .rs files found under {}/src",
        root.display()
    );
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            SourceFile { rel, text }
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Components of `rel` below `src/`, e.g. `["shard", "conn", "reader.rs"]`.
fn src_components(rel: &str) -> Vec<&str> {
    rel.strip_prefix("src/")
        .expect("source paths start with src/")
        .split('/')
        .collect()
}

/// The top-level module a file belongs to; `None` for `src/lib.rs`, which only declares
/// modules and so has no layer of its own.
fn owning_module(rel: &str) -> Option<String> {
    let first = src_components(rel)[0];
    match first {
        "lib.rs" => None,
        _ => Some(first.trim_end_matches(".rs").to_string()),
    }
}

/// The module path the file's items live in, which is where `super::` starts climbing.
/// Crate roots (`lib.rs`, `main.rs`) are the root itself.
fn file_module_path(rel: &str) -> Vec<String> {
    let comps = src_components(rel);
    if comps == ["lib.rs"] || comps == ["main.rs"] {
        return Vec::new();
    }
    let (last, dirs) = comps.split_last().unwrap();
    let mut path: Vec<String> = dirs.iter().map(|s| s.to_string()).collect();
    if *last != "mod.rs" {
        path.push(last.trim_end_matches(".rs").to_string());
    }
    path
}

/// Blanks out comments and string/char literals so that paths inside them are never seen as
/// references. Every newline is kept, so line numbers stay those of the original source.
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    // Newlines survive blanking so that later tokens keep their line numbers.
    let blank = |ch: char, out: &mut String| out.push(if ch == '\n' { '\n' } else { ' ' });
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            // Rust block comments nest, unlike C's.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(c[i], &mut out);
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_len(&c, i).filter(|_| !prev_ident || c[i - 1] == 'b') {
            for &ch in &c[i..i + len] {
                blank(ch, &mut out);
            }
            i += len;
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    blank(c[i], &mut out);
                    i += 1;
                }
                blank(c[i], &mut out);
                i += 1;
            }
            if i < c.len() {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '\'' {
            // A quote opens a char literal only if it closes right after one (possibly
            // escaped) char; otherwise it is a lifetime or label and is kept as code.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 3..c.len().min(i + 16)).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for &ch in &c[i..=end] {
                        blank(ch, &mut out);
                    }
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Length of a raw string literal (`r"…"`, `r#"…"#`, …) starting at `i`, if one does.
fn raw_string_len(c: &[char], i: usize) -> Option<usize> {
    if c[i] != 'r' {
        return None;
    }
    let mut j = i + 1;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    let hashes = j - i - 1;
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes - i);
        }
        j += 1;
    }
    Some(c.len() - i)
}

#[derive(Debug, Clone)]
struct Tok {
    text: String,
    line: usize,
}

impl Tok {
    fn is_ident(&self) -> bool {
        self.text
            .chars()
            .next()
            .is_some_and(|ch| ch.is_alphabetic() || ch == '_')
    }
}

/// Identifiers, `::` and single-char punctuation of code that has already been stripped.
fn tokenize(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            // `r#use` is an identifier named like a keyword, not the keyword.
            if c[start..i] == ['r'] && c.get(i) == Some(&'#') {
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
            let text: String = c[start..i].iter().collect();
            // Numbers such as `1u8` must not yield the identifier `u8`.
            let text = if ch.is_ascii_digit() {
                "0".to_string()
            } else {
                text
            };
            toks.push(Tok { text, line });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            toks.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    toks
}

/// One path segment and the line it is written on.
type Segment = (String, usize);

/// Parses the use tree starting at `pos` under `prefix`, pushing every leaf path to `out`.
/// Returns the position after the tree. Malformed input ends the tree instead of looping.
fn parse_use_tree(
    toks: &[Tok],
    mut pos: usize,
    prefix: Vec<Segment>,
    out: &mut Vec<Vec<Segment>>,
) -> usize {
    let mut path = prefix;
    if toks.get(pos).is_some_and(|t| t.text == "::") {
        // A leading `::` names an external crate.
        path.push(("::".into(), toks[pos].line));
        pos += 1;
    }
    while let Some(t) = toks.get(pos) {
        match t.text.as_str() {
            "{" => {
                pos += 1;
                while let Some(t) = toks.get(pos) {
                    match t.text.as_str() {
                        "}" => return pos + 1,
                        "," => pos += 1,
                        ";" => return pos,
                        _ => {
                            let next = parse_use_tree(toks, pos, path.clone(), out);
                            if next == pos {
                                return pos;
                            }
                            pos = next;
                        }
                    }
                }
                return pos;
            }
            "*" => {
                path.push(("*".into(), t.line));
                out.push(path);
                return pos + 1;
            }
            _ if t.is_ident() => {
                path.push((t.text.clone(), t.line));
                pos += 1;
                if toks.get(pos).is_some_and(|t| t.text == "::") {
                    pos += 1;
                    continue;
                }
                if toks.get(pos).is_some_and(|t| t.text == "as") {
                    pos += 2;
                }
                out.push(path);
                return pos;
            }
            _ => return pos,
        }
    }
    pos
}

/// The top-level module a path names, resolved from the module `cur` it is written in.
/// Only `crate::`, `$crate::` and `super::` chains that climb to the crate root can name
/// another top-level module; anything else stays inside the current one or is external.
fn resolve(path: &[Segment], cur: &[String]) -> Option<Segment> {
    let mut rest = path;
    if rest.first().is_some_and(|s| s.0 == "self") {
        rest = &rest[1..];
    }
    let first = rest.first()?;
    let named = if first.0 == "crate" {
        rest.get(1)?
    } else if first.0 == "super" {
        let climbs = rest.iter().take_while(|s| s.0 == "super").count();
        if climbs != cur.len() {
            return None;
        }
        rest.get(climbs)?
    } else {
        return None;
    };
    let is_name = named
        .0
        .chars()
        .next()
        .is_some_and(|ch| ch.is_alphabetic() || ch == '_');
    (is_name && named.0 != "self").then(|| named.clone())
}

/// Every reference to a crate-root name in `src`, as (line, name), in source order. `file_mod`
/// is the module path of the file itself; inline `mod x { … }` blocks extend it.
fn extract_refs(src: &str, file_mod: &[String]) -> Vec<(usize, String)> {
    let toks = tokenize(&strip_comments_and_literals(src));
    let mut refs = Vec::new();
    let mut depth = 0usize;
    // Inline modules open at the brace depth their body sits at.
    let mut inline_mods: Vec<(String, usize)> = Vec::new();
    let cur = |inline_mods: &Vec<(String, usize)>| -> Vec<String> {
        let mut m = file_mod.to_vec();
        m.extend(inline_mods.iter().map(|(n, _)| n.clone()));
        m
    };
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let prev_is_sep = i > 0 && toks[i - 1].text == "::";
        match t.text.as_str() {
            "use" => {
                let mut leaves = Vec::new();
                let end = parse_use_tree(&toks, i + 1, Vec::new(), &mut leaves);
                let here = cur(&inline_mods);
                refs.extend(
                    leaves
                        .iter()
                        .filter_map(|p| resolve(p, &here))
                        .map(|(n, l)| (l, n)),
                );
                i = end.max(i + 1);
                continue;
            }
            "mod" => {
                if let (Some(name), Some(open)) = (toks.get(i + 1), toks.get(i + 2)) {
                    if name.is_ident() && open.text == "{" {
                        inline_mods.push((name.text.clone(), depth + 1));
                    }
                }
            }
            "{" => depth += 1,
            "}" => {
                if inline_mods.last().is_some_and(|(_, d)| *d == depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "crate" | "super" | "self" if !prev_is_sep => {
                let mut path = vec![(t.text.clone(), t.line)];
                let mut j = i + 1;
                while toks.get(j).is_some_and(|s| s.text == "::")
                    && toks.get(j + 1).is_some_and(Tok::is_ident)
                {
                    path.push((toks[j + 1].text.clone(), toks[j + 1].line));
                    j += 2;
                }
                if let Some((n, l)) = resolve(&path, &cur(&inline_mods)) {
                    refs.push((l, n));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

fn layer_order_description() -> String {
    let mut by_rank: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for &(m, r) in LAYERS {
        by_rank.entry(r).or_default().push(m);
    }
    by_rank
        .iter()
        .map(|(r, ms)| format!("{} ({r})", ms.join(", ")))
        .collect::<Vec<_>>()
        .join(" < ")
}

#[test]
fn modules_import_only_lower_layers() {
    let rank: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let files = source_files();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| owning_module(&f.rel)).collect();

    let mut problems = Vec::new();
    for m in &modules {
        if !rank.contains_key(m.as_str()) {
            problems.push(format!(
                "top-level module `{m}` is not in the layer table: place it in LAYERS in \
                 tests/architecture.rs"
            ));
        }
    }

    let mut violations = BTreeSet::new();
    let mut cross_refs = 0;
    for f in &files {
        let Some(own) = owning_module(&f.rel) else {
            continue;
        };
        for (line, target) in extract_refs(&f.text, &file_module_path(&f.rel)) {
            if target == own || !modules.contains(&target) {
                continue;
            }
            cross_refs += 1;
            let why = match (rank.get(own.as_str()), rank.get(target.as_str())) {
                (Some(&a), Some(&b)) if b < a => continue,
                (Some(&a), Some(&b)) if a == b => {
                    format!("{own} and {target} are both {a}; siblings may not import each other")
                }
                (Some(&a), Some(&b)) => {
                    format!("{own} is {a}, {target} is {b}; only lower layers may be imported")
                }
                (None, _) => format!("{own} is not in the layer table"),
                (_, None) => format!("{target} is not in the layer table"),
            };
            violations.insert((
                f.rel.clone(),
                line,
                format!(
                    "{}:{line}: {own} imports {target} (layer order: {why})",
                    f.rel
                ),
            ));
        }
    }
    // A scanner that silently finds nothing would pass this test on any tree.
    assert!(
        cross_refs > 0,
        "found no references between top-level modules at all; the scanner is broken"
    );

    problems.extend(violations.into_iter().map(|(_, _, msg)| msg));
    assert!(
        problems.is_empty(),
        "{} layering problem(s); layer order, bottom up: {}\n{}\n",
        problems.len(),
        layer_order_description(),
        problems.join("\n")
    );
}

#[test]
fn source_files_stay_under_the_line_limit() {
    let offenders: Vec<String> = source_files()
        .iter()
        .filter(|f| !LINE_LIMIT_EXEMPT.contains(&f.rel.as_str()))
        .map(|f| (f, f.text.lines().count()))
        .filter(|&(_, n)| n > MAX_LINES)
        .map(|(f, n)| format!("{}: {n} lines", f.rel))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} file(s) over {MAX_LINES} lines; split them by concern:\n{}\n",
        offenders.len(),
        offenders.join("\n")
    );
}

fn module_path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn refs(src: &str, parts: &[&str]) -> Vec<(usize, String)> {
    extract_refs(src, &module_path(parts))
}

fn r(line: usize, name: &str) -> (usize, String) {
    (line, name.to_string())
}

#[test]
fn extractor_finds_use_statements() {
    let src = "\
use crate::media::frame::Frame;
use crate::{protocol::amf, fanout};
use crate::{shard::{io::Conn, state::{A, B as C}}, auth::*};
pub(crate) use crate::relay::push::{self as p};
use std::collections::HashMap;
use ::crate_like::x;
";
    assert_eq!(
        refs(src, &["control"]),
        vec![
            r(1, "media"),
            r(2, "protocol"),
            r(2, "fanout"),
            r(3, "shard"),
            r(3, "shard"),
            r(3, "shard"),
            r(3, "auth"),
            r(4, "relay"),
        ]
    );
}

#[test]
fn extractor_reports_the_line_of_each_module_in_a_multi_line_use() {
    let src = "\
use crate::{
    config::Config,
    record::{
        RecordPolicy,
    },
};
";
    assert_eq!(refs(src, &["relay"]), vec![r(2, "config"), r(3, "record")]);
}

#[test]
fn extractor_finds_inline_paths() {
    let src = "\
fn f(c: &crate::control::Control) -> crate::shard::query::SinkInfo {
    let x = crate::media::tag::inspect(&p);
    $crate::util::helper!();
}
pub(crate) fn g() {}
";
    assert_eq!(
        refs(src, &["relay", "push"]),
        vec![r(1, "control"), r(1, "shard"), r(2, "media"), r(3, "util")]
    );
}

#[test]
fn extractor_ignores_comments_and_literals() {
    let src = r####"
// use crate::config::Config;
/// See [`crate::config_file`].
//! crate::relay::push
/* crate::auth::Auth /* nested crate::record */ still crate::hls */
let s = "crate::storage::x and \" crate::channel::y";
let raw = r#"crate::net::z "quoted" crate::tls"#;
let q = '"'; let lt: &'static str = "x";
let after = crate::fanout::queue::MAX;
"####;
    assert_eq!(refs(src, &["shard"]), vec![r(9, "fanout")]);
}

#[test]
fn extractor_resolves_super_chains_that_climb_to_the_crate_root() {
    // From relay/push.rs, `super` is relay itself and `super::super` is the crate root.
    let src = "\
use super::resolve;
use super::super::config::Config;
fn f() { super::super::shard::run(); }
mod tests {
    use super::*;
    use super::super::super::record::X;
}
";
    assert_eq!(
        refs(src, &["relay", "push"]),
        vec![r(2, "config"), r(3, "shard"), r(6, "record")]
    );
    // From relay/mod.rs a single `super` already reaches the root.
    assert_eq!(
        refs("use super::config;\nuse super::*;\n", &["relay"]),
        vec![r(1, "config")]
    );
}

#[test]
fn file_paths_map_to_modules() {
    assert_eq!(
        owning_module("src/shard/conn/reader.rs").as_deref(),
        Some("shard")
    );
    assert_eq!(owning_module("src/config.rs").as_deref(), Some("config"));
    assert_eq!(
        owning_module("src/config/mod.rs").as_deref(),
        Some("config")
    );
    assert_eq!(owning_module("src/main.rs").as_deref(), Some("main"));
    assert_eq!(owning_module("src/lib.rs"), None);
    assert_eq!(
        file_module_path("src/shard/conn/reader.rs"),
        ["shard", "conn", "reader"]
    );
    assert_eq!(file_module_path("src/config/mod.rs"), ["config"]);
    assert!(file_module_path("src/main.rs").is_empty());
}
