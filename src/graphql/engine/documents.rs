//! Parsed documents, parsed once: [`DocumentCache`] keeps each document text's parse, the
//! limits it was measured against, and what counting needs of it, in a bounded LRU keyed by
//! the text. A cached document is reused by every request that sends the same text (or the
//! same persisted-query hash), so the parser runs once per document, not once per request.
//!
//! Before anything else walks a new document, [`Prepared::parse`] measures it in linear time:
//! how many root fields each operation has and how many field selections its fragments expand
//! to. async-graphql's own recursion-depth check and its validation walk a fragment again at
//! every spread, which a few KiB of fragments spreading each other turn into billions of steps.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned, ServerError, Value, Variables};
use lru::LruCache;
use parking_lot::Mutex;

/// Deepest nesting of selections and fragment spreads walked (async-graphql's own recursion
/// limit, checked after this walk, is the same).
pub const MAX_NESTING: usize = 64;

/// The limits a new document is measured against.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    /// Most root fields (aliases included) of one operation.
    pub max_root_fields: usize,
    /// Most field selections once fragments are expanded.
    pub max_expanded: usize,
}

/// A parsed document that passed the size limits.
pub struct Prepared {
    /// The document text.
    pub text: Arc<str>,
    /// The parse.
    pub doc: ExecutableDocument,
    /// Whether any operation declares variables (their values are checked per request).
    pub has_variables: bool,
    /// Per operation (by name; `None` for the anonymous one), its root fields when no
    /// `@skip`/`@include` decides them: counted without walking the document again.
    static_roots: HashMap<Option<Name>, Arc<[Name]>>,
    /// Set once the document passed async-graphql's full validation: later requests run
    /// with the checks that depend on the request alone.
    validated: AtomicBool,
    /// Set once a response to it was found to depend on its viewer: from then on its
    /// memoized responses are kept and looked up per credential.
    asks_viewer: AtomicBool,
    /// Whether it uses `@defer` or `@stream`.
    incremental: bool,
}

impl Prepared {
    /// Parses `text` and measures it against `limits`.
    pub fn parse(text: Arc<str>, limits: DocumentLimits) -> Result<Self, ServerError> {
        let doc = async_graphql::parser::parse_query(&*text)?;
        let mut counter = FieldCounter::new(&doc);
        for (_, op) in doc.operations.iter() {
            let (n, expanded) = counter.measure(&op.node.selection_set.node, 0);
            let message = if counter.too_deep {
                format!("operation nests selections and fragments deeper than {MAX_NESTING} levels")
            } else if n > limits.max_root_fields {
                format!(
                    "operation has {n} root fields (aliases included); the limit is {}",
                    limits.max_root_fields
                )
            } else if expanded > limits.max_expanded {
                format!(
                    "operation selects {expanded} fields once its fragments are expanded; the \
                     limit is {}",
                    limits.max_expanded
                )
            } else {
                continue;
            };
            return Err(ServerError::new(message, None));
        }
        let has_variables = doc
            .operations
            .iter()
            .any(|(_, op)| !op.node.variable_definitions.is_empty());
        let mut prepared = Self {
            text,
            doc,
            has_variables,
            static_roots: HashMap::new(),
            validated: AtomicBool::new(false),
            asks_viewer: AtomicBool::new(false),
            incremental: false,
        };
        prepared.incremental = super::incremental::uses_incremental(&prepared.doc);
        let mut static_roots = HashMap::new();
        for (name, op) in prepared.doc.operations.iter() {
            let mut fields = Vec::new();
            let mut conditional = false;
            let variables = Variables::default();
            let mut walk = RootWalk {
                variables: &variables,
                defaults: HashMap::new(),
                seen: HashSet::new(),
            };
            prepared.walk_roots(
                &op.node.selection_set.node,
                &mut walk,
                0,
                false,
                &mut |field: &Name, directed: bool| {
                    conditional |= directed;
                    fields.push(field.clone());
                },
            );
            if !conditional {
                static_roots.insert(name.cloned(), Arc::from(fields));
            }
        }
        prepared.static_roots = static_roots;
        Ok(prepared)
    }

    /// Whether the document passed full validation once.
    pub fn is_validated(&self) -> bool {
        self.validated.load(Ordering::Acquire)
    }

    /// Records that the document passed full validation.
    pub fn mark_validated(&self) {
        self.validated.store(true, Ordering::Release);
    }

    /// Whether a response to it depended on its viewer.
    pub fn asks_viewer(&self) -> bool {
        self.asks_viewer.load(Ordering::Acquire)
    }

    /// Records that a response to it depended on its viewer.
    pub fn mark_asks_viewer(&self) {
        self.asks_viewer.store(true, Ordering::Release);
    }

    /// The operation a request selects (by name, or the only one), if there is one.
    pub fn operation(&self, name: Option<&str>) -> Option<&OperationDefinition> {
        match (&self.doc.operations, name) {
            (DocumentOperations::Single(op), _) => Some(&op.node),
            (DocumentOperations::Multiple(ops), Some(name)) => {
                ops.get(&Name::new(name)).map(|op| &op.node)
            }
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
                ops.values().next().map(|op| &op.node)
            }
            (DocumentOperations::Multiple(_), None) => None,
        }
    }

    /// Whether it uses `@defer` or `@stream`.
    pub fn uses_incremental(&self) -> bool {
        self.incremental
    }

    /// Whether the selected operation is a query marked `@live`.
    pub fn is_live(&self, name: Option<&str>) -> bool {
        self.operation(name).is_some_and(|op| {
            op.ty == OperationType::Query
                && op.directives.iter().any(|d| d.node.name.node == "live")
        })
    }

    /// The operation's type, if the request selects one.
    pub fn operation_type(&self, name: Option<&str>) -> Option<OperationType> {
        self.operation(name).map(|op| op.ty)
    }

    /// The root fields the selected operation runs (each alias once; fragments expanded;
    /// `@skip`/`@include` applied; introspection left out).
    pub fn root_fields(&self, name: Option<&str>, variables: &Variables) -> Arc<[Name]> {
        let key = match &self.doc.operations {
            DocumentOperations::Single(_) => None,
            DocumentOperations::Multiple(ops) => match name {
                Some(n) => Some(Name::new(n)),
                None => ops.keys().next().cloned(),
            },
        };
        if let Some(fields) = self.static_roots.get(&key) {
            return fields.clone();
        }
        let mut out = Vec::new();
        self.for_each_root_field(name, variables, |f| out.push(Name::new(f)));
        Arc::from(out)
    }

    /// Calls `f` with each root field the selected operation runs (see
    /// [`Prepared::root_fields`]).
    pub fn for_each_root_field(
        &self,
        name: Option<&str>,
        variables: &Variables,
        mut f: impl FnMut(&str),
    ) {
        let Some(op) = self.operation(name) else {
            return;
        };
        let defaults: HashMap<&str, &Value> = op
            .variable_definitions
            .iter()
            .filter_map(|d| {
                d.node
                    .default_value
                    .as_ref()
                    .map(|v| (d.node.name.node.as_str(), &v.node))
            })
            .collect();
        let mut walk = RootWalk {
            variables,
            defaults,
            seen: HashSet::new(),
        };
        self.walk_roots(
            &op.selection_set.node,
            &mut walk,
            0,
            false,
            &mut |name: &Name, _| f(name.as_str()),
        );
    }

    fn walk_roots<'a>(
        &'a self,
        set: &'a SelectionSet,
        walk: &mut RootWalk<'a, '_>,
        depth: usize,
        inherited: bool,
        f: &mut impl FnMut(&Name, bool),
    ) {
        if depth > MAX_NESTING {
            return;
        }
        for sel in &set.items {
            let directed = inherited || has_conditions(&sel.node);
            if directed && !included(&sel.node, walk.variables, &walk.defaults) {
                continue;
            }
            match &sel.node {
                Selection::Field(field) => {
                    let name = &field.node.name.node;
                    if !name.starts_with("__") {
                        f(name, directed);
                    }
                }
                Selection::InlineFragment(inline) => self.walk_roots(
                    &inline.node.selection_set.node,
                    walk,
                    depth + 1,
                    directed,
                    f,
                ),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    // A fragment spread twice at the root selects its fields once.
                    if !walk.seen.insert(name.as_str()) {
                        continue;
                    }
                    if let Some(fragment) = self.doc.fragments.get(name) {
                        self.walk_roots(
                            &fragment.node.selection_set.node,
                            walk,
                            depth + 1,
                            directed,
                            f,
                        );
                    }
                }
            }
        }
    }
}

/// What a walk of an operation's root selections reads and remembers.
struct RootWalk<'a, 'v> {
    variables: &'v Variables,
    defaults: HashMap<&'a str, &'a Value>,
    /// Fragments already spread (a fragment spread twice selects its fields once).
    seen: HashSet<&'a str>,
}

/// Whether a selection carries `@skip` or `@include`.
fn has_conditions(sel: &Selection) -> bool {
    let directives = match sel {
        Selection::Field(f) => &f.node.directives,
        Selection::InlineFragment(f) => &f.node.directives,
        Selection::FragmentSpread(f) => &f.node.directives,
    };
    directives
        .iter()
        .any(|d| matches!(d.node.name.node.as_str(), "skip" | "include"))
}

/// Whether `@skip` / `@include` keep a selection.
pub(super) fn included(
    sel: &Selection,
    variables: &Variables,
    defaults: &HashMap<&str, &Value>,
) -> bool {
    let directives = match sel {
        Selection::Field(f) => &f.node.directives,
        Selection::InlineFragment(f) => &f.node.directives,
        Selection::FragmentSpread(f) => &f.node.directives,
    };
    directives.iter().all(|d| {
        let flag = |d: &Positioned<async_graphql::parser::types::Directive>| {
            let value = d.node.get_argument("if").map(|v| &v.node);
            match value {
                Some(async_graphql_value::Value::Boolean(b)) => *b,
                Some(async_graphql_value::Value::Variable(name)) => matches!(
                    variables
                        .get(name)
                        .or_else(|| defaults.get(name.as_str()).copied()),
                    Some(Value::Boolean(true))
                ),
                _ => false,
            }
        };
        match d.node.name.node.as_str() {
            "skip" => !flag(d),
            "include" => flag(d),
            _ => true,
        }
    })
}

/// Measures an operation through its fragments: how many root fields it has and how many
/// field selections it expands to. Each fragment is measured once (memoized by name), so a
/// document of fragments that spread each other many times costs time linear in its size,
/// not exponential; a fragment that spreads itself (invalid, refused by validation later)
/// counts as empty.
struct FieldCounter<'a> {
    doc: &'a ExecutableDocument,
    /// Per fragment: (fields at its top level, fields in all).
    measured: HashMap<&'a str, (usize, usize)>,
    visiting: HashSet<&'a str>,
    /// Set when the nesting (fields, inline fragments and spreads) went past
    /// [`MAX_NESTING`]: the walk stopped there instead of overflowing the stack.
    too_deep: bool,
}

impl<'a> FieldCounter<'a> {
    fn new(doc: &'a ExecutableDocument) -> Self {
        Self {
            doc,
            measured: HashMap::new(),
            visiting: HashSet::new(),
            too_deep: false,
        }
    }

    /// (fields at the top level of `set`, fields selected in all), both saturating.
    fn measure(&mut self, set: &'a SelectionSet, depth: usize) -> (usize, usize) {
        if depth > MAX_NESTING {
            self.too_deep = true;
            return (0, 0);
        }
        let (mut top, mut all) = (0usize, 0usize);
        for sel in &set.items {
            if self.too_deep {
                break;
            }
            let (t, a) = match &sel.node {
                Selection::Field(f) => {
                    let (_, inner) = self.measure(&f.node.selection_set.node, depth + 1);
                    (1, inner.saturating_add(1))
                }
                Selection::InlineFragment(f) => self.measure(&f.node.selection_set.node, depth + 1),
                Selection::FragmentSpread(s) => {
                    let name = s.node.fragment_name.node.as_str();
                    if let Some(&m) = self.measured.get(name) {
                        m
                    } else if !self.visiting.insert(name) {
                        (0, 0)
                    } else {
                        let m = match self.doc.fragments.get(&s.node.fragment_name.node) {
                            Some(f) => self.measure(&f.node.selection_set.node, depth + 1),
                            None => (0, 0),
                        };
                        self.visiting.remove(name);
                        if self.too_deep {
                            // Measured only down to the limit: not a result to remember.
                            break;
                        }
                        self.measured.insert(name, m);
                        m
                    }
                }
            };
            top = top.saturating_add(t);
            all = all.saturating_add(a);
        }
        (top, all)
    }
}

/// The parsed documents of recent requests: at most `max_entries` documents and
/// `max_bytes` of document text (a parse takes a small multiple of its text).
pub struct DocumentCache {
    inner: Mutex<Lru>,
    hasher: std::collections::hash_map::RandomState,
    limits: DocumentLimits,
    max_entries: usize,
    max_bytes: usize,
}

struct Lru {
    /// Keyed by a hash of the text; an entry whose text differs (a collision) is a miss.
    entries: LruCache<u64, Arc<Prepared>>,
    bytes: usize,
}

impl DocumentCache {
    /// A cache of at most `max_entries` documents and `max_bytes` of their text.
    pub fn new(limits: DocumentLimits, max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Lru {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            hasher: Default::default(),
            limits,
            max_entries,
            max_bytes,
        }
    }

    fn key(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    /// The cached parse of `text`, if any.
    pub fn get(&self, text: &str) -> Option<Arc<Prepared>> {
        let key = self.key(text);
        let mut lru = self.inner.lock();
        lru.entries.get(&key).filter(|p| &*p.text == text).cloned()
    }

    /// The parse of `text`: cached, or parsed now (and cached).
    pub fn prepare(&self, text: &str) -> Result<Arc<Prepared>, ServerError> {
        if let Some(p) = self.get(text) {
            return Ok(p);
        }
        let prepared = Arc::new(Prepared::parse(Arc::from(text), self.limits)?);
        self.insert(prepared.clone());
        Ok(prepared)
    }

    fn insert(&self, prepared: Arc<Prepared>) {
        let len = prepared.text.len();
        if len > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let key = self.key(&prepared.text);
        let mut lru = self.inner.lock();
        if let Some(old) = lru.entries.put(key, prepared) {
            lru.bytes -= old.text.len();
        }
        lru.bytes += len;
        while lru.entries.len() > self.max_entries || lru.bytes > self.max_bytes {
            match lru.entries.pop_lru() {
                Some((_, old)) => lru.bytes -= old.text.len(),
                None => break,
            }
        }
    }

    /// How many documents are cached.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether no document is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DocumentLimits = DocumentLimits {
        max_root_fields: 6,
        max_expanded: 100,
    };

    fn roots(text: &str, vars: serde_json::Value) -> Vec<String> {
        let p = Prepared::parse(Arc::from(text), LIMITS).unwrap();
        let vars = Variables::from_json(vars);
        let mut out = Vec::new();
        p.for_each_root_field(None, &vars, |n| out.push(n.to_owned()));
        out
    }

    #[test]
    fn root_fields_are_found_through_aliases_fragments_and_directives() {
        assert_eq!(
            roots(
                "{ a: meal(id: 1) { id } b: meal(id: 2) { id } }",
                serde_json::json!({})
            ),
            ["meal", "meal"]
        );
        assert_eq!(
            roots(
                "query($s: Boolean = true) { ...F ...F stats { users } __typename roll(expression: \"d6\") @skip(if: $s) } fragment F on Query { me { id } }",
                serde_json::json!({})
            ),
            ["me", "stats"]
        );
        assert_eq!(
            roots(
                "query($s: Boolean) { ... on Query { roll(expression: \"d6\") @include(if: $s) { total } } }",
                serde_json::json!({ "s": true })
            ),
            ["roll"]
        );
    }

    #[test]
    fn too_many_root_fields_and_fragment_bombs_are_refused_when_parsed() {
        let seven = "{ a: __typename b: __typename c: __typename d: __typename e: __typename f: __typename g: __typename }";
        assert!(Prepared::parse(Arc::from(seven), LIMITS).is_err());
        let mut bomb = String::from("query { ...F0 } fragment F0 on Query { __typename }");
        for i in 1..40 {
            bomb.push_str(&format!(
                " fragment F{i} on Query {{ ...F{p} ...F{p} }}",
                p = i - 1
            ));
        }
        bomb = bomb.replacen("...F0", "...F39", 1);
        assert!(Prepared::parse(Arc::from(bomb.as_str()), LIMITS).is_err());
    }

    #[test]
    fn the_cache_keeps_at_most_its_entries_and_bytes() {
        let cache = DocumentCache::new(LIMITS, 2, 1_000);
        let a = cache.prepare("{ a: __typename }").unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &cache.prepare("{ a: __typename }").unwrap()
        ));
        cache.prepare("{ b: __typename }").unwrap();
        cache.prepare("{ c: __typename }").unwrap();
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get("{ a: __typename }").is_none(),
            "the least recently used went"
        );
        let small = DocumentCache::new(LIMITS, 100, 40);
        small.prepare("{ a: __typename }").unwrap();
        small.prepare("{ b: __typename }").unwrap();
        small.prepare("{ c: __typename }").unwrap();
        assert_eq!(small.len(), 2, "17 bytes each, 40 in all");
        small
            .prepare(&format!("{{ {} }}", "__typename ".repeat(5)))
            .unwrap();
        assert!(small.len() <= 2);
    }
}
