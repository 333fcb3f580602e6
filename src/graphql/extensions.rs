//! Schema extensions: every error gets an `extensions.code`, and operations with too many root
//! fields (aliases included) are refused before they run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextRequest, NextSubscribe,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Request, Response, ServerError, ServerResult};
use futures::stream::{BoxStream, StreamExt};

use crate::viewer::RequestAuth;

use crate::metrics::Metrics;

/// Gives each operation of a WebSocket connection its own, unresolved [`RequestAuth`]: the
/// credential of `connection_init` is checked again for every operation, never remembered
/// from an earlier one. HTTP requests carry their own already and are left as they are.
pub struct PerOperationAuth;

impl ExtensionFactory for PerOperationAuth {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerOperationAuth)
    }
}

#[async_trait::async_trait]
impl Extension for PerOperationAuth {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if !request
            .data
            .contains_key(&std::any::TypeId::of::<RequestAuth>())
        {
            if let Some(connection) = ctx.data_opt::<RequestAuth>() {
                request = request.data(connection.unresolved());
            }
        }
        next.run(ctx, request).await
    }
}

/// Gives every error without a code `BAD_USER_INPUT` (parse, validation, depth, complexity,
/// argument coercion: all of them the client's input) and counts errors by code.
pub struct ErrorCodes {
    metrics: Option<Metrics>,
}

impl ErrorCodes {
    /// Counting into `metrics` when given.
    pub fn new(metrics: Option<Metrics>) -> Self {
        Self { metrics }
    }
}

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExt {
            metrics: self.metrics.clone(),
        })
    }
}

struct ErrorCodesExt {
    metrics: Option<Metrics>,
}

/// Sets `code` on an error that has none.
pub fn ensure_code(err: &mut ServerError, default: &str) -> String {
    let ext = err.extensions.get_or_insert_with(Default::default);
    match ext.get("code") {
        Some(async_graphql::Value::String(code)) => code.clone(),
        _ => {
            ext.set("code", default);
            default.to_owned()
        }
    }
}

impl ErrorCodesExt {
    fn code_errors(metrics: Option<&Metrics>, resp: &mut Response) {
        for err in &mut resp.errors {
            let code = ensure_code(err, "BAD_USER_INPUT");
            if let Some(m) = metrics {
                m.graphql_errors.with_label_values(&[code.as_str()]).inc();
            }
        }
    }
}

#[async_trait::async_trait]
impl Extension for ErrorCodesExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        Self::code_errors(self.metrics.as_ref(), &mut resp);
        resp
    }

    /// Every operation over the WebSocket (queries and mutations too) runs as a stream that
    /// never passes through [`Extension::request`]: its responses get their codes here.
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let metrics = self.metrics.clone();
        next.run(ctx, stream)
            .map(move |mut resp| {
                Self::code_errors(metrics.as_ref(), &mut resp);
                resp
            })
            .boxed()
    }
}

/// Refuses operations with more than `max` root fields, and documents whose fragments expand
/// to more than `max_expanded` field selections. Both are measured in linear time before
/// anything else walks the document: async-graphql's own recursion-depth check and its
/// validation walk a fragment again at every spread, which a few KiB of fragments spreading
/// each other turn into billions of steps.
pub struct RootFieldLimit {
    max: usize,
    max_expanded: usize,
}

impl RootFieldLimit {
    /// At most `max` root fields per operation and `max_expanded` selections in all.
    pub fn new(max: usize, max_expanded: usize) -> Self {
        Self { max, max_expanded }
    }
}

impl ExtensionFactory for RootFieldLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RootFieldLimitExt {
            max: self.max,
            max_expanded: self.max_expanded,
        })
    }
}

struct RootFieldLimitExt {
    max: usize,
    max_expanded: usize,
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

/// Deepest nesting of selections and fragment spreads walked (async-graphql's own recursion
/// limit, checked after this walk, is the same).
const MAX_NESTING: usize = 64;

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
                        if self.too_deep {
                            // Measured only down to the limit: not a result to remember.
                            self.visiting.remove(name);
                            break;
                        }
                        self.visiting.remove(name);
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

#[async_trait::async_trait]
impl Extension for RootFieldLimitExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Parsed here once; async-graphql takes the parsed document from the request.
        let doc = request.parsed_query()?;
        let mut counter = FieldCounter::new(doc);
        for (_, op) in doc.operations.iter() {
            let (n, expanded) = counter.measure(&op.node.selection_set.node, 0);
            let message = if counter.too_deep {
                format!("operation nests selections and fragments deeper than {MAX_NESTING} levels")
            } else if n > self.max {
                format!(
                    "operation has {n} root fields (aliases included); the limit is {}",
                    self.max
                )
            } else if expanded > self.max_expanded {
                format!(
                    "operation selects {expanded} fields once its fragments are expanded; the \
                     limit is {}",
                    self.max_expanded
                )
            } else {
                continue;
            };
            let mut err = ServerError::new(message, None);
            ensure_code(&mut err, "BAD_USER_INPUT");
            return Err(err);
        }
        next.run(ctx, request).await
    }
}
