//! Incremental delivery: `@defer` on fragments and `@stream(initialCount:)` on list fields,
//! in the format of graphql-js 17.0.0-alpha.2 that Apollo Client and Relay read: a first
//! payload `{ data, hasNext: true }`, then payloads `{ incremental: [{ data, path }] or
//! [{ items, path }], hasNext }`, the last with `hasNext: false`.
//!
//! Arena runs the operation once and splits its result: the first payload leaves out what
//! the deferred fragments alone select and the streamed lists' items past `initialCount`;
//! each later payload brings one deferred fragment (at its path) or the rest of one list.
//! Every payload so comes from one snapshot: a write between two payloads cannot tear the
//! assembled result (a deferred fragment of a list's item is that item's, never another
//! row's). Reads are cache hits, so running the deferred parts separately would save little
//! and risk that. A `@defer` or `@stream` nested in a deferred fragment or in a streamed
//! item is delivered with it, which the proposal allows (the directives are hints); so are
//! those whose `if` is false.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    Directive, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Positioned, Response, Value as GqlValue, Variables};
use serde_json::{json, Map, Value};

use super::documents::included;

/// Whether a document uses `@defer` or `@stream` anywhere.
pub fn uses_incremental(doc: &ExecutableDocument) -> bool {
    fn in_set(set: &SelectionSet) -> bool {
        set.items.iter().any(|sel| {
            let (directives, inner) = match &sel.node {
                Selection::Field(f) => (&f.node.directives, Some(&f.node.selection_set.node)),
                Selection::InlineFragment(f) => {
                    (&f.node.directives, Some(&f.node.selection_set.node))
                }
                Selection::FragmentSpread(f) => (&f.node.directives, None),
            };
            directives
                .iter()
                .any(|d| matches!(d.node.name.node.as_str(), "defer" | "stream"))
                || inner.is_some_and(in_set)
        })
    }
    doc.operations
        .iter()
        .any(|(_, op)| in_set(&op.node.selection_set.node))
        || doc
            .fragments
            .values()
            .any(|f| in_set(&f.node.selection_set.node))
}

/// The payloads of `response` for operation `op` of `doc`: `None` when nothing is delivered
/// later (no directive applies, or the response has no data), so the response goes as it is.
pub fn split(
    doc: &ExecutableDocument,
    op: &OperationDefinition,
    variables: &Variables,
    response: &Response,
) -> Option<Vec<Value>> {
    if matches!(response.data, GqlValue::Null) {
        return None;
    }
    let mut data = serde_json::to_value(&response.data).ok()?;
    let defaults: HashMap<&str, &GqlValue> = op
        .variable_definitions
        .iter()
        .filter_map(|v| {
            v.node
                .default_value
                .as_ref()
                .map(|d| (v.node.name.node.as_str(), &d.node))
        })
        .collect();
    let mut walk = Walk {
        doc,
        variables,
        defaults,
        later: Vec::new(),
    };
    let Value::Object(root) = &mut data else {
        return None;
    };
    walk.object(&op.selection_set.node, root, &mut Vec::new());
    if walk.later.is_empty() {
        return None;
    }
    let mut first = Map::new();
    first.insert("data".into(), data);
    if !response.errors.is_empty() {
        first.insert(
            "errors".into(),
            serde_json::to_value(&response.errors).ok()?,
        );
    }
    if !response.extensions.is_empty() {
        first.insert(
            "extensions".into(),
            serde_json::to_value(&response.extensions).ok()?,
        );
    }
    first.insert("hasNext".into(), Value::Bool(true));
    let n = walk.later.len();
    let mut payloads = vec![Value::Object(first)];
    for (i, entry) in walk.later.into_iter().enumerate() {
        payloads.push(json!({ "incremental": [entry], "hasNext": i + 1 < n }));
    }
    Some(payloads)
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    variables: &'a Variables,
    defaults: HashMap<&'a str, &'a GqlValue>,
    /// The entries delivered later, in order.
    later: Vec<Value>,
}

impl<'a> Walk<'a> {
    /// The value of argument `name` of `d`, variables resolved.
    fn argument(&self, d: &'a Directive, name: &str) -> Option<GqlValue> {
        let v = &d.get_argument(name)?.node;
        match v {
            async_graphql_value::Value::Variable(var) => self
                .variables
                .get(var)
                .cloned()
                .or_else(|| self.defaults.get(var.as_str()).map(|v| (*v).clone())),
            other => other.clone().into_const(),
        }
    }

    /// The directive `name` of `directives` if it applies (its `if` is not false).
    fn applies(
        &self,
        directives: &'a [Positioned<Directive>],
        name: &str,
    ) -> Option<&'a Directive> {
        let d = &directives.iter().find(|d| d.node.name.node == name)?.node;
        match self.argument(d, "if") {
            Some(GqlValue::Boolean(false)) => None,
            _ => Some(d),
        }
    }

    fn label(&self, d: &'a Directive) -> Option<String> {
        match self.argument(d, "label") {
            Some(GqlValue::String(s)) => Some(s),
            _ => None,
        }
    }

    fn included(&self, sel: &Selection) -> bool {
        included(sel, self.variables, &self.defaults)
    }

    /// The response keys a selection set selects, through its fragments; `deferred_too`:
    /// also through deferred fragments (else those are left out).
    fn keys(&self, set: &'a SelectionSet, deferred_too: bool, out: &mut HashSet<String>) {
        for sel in &set.items {
            if !self.included(&sel.node) {
                continue;
            }
            match &sel.node {
                Selection::Field(f) => {
                    let key = f.node.alias.as_ref().unwrap_or(&f.node.name);
                    out.insert(key.node.to_string());
                }
                Selection::InlineFragment(f) => {
                    if deferred_too || self.applies(&f.node.directives, "defer").is_none() {
                        self.keys(&f.node.selection_set.node, deferred_too, out);
                    }
                }
                Selection::FragmentSpread(s) => {
                    if deferred_too || self.applies(&s.node.directives, "defer").is_none() {
                        if let Some(f) = self.doc.fragments.get(&s.node.fragment_name.node) {
                            self.keys(&f.node.selection_set.node, deferred_too, out);
                        }
                    }
                }
            }
        }
    }

    /// Walks `set` over the object `data` at `path`: takes out what is delivered later.
    fn object(
        &mut self,
        set: &'a SelectionSet,
        data: &mut Map<String, Value>,
        path: &mut Vec<Value>,
    ) {
        // What the set selects outside its deferred fragments stays in this payload.
        let mut kept: Option<HashSet<String>> = None;
        for sel in &set.items {
            if !self.included(&sel.node) {
                continue;
            }
            match &sel.node {
                Selection::Field(f) => {
                    let key = f
                        .node
                        .alias
                        .as_ref()
                        .unwrap_or(&f.node.name)
                        .node
                        .to_string();
                    let Some(value) = data.get_mut(&key) else {
                        continue;
                    };
                    path.push(Value::String(key.clone()));
                    let stream = self.applies(&f.node.directives, "stream");
                    let sub = &f.node.selection_set.node;
                    match (stream, value) {
                        (Some(d), Value::Array(items)) => {
                            let initial = match self.argument(d, "initialCount") {
                                Some(GqlValue::Number(n)) => n.as_u64().unwrap_or(0) as usize,
                                _ => 0,
                            };
                            let rest = items.split_off(initial.min(items.len()));
                            // The first items are walked (their own deferred parts come later);
                            // the streamed ones come whole.
                            self.items(sub, items, path);
                            if !rest.is_empty() {
                                let mut at = path.clone();
                                at.push(json!(initial));
                                let mut entry = json!({ "items": rest, "path": at });
                                if let Some(label) = self.label(d) {
                                    entry["label"] = Value::String(label);
                                }
                                self.later.push(entry);
                            }
                        }
                        (_, Value::Array(items)) => self.items(sub, items, path),
                        (_, Value::Object(o)) if !sub.items.is_empty() => self.object(sub, o, path),
                        _ => {}
                    }
                    path.pop();
                }
                Selection::InlineFragment(f) => {
                    let inner = &f.node.selection_set.node;
                    match self.applies(&f.node.directives, "defer") {
                        Some(d) => self.defer(set, inner, d, data, path, &mut kept),
                        None => self.object(inner, data, path),
                    }
                }
                Selection::FragmentSpread(s) => {
                    let Some(fragment) = self.doc.fragments.get(&s.node.fragment_name.node) else {
                        continue;
                    };
                    let inner = &fragment.node.selection_set.node;
                    match self.applies(&s.node.directives, "defer") {
                        Some(d) => self.defer(set, inner, d, data, path, &mut kept),
                        None => self.object(inner, data, path),
                    }
                }
            }
        }
    }

    /// The items of a list (nested lists too) under `set`.
    fn items(&mut self, set: &'a SelectionSet, items: &mut [Value], path: &mut Vec<Value>) {
        for (i, item) in items.iter_mut().enumerate() {
            path.push(json!(i));
            match item {
                Value::Object(o) if !set.items.is_empty() => self.object(set, o, path),
                Value::Array(inner) => self.items(set, inner, path),
                _ => {}
            }
            path.pop();
        }
    }

    /// A deferred fragment of `set` selecting `inner`: its fields at `path` come later; those
    /// the rest of `set` selects too stay.
    fn defer(
        &mut self,
        set: &'a SelectionSet,
        inner: &'a SelectionSet,
        d: &'a Directive,
        data: &mut Map<String, Value>,
        path: &[Value],
        kept: &mut Option<HashSet<String>>,
    ) {
        let kept = kept.get_or_insert_with(|| {
            let mut k = HashSet::new();
            self.keys(set, false, &mut k);
            k
        });
        let mut keys = HashSet::new();
        self.keys(inner, true, &mut keys);
        let mut part = Map::new();
        for key in keys {
            let value = if kept.contains(&key) {
                data.get(&key).cloned()
            } else {
                data.remove(&key)
            };
            if let Some(v) = value {
                part.insert(key, v);
            }
        }
        let mut entry = json!({ "data": part, "path": path });
        if let Some(label) = self.label(d) {
            entry["label"] = Value::String(label);
        }
        self.later.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(query: &str, data: Value, vars: Value) -> Option<Vec<Value>> {
        let doc = async_graphql::parser::parse_query(query).unwrap();
        let op = match &doc.operations {
            async_graphql::parser::types::DocumentOperations::Single(op) => op.node.clone(),
            _ => unreachable!(),
        };
        let response = Response::new(GqlValue::from_json(data).unwrap());
        split(&doc, &op, &Variables::from_json(vars), &response)
    }

    #[test]
    fn a_deferred_fragment_comes_after_the_rest_with_its_path() {
        let p = run(
            "{ meal(id: 1) { id ... @defer(label: \"slow\") { id name } } }",
            json!({ "meal": { "id": "1", "name": "Pho" } }),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            p[0],
            json!({ "data": { "meal": { "id": "1" } }, "hasNext": true })
        );
        assert_eq!(
            p[1],
            json!({ "incremental": [{ "data": { "id": "1", "name": "Pho" }, "path": ["meal"], "label": "slow" }], "hasNext": false })
        );
    }

    #[test]
    fn a_streamed_list_sends_its_first_items_then_the_rest() {
        let p = run(
            "query($n: Int!) { meals { nodes @stream(initialCount: $n) { name } } }",
            json!({ "meals": { "nodes": [{ "name": "a" }, { "name": "b" }, { "name": "c" }] } }),
            json!({ "n": 1 }),
        )
        .unwrap();
        assert_eq!(
            p[0]["data"],
            json!({ "meals": { "nodes": [{ "name": "a" }] } })
        );
        assert_eq!(
            p[1]["incremental"][0],
            json!({ "items": [{ "name": "b" }, { "name": "c" }], "path": ["meals", "nodes", 1] })
        );
        assert_eq!(p[1]["hasNext"], false);
    }

    #[test]
    fn deferred_fragments_of_list_items_come_one_per_item_and_if_false_is_inline() {
        let q = "query($d: Boolean!) { trainers { nodes { name ...P @defer(if: $d) } } } \
                 fragment P on Trainer { pokemons { name } }";
        let data = json!({ "trainers": { "nodes": [
            { "name": "a", "pokemons": [{ "name": "x" }] },
            { "name": "b", "pokemons": [] }
        ] } });
        let p = run(q, data.clone(), json!({ "d": true })).unwrap();
        assert_eq!(
            p[0]["data"],
            json!({ "trainers": { "nodes": [{ "name": "a" }, { "name": "b" }] } })
        );
        assert_eq!(
            p[1]["incremental"][0]["path"],
            json!(["trainers", "nodes", 0])
        );
        assert_eq!(p[2]["incremental"][0]["data"], json!({ "pokemons": [] }));
        assert_eq!(
            (p[1]["hasNext"].clone(), p[2]["hasNext"].clone()),
            (json!(true), json!(false))
        );
        assert!(run(q, data, json!({ "d": false })).is_none());
    }
}
