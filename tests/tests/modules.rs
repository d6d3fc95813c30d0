//! The module graph of every crate of the workspace: no module imports its importer (no
//! cycle), and no import breaks the rules docs/architecture.md states in its `module-rules`
//! block (which layer may import which, which module alone may name a backend crate).
//!
//! Each module's edges are the paths it names (`use` declarations and paths in code, macro
//! bodies included) resolved to the module that defines the item. Re-exports (`pub use`) are
//! followed to where the item lives, so a facade such as `lib.rs` re-exporting `Error` is not an
//! edge; a parent declaring `mod child;` is not one either. Test code (`#[cfg(test)]` items and
//! `*_tests.rs` files) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module path from the crate root (`[]` is the root).
type ModPath = Vec<String>;

#[derive(Debug, Default)]
struct Module {
    /// Paths named by the module, as written (first segment `crate`, `super`, `self` or a name).
    uses: Vec<Vec<String>>,
    /// `pub use` aliases: exported name → path as written.
    reexports: BTreeMap<String, Vec<String>>,
    /// Child modules.
    children: BTreeSet<String>,
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

fn expand_use(prefix: &[String], tree: &syn::UseTree, out: &mut Vec<(Vec<String>, String)>) {
    match tree {
        syn::UseTree::Path(p) => {
            let mut next = prefix.to_vec();
            next.push(p.ident.to_string());
            expand_use(&next, &p.tree, out);
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.to_vec();
            full.push(n.ident.to_string());
            let name = n.ident.to_string();
            if name == "self" {
                full.pop();
                let alias = full.last().cloned().unwrap_or_default();
                out.push((full, alias));
            } else {
                out.push((full, name));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.to_vec();
            full.push(r.ident.to_string());
            if r.ident == "self" {
                full.pop();
            }
            out.push((full, r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => out.push((prefix.to_vec(), "*".into())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                expand_use(prefix, t, out);
            }
        }
    }
}

/// The other crates of the workspace whose use the rules can restrict.
const EXTERNS: [&str; 3] = ["telejob_core", "telejob_local", "telejob_aws"];

/// Whether `first` starts a path the graph follows: within the crate, or into a workspace crate.
fn followed(first: &str) -> bool {
    ["crate", "super", "self"].contains(&first) || EXTERNS.contains(&first)
}

/// Collects the `crate::`/`super::`/`self::` (and workspace crates') paths of code (not of `use`
/// items, not of nested modules or test items).
#[derive(Default)]
struct Paths(Vec<Vec<String>>);

impl Paths {
    fn tokens(&mut self, ts: TokenStream) {
        let flat: Vec<TokenTree> = ts.into_iter().collect();
        let mut i = 0;
        while i < flat.len() {
            match &flat[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if followed(&id.to_string()) => {
                    let mut path = vec![id.to_string()];
                    let mut j = i + 1;
                    while j + 2 < flat.len() + 1 {
                        match (flat.get(j), flat.get(j + 1), flat.get(j + 2)) {
                            (
                                Some(TokenTree::Punct(a)),
                                Some(TokenTree::Punct(b)),
                                Some(TokenTree::Ident(n)),
                            ) if a.as_char() == ':' && b.as_char() == ':' => {
                                path.push(n.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if path.len() > 1 {
                        self.0.push(path);
                    }
                    i = j - 1;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        match i {
            syn::Item::Mod(_) | syn::Item::Use(_) => {}
            _ if is_test(item_attrs(i)) => {}
            _ => syn::visit::visit_item(self, i),
        }
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() > 1 && followed(&segs[0]) {
            self.0.push(segs);
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

fn item_attrs(i: &syn::Item) -> &[syn::Attribute] {
    match i {
        syn::Item::Const(x) => &x.attrs,
        syn::Item::Enum(x) => &x.attrs,
        syn::Item::Fn(x) => &x.attrs,
        syn::Item::Impl(x) => &x.attrs,
        syn::Item::Mod(x) => &x.attrs,
        syn::Item::Static(x) => &x.attrs,
        syn::Item::Struct(x) => &x.attrs,
        syn::Item::Trait(x) => &x.attrs,
        syn::Item::Type(x) => &x.attrs,
        syn::Item::Use(x) => &x.attrs,
        syn::Item::Macro(x) => &x.attrs,
        _ => &[],
    }
}

/// Reads the module at `path` (items `items`, whose child files live in `dir`) and its children.
fn read_module(
    items: &[syn::Item],
    dir: &Path,
    at: ModPath,
    modules: &mut BTreeMap<ModPath, Module>,
) {
    let mut m = Module::default();
    let mut paths = Paths::default();
    for item in items {
        if is_test(item_attrs(item)) {
            continue;
        }
        match item {
            syn::Item::Mod(md) => {
                let name = md.ident.to_string();
                if name.ends_with("_tests") || name == "tests" {
                    continue;
                }
                m.children.insert(name.clone());
                let mut child = at.clone();
                child.push(name.clone());
                if let Some((_, content)) = &md.content {
                    read_module(content, &dir.join(&name), child, modules);
                } else {
                    let file = match path_attr(&md.attrs) {
                        Some(p) => dir.join(p),
                        None if dir.join(format!("{name}.rs")).exists() => {
                            dir.join(format!("{name}.rs"))
                        }
                        None => dir.join(&name).join("mod.rs"),
                    };
                    let child_dir = if file.file_name().is_some_and(|f| f == "mod.rs") {
                        file.parent().expect("parent").to_path_buf()
                    } else {
                        dir.join(&name)
                    };
                    let parsed = parse(&file);
                    read_module(&parsed.items, &child_dir, child, modules);
                }
            }
            syn::Item::Use(u) => {
                let mut out = Vec::new();
                expand_use(&[], &u.tree, &mut out);
                let public = !matches!(u.vis, syn::Visibility::Inherited);
                for (path, alias) in out {
                    if public && alias != "*" {
                        m.reexports.insert(alias, path);
                    } else {
                        m.uses.push(path);
                    }
                }
            }
            other => paths.visit_item(other),
        }
    }
    m.uses.extend(paths.0);
    modules.insert(at, m);
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Makes `path` (as written in module `at`) absolute, or `None` for another crate's path.
fn absolute(
    at: &ModPath,
    path: &[String],
    modules: &BTreeMap<ModPath, Module>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String> = match first.as_str() {
        name if EXTERNS.contains(&name) => return Some(vec![format!("extern:{name}")]),
        "crate" => Vec::new(),
        "self" => at.clone(),
        "super" => at[..at.len().checked_sub(1)?].to_vec(),
        name if modules.get(at).is_some_and(|m| m.children.contains(name)) => {
            let mut b = at.clone();
            b.push(name.to_string());
            b
        }
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module that defines what `path` (absolute) names, following re-exports.
fn target(path: &[String], modules: &BTreeMap<ModPath, Module>, depth: usize) -> Option<ModPath> {
    if path.first().is_some_and(|p| p.starts_with("extern:")) {
        return Some(path[..1].to_vec());
    }
    let mut n = path.len();
    while !modules.contains_key(&path[..n]) {
        n -= 1;
    }
    let module = path[..n].to_vec();
    if depth < 16
        && let Some(next) = path.get(n)
        && let Some(alias) = modules[&module].reexports.get(next)
        && let Some(abs) = absolute(&module, alias, modules)
    {
        let mut abs = abs;
        abs.extend(path[n + 1..].iter().cloned());
        return target(&abs, modules, depth + 1);
    }
    Some(module)
}

fn edges(modules: &BTreeMap<ModPath, Module>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut out: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (at, m) in modules {
        let set = out.entry(at.clone()).or_default();
        for p in &m.uses {
            if let Some(abs) = absolute(at, p, modules)
                && let Some(t) = target(&abs, modules, 0)
                && &t != at
            {
                set.insert(t);
            }
        }
    }
    out
}

/// Every cycle found by a depth-first search (one per back edge), as module paths.
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<String>> {
    fn dfs(
        n: &ModPath,
        g: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        stack: &mut Vec<ModPath>,
        done: &mut BTreeSet<ModPath>,
        found: &mut Vec<Vec<String>>,
    ) {
        stack.push(n.clone());
        for next in g.get(n).into_iter().flatten() {
            if let Some(i) = stack.iter().position(|s| s == next) {
                let mut c: Vec<String> = stack[i..].iter().map(show).collect();
                c.push(show(next));
                found.push(c);
            } else if !done.contains(next) {
                dfs(next, g, stack, done, found);
            }
        }
        stack.pop();
        done.insert(n.clone());
    }
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for n in graph.keys() {
        if !done.contains(n) {
            dfs(n, graph, &mut Vec::new(), &mut done, &mut found);
        }
    }
    found
}

fn show(p: &ModPath) -> String {
    if p.first().is_some_and(|p| p.starts_with("extern:")) {
        p[0].trim_start_matches("extern:").into()
    } else if p.is_empty() {
        "crate".into()
    } else {
        format!("crate::{}", p.join("::"))
    }
}

fn crate_graph(root: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let src = root.join("src");
    let top = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{}: no lib.rs or main.rs", src.display()));
    let mut modules = BTreeMap::new();
    read_module(&parse(&top).items, &src, Vec::new(), &mut modules);
    edges(&modules)
}

/// One rule of docs/architecture.md's `module-rules` block: in crate `krate`, no module at or
/// below `from` (but those at or below an `except` module) imports one at or below `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    krate: String,
    from: ModPath,
    to: Vec<ModPath>,
    except: Vec<ModPath>,
    line: String,
}

/// A module path as the rules write it: `*` (every module), `a::b`, or `extern:name`.
fn rule_path(s: &str) -> ModPath {
    match s.trim() {
        "*" | "crate" => Vec::new(),
        p if p.starts_with("extern:") => vec![p.to_string()],
        p => p.split("::").map(str::to_string).collect(),
    }
}

/// The rules of the first ```` ```module-rules ```` block of `doc`, one per line:
/// `CRATE: FROM -/-> TO[, TO…] [except M[, M…]]`; `#` starts a comment.
fn parse_rules(doc: &str) -> Vec<Rule> {
    let block = doc
        .split("```module-rules\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("docs/architecture.md has a ```module-rules block");
    let list = |s: &str| s.split(',').map(rule_path).collect::<Vec<_>>();
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (krate, rest) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("rule {l:?}: no crate"));
            let (from, rest) = rest
                .split_once("-/->")
                .unwrap_or_else(|| panic!("rule {l:?}: no -/->"));
            let (to, except) = match rest.split_once(" except ") {
                Some((t, e)) => (list(t), list(e)),
                None => (list(rest), Vec::new()),
            };
            Rule {
                krate: krate.trim().to_string(),
                from: rule_path(from),
                to,
                except,
                line: l.to_string(),
            }
        })
        .collect()
}

/// The imports of `graph` that break `rule`, as `from -> to (rule)` lines.
fn violations(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>, rule: &Rule) -> Vec<String> {
    let under = |p: &ModPath, base: &ModPath| p.starts_with(base);
    let mut out = Vec::new();
    for (from, tos) in graph {
        if !under(from, &rule.from) || rule.except.iter().any(|e| under(from, e)) {
            continue;
        }
        for to in tos {
            if rule.to.iter().any(|t| under(to, t)) && !under(from, to) {
                out.push(format!("{} -> {}  ({})", show(from), show(to), rule.line));
            }
        }
    }
    out
}

fn workspace_crates() -> Vec<PathBuf> {
    let root = telejob_e2e::repo_root();
    [
        "telejob-core",
        "telejob-local",
        "telejob-aws",
        "telejob-server",
    ]
    .iter()
    .map(|c| root.join(c))
    .collect()
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut all = Vec::new();
    for krate in workspace_crates() {
        let graph = crate_graph(&krate);
        assert!(graph.len() >= 3, "{}: modules not found", krate.display());
        for c in cycles(&graph) {
            all.push(format!("{}: {}", krate.display(), c.join(" -> ")));
        }
    }
    assert!(all.is_empty(), "module cycles:\n{}", all.join("\n"));
}

/// Writes `text` as `src/<path>` of the crate at `root`, making its folders.
fn write_source(root: &Path, path: &str, text: &str) {
    let file = root.join("src").join(path);
    std::fs::create_dir_all(file.parent().expect("a folder")).expect("mkdir");
    std::fs::write(file, text).expect("write");
}

/// A crate in a temporary directory whose `src/` holds `files` (path, text).
fn fake_crate(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        write_source(dir.path(), path, text);
    }
    dir
}

#[test]
fn the_check_finds_a_cycle_and_follows_re_exports() {
    // a uses b's item through a re-export in b/mod.rs; b::c uses a: a cycle a -> b::c -> a.
    let dir = fake_crate(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub use a::A;\n"),
        ("a.rs", "use crate::b::C;\npub struct A(C);\n"),
        ("b/mod.rs", "mod c;\npub use c::C;\n"),
        (
            "b/c.rs",
            "pub struct C;\nfn f() { let _ = crate::A::default; }\n#[cfg(test)]\nmod tests { use crate::b; }\n",
        ),
    ]);
    let write = |p: &str, t: &str| write_source(dir.path(), p, t);
    let found = cycles(&crate_graph(dir.path()));
    assert_eq!(
        found,
        vec![vec!["crate::a", "crate::b::c", "crate::a"]],
        "{found:?}"
    );
    // Without the back edge: no cycle; a test module's imports do not count.
    write(
        "b/c.rs",
        "pub struct C;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    );
    assert!(cycles(&crate_graph(dir.path())).is_empty());
}

#[test]
fn every_import_keeps_the_documented_module_rules() {
    let root = telejob_e2e::repo_root();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("docs");
    let rules = parse_rules(&doc);
    assert!(rules.len() >= 5, "too few rules: {rules:?}");
    let mut broken = Vec::new();
    for rule in &rules {
        let graph = crate_graph(&root.join(&rule.krate));
        for from in std::iter::once(&rule.from).chain(&rule.except) {
            let known = from.is_empty() || graph.keys().any(|m| m.starts_with(from));
            assert!(
                known,
                "rule {:?} names a module {from:?} that does not exist",
                rule.line
            );
        }
        broken.extend(violations(&graph, rule));
    }
    assert!(
        broken.is_empty(),
        "imports that break docs/architecture.md's module rules:\n{}",
        broken.join("\n")
    );
}

/// The imports of the crate at `root` that break `rules`.
fn broken_rules(root: &Path, rules: &[Rule]) -> Vec<String> {
    let graph = crate_graph(root);
    rules.iter().flat_map(|r| violations(&graph, r)).collect()
}

#[test]
fn the_rules_check_fails_on_a_wrong_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |p: &str, t: &str| write_source(dir.path(), p, t);
    write("lib.rs", "pub mod app;\npub mod db;\npub mod wiring;\n");
    write("app/mod.rs", "pub mod jobs;\n");
    write("app/jobs.rs", "pub struct Job(pub crate::db::Row);\n");
    write(
        "wiring.rs",
        "pub fn make() -> telejob_aws::S3Store { todo!() }\n",
    );
    // The lower layer reaches up (through a path in code, not a `use`).
    write(
        "db.rs",
        "pub struct Row;\npub fn load() -> Option<crate::app::jobs::Job> { None }\n",
    );
    let doc = "```module-rules\nx: db -/-> app  # the database knows no service\n\
               x: * -/-> extern:telejob_aws except wiring\n```\n";
    let rules = parse_rules(doc);
    let found = broken_rules(dir.path(), &rules);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("crate::db -> crate::app::jobs"),
        "{found:?}"
    );
    // The exempt module may name the backend crate; another may not.
    write(
        "app/jobs.rs",
        "pub struct Job(pub crate::db::Row, telejob_aws::S3Store);\n",
    );
    write("db.rs", "pub struct Row;\n");
    let found = broken_rules(dir.path(), &rules);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("crate::app::jobs -> telejob_aws"),
        "{found:?}"
    );
}
