//! The house rules of `src/`, checked on the source itself (no cluster needed):
//!
//! - no import circle between files: a file's references to items of other files (`use`,
//!   `crate::…`, `super::…`, child modules) form a graph without cycles;
//! - the wings stand on the floors below them and not on each other: `cluster/`, `upstream/`,
//!   `protocol/` and `migration/` never reach into `proxy/`, the data path never into
//!   `migration/` or `admin/`, `config.rs` into nothing but itself;
//! - no file of `src/` is longer than [`MAX_LINES`] lines.
//!
//! Code under `#[cfg(test)]` is left out: a test module may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// The longest a file of `src/` may grow before it should be split by what it does.
const MAX_LINES: usize = 600;

/// `(files under this module, may not use this module)`: the layers.
const FORBIDDEN: &[(&str, &str)] = &[
    ("acl", "proxy"),
    ("acl", "cluster"),
    ("acl", "upstream"),
    ("acl", "migration"),
    ("acl", "admin"),
    ("cluster", "proxy"),
    ("cluster", "migration"),
    ("cluster", "admin"),
    ("upstream", "proxy"),
    ("upstream", "migration"),
    ("upstream", "admin"),
    ("protocol", "proxy"),
    ("protocol", "cluster"),
    ("protocol", "upstream"),
    ("protocol", "migration"),
    ("migration", "proxy"),
    ("migration", "admin"),
    ("proxy", "migration"),
    ("proxy", "admin"),
    ("metrics", "proxy"),
    ("metrics", "migration"),
    ("config", "proxy"),
    ("config", "upstream"),
    ("config", "cluster"),
    ("config", "migration"),
    ("config", "tls"),
    ("tls", "proxy"),
    ("tls", "upstream"),
];

/// One file of the library and the module path it defines (`["proxy", "dispatch"]`).
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().map_or(true, |e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under src/");
            // main.rs is the binary crate: its `crate::` is another crate.
            if relative == Path::new("main.rs") {
                continue;
            }
            let mut module: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            files.push(SourceFile { path, module, text });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// Collects every module path a file refers to, made absolute.
struct References<'a> {
    /// The inline module the visitor is in (starts as the file's module).
    here: Vec<String>,
    /// Child modules of each module, to resolve `child::item` without `self::`.
    children: &'a BTreeMap<Vec<String>, BTreeSet<String>>,
    found: BTreeSet<Vec<String>>,
    /// Collect `pub use` re-exports as aliases instead of references.
    aliases: Option<&'a mut BTreeMap<Vec<String>, Vec<String>>>,
}

impl References<'_> {
    fn resolve(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut absolute = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.clone(),
            "super" => {
                let mut at = self.here.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    at.pop();
                    rest = &rest[1..];
                }
                at.extend(rest.iter().cloned());
                self.found.insert(at);
                return;
            }
            name if self
                .children
                .get(&self.here)
                .is_some_and(|c| c.contains(name)) =>
            {
                let mut at = self.here.clone();
                at.extend(segments.iter().cloned());
                self.found.insert(at);
                return;
            }
            _ => return,
        };
        absolute.extend(segments[1..].iter().cloned());
        self.found.insert(absolute);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                let path = prefix.clone();
                self.resolve(&path);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                let path = prefix.clone();
                self.resolve(&path);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                let path = prefix.clone();
                self.resolve(&path);
            }
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().contains("test"))
    })
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if is_cfg_test(&item.attrs) {
            return;
        }
        let reexport = !matches!(item.vis, syn::Visibility::Inherited);
        match (reexport, self.aliases.is_some()) {
            // A re-export is plumbing of the module that makes it: a name for an item that
            // lives elsewhere, followed to that item wherever it is used.
            (true, true) => {
                let before = std::mem::take(&mut self.found);
                let mut names = Vec::new();
                alias_names(&mut Vec::new(), &item.tree, &mut names);
                for (name, path) in names {
                    self.found.clear();
                    self.resolve(&path);
                    if let Some(target) = self.found.iter().next().cloned() {
                        let mut at = self.here.clone();
                        at.push(name);
                        if let Some(aliases) = self.aliases.as_mut() {
                            aliases.insert(at, target);
                        }
                    }
                }
                self.found = before;
            }
            (true, false) => {}
            (false, true) => {}
            (false, false) => self.use_tree(&mut Vec::new(), &item.tree),
        }
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(crate)`, `pub(super)`: not a use of anything.
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if is_cfg_test(&item.attrs) || item.content.is_none() {
            return;
        }
        self.here.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.here.pop();
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_cfg_test(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if !is_cfg_test(&item.attrs) {
            syn::visit::visit_item_impl(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(&segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Paths inside macro calls (`tracing::info!(… crate::x::y …)`) are tokens: read the
        // ones that start with `crate` or `super`.
        let tokens: Vec<String> = mac
            .tokens
            .clone()
            .into_iter()
            .map(|t| t.to_string())
            .collect();
        let mut i = 0;
        while i < tokens.len() {
            if tokens[i] == "crate" || tokens[i] == "super" {
                let mut path = vec![tokens[i].clone()];
                let mut j = i + 1;
                while j + 1 < tokens.len() && tokens[j] == ":" && tokens[j + 1] == ":" {
                    if let Some(next) = tokens.get(j + 2) {
                        path.push(next.clone());
                    }
                    j += 3;
                }
                self.resolve(&path);
                i = j;
            } else {
                i += 1;
            }
        }
        syn::visit::visit_macro(self, mac);
    }
}

/// `(name it is known by, path it names)` of every leaf of a `use` tree (globs left out).
fn alias_names(
    prefix: &mut Vec<String>,
    tree: &syn::UseTree,
    out: &mut Vec<(String, Vec<String>)>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            alias_names(prefix, &p.tree, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            path.push(n.ident.to_string());
            out.push((n.ident.to_string(), path));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            path.push(r.ident.to_string());
            out.push((r.rename.to_string(), path));
        }
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                alias_names(prefix, tree, out);
            }
        }
    }
}

/// The module declarations (`mod x;` and inline `mod x { … }`) of a file, by module.
fn declared_children(
    file: &syn::File,
    module: &[String],
    into: &mut BTreeMap<Vec<String>, BTreeSet<String>>,
) {
    fn walk(
        items: &[syn::Item],
        module: &[String],
        into: &mut BTreeMap<Vec<String>, BTreeSet<String>>,
    ) {
        for item in items {
            if let syn::Item::Mod(m) = item {
                into.entry(module.to_vec())
                    .or_default()
                    .insert(m.ident.to_string());
                if let Some((_, items)) = &m.content {
                    let mut inner = module.to_vec();
                    inner.push(m.ident.to_string());
                    walk(items, &inner, into);
                }
            }
        }
    }
    walk(&file.items, module, into);
}

/// Edges between files (by index into `files`).
fn file_graph(files: &[SourceFile]) -> Vec<BTreeSet<usize>> {
    let parsed: Vec<syn::File> = files
        .iter()
        .map(|f| {
            syn::parse_file(&f.text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", f.path.display()))
        })
        .collect();
    let mut children = BTreeMap::new();
    for (file, parsed) in files.iter().zip(&parsed) {
        declared_children(parsed, &file.module, &mut children);
    }
    let by_module: BTreeMap<&[String], usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.module.as_slice(), i))
        .collect();
    let mut aliases = BTreeMap::new();
    for (file, parsed) in files.iter().zip(&parsed) {
        let mut refs = References {
            here: file.module.clone(),
            children: &children,
            found: BTreeSet::new(),
            aliases: Some(&mut aliases),
        };
        refs.visit_file(parsed);
    }
    // The file that defines what `path` names: the longest prefix that is a file's module,
    // following re-exports.
    let define = |mut path: Vec<String>| -> Option<usize> {
        for _ in 0..16 {
            let n = (0..=path.len())
                .rev()
                .find(|&n| by_module.contains_key(&path[..n]))?;
            match path.get(n).and_then(|_| aliases.get(&path[..=n])) {
                Some(target) => {
                    let mut next = target.clone();
                    next.extend(path[n + 1..].iter().cloned());
                    path = next;
                }
                None => return by_module.get(&path[..n]).copied(),
            }
        }
        None
    };
    let mut edges = vec![BTreeSet::new(); files.len()];
    for (i, (file, parsed)) in files.iter().zip(&parsed).enumerate() {
        let mut refs = References {
            here: file.module.clone(),
            children: &children,
            found: BTreeSet::new(),
            aliases: None,
        };
        refs.visit_file(parsed);
        for path in refs.found {
            if let Some(target) = define(path) {
                if target != i {
                    edges[i].insert(target);
                }
            }
        }
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in self.edges[v].iter() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(index) if self.on_stack[w] => self.low[v] = self.low[v].min(index),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let n = edges.len();
    let mut t = Tarjan {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out
}

fn name(file: &SourceFile) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    file.path
        .strip_prefix(root)
        .unwrap_or(&file.path)
        .display()
        .to_string()
}

#[test]
fn no_import_circle_between_files() {
    let files = source_files();
    let edges = file_graph(&files);
    let found = circles(&edges);
    let report: Vec<String> = found
        .iter()
        .map(|component| {
            let members: BTreeSet<usize> = component.iter().copied().collect();
            let lines: Vec<String> = component
                .iter()
                .map(|&v| {
                    let uses: Vec<String> = edges[v]
                        .iter()
                        .filter(|w| members.contains(w))
                        .map(|&w| name(&files[w]))
                        .collect();
                    format!("    {} uses {}", name(&files[v]), uses.join(", "))
                })
                .collect();
            lines.join("\n")
        })
        .collect();
    assert!(
        found.is_empty(),
        "{} import circle(s) between files of src/:\n{}",
        found.len(),
        report.join("\n  --\n")
    );
}

#[test]
fn layers_do_not_reach_upwards() {
    let files = source_files();
    let edges = file_graph(&files);
    let mut wrong = Vec::new();
    for (i, file) in files.iter().enumerate() {
        for &(layer, forbidden) in FORBIDDEN {
            if file.module.first().map_or(true, |m| m != layer) {
                continue;
            }
            for &j in &edges[i] {
                if files[j].module.first().is_some_and(|m| m == forbidden) {
                    wrong.push(format!("{} uses {}", name(file), name(&files[j])));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "files that reach into a layer above them:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_file_is_too_long() {
    let long: Vec<String> = source_files()
        .iter()
        .filter_map(|f| {
            let lines = f.text.lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", name(f)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by what they do):\n  {}",
        long.join("\n  ")
    );
}
