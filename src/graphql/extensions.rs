//! Schema extensions: every error gets an `extensions.code`, and operations with too many root
//! fields (aliases included) are refused before they run.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Request, Response, ServerError, ServerResult, Variables};

use crate::auth::RequestAuth;

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

#[async_trait::async_trait]
impl Extension for ErrorCodesExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        for err in &mut resp.errors {
            let code = ensure_code(err, "BAD_USER_INPUT");
            if let Some(m) = &self.metrics {
                m.graphql_errors.with_label_values(&[code.as_str()]).inc();
            }
        }
        resp
    }
}

/// Refuses operations with more than `max` root fields.
pub struct RootFieldLimit {
    max: usize,
}

impl RootFieldLimit {
    /// At most `max` root fields per operation.
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl ExtensionFactory for RootFieldLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RootFieldLimitExt { max: self.max })
    }
}

struct RootFieldLimitExt {
    max: usize,
}

fn count_fields(doc: &ExecutableDocument, set: &SelectionSet, depth: usize) -> usize {
    if depth > 8 {
        return 0;
    }
    set.items
        .iter()
        .map(|sel| match &sel.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => {
                count_fields(doc, &f.node.selection_set.node, depth + 1)
            }
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .map(|f| count_fields(doc, &f.node.selection_set.node, depth + 1))
                .unwrap_or(0),
        })
        .sum()
}

#[async_trait::async_trait]
impl Extension for RootFieldLimitExt {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        for (_, op) in doc.operations.iter() {
            let n = count_fields(&doc, &op.node.selection_set.node, 0);
            if n > self.max {
                let mut err = ServerError::new(
                    format!(
                        "operation has {n} root fields (aliases included); the limit is {}",
                        self.max
                    ),
                    None,
                );
                ensure_code(&mut err, "BAD_USER_INPUT");
                return Err(err);
            }
        }
        Ok(doc)
    }
}
