//! How one GraphQL operation runs, over HTTP and over the WebSocket alike, with the work that
//! does not depend on the request done once per document and the rest once per operation —
//! never once per resolved field:
//!
//! 1. the document text: sent, or found by its persisted-query hash ([`persisted`]);
//! 2. its parse, measured against the root-field and fragment limits, from the
//!    [`DocumentCache`] (parsed only the first time it is seen);
//! 3. the selected operation, and the request's variable values coerced against it
//!    ([`variables`]);
//! 4. execution: a document seen for the first time runs on the *strict* schema (every
//!    validation rule); once it has passed, it runs on the *fast* schema, which skips the
//!    rules whose outcome depends on the document alone. Neither schema has an extension on
//!    its resolvers, so async-graphql resolves every field on its direct path;
//! 5. error codes and usage counting, once per operation.
//!
//! [`persisted`]: super::persisted
//! [`variables`]: super::variables

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Request, Response, ServerError, ValidationResult};
use axum::body::Bytes;
use futures::stream::{BoxStream, StreamExt};
use lru::LruCache;
use parking_lot::Mutex;

use super::documents::{DocumentCache, DocumentLimits, Prepared};
use super::incremental;
use super::live::{self, Live};
use super::memo::{self, Memo};
use super::persisted::{self, PersistedQueries};
use super::variables::InputTypes;
use crate::consistency::Versions;
use crate::error::ErrorCode;
use crate::graphql::ArenaSchema;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::usage::counting::UsageBuffer;
use crate::viewer::RequestAuth;

/// What an operation's error is, beyond the GraphQL codes: how the HTTP layer answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation ran (its response has `data`, maybe with field errors).
    Executed,
    /// The request was refused before anything ran: a missing or unknown document, a parse
    /// or validation failure, bad variables. The response has no `data`.
    RequestError,
    /// A mutation sent with `GET`.
    MutationOverGet,
    /// Not a GraphQL request at all: no document, or a malformed `persistedQuery`.
    Malformed,
}

/// The transport an operation came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST /graphql`.
    Post,
    /// `GET /graphql?query=…`: queries only.
    Get,
    /// `/graphql/ws`.
    WebSocket,
    /// `/graphql/stream` (GraphQL over Server-Sent Events).
    Sse,
}

/// A request's `extensions.persistedQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// None given.
    No,
    /// `{ version: 1, sha256Hash }`: the hash.
    Hash([u8; 32]),
    /// Given, but not of that shape.
    Malformed,
}

impl Persisted {
    /// From its `version` and `sha256Hash` fields.
    pub fn parse(version: Option<u64>, sha256_hash: Option<&str>) -> Self {
        match (version, sha256_hash.and_then(persisted::parse_hash)) {
            (Some(1), Some(hash)) => Persisted::Hash(hash),
            _ => Persisted::Malformed,
        }
    }

    /// From async-graphql's request extensions (multipart and WebSocket requests).
    pub fn of(extensions: &async_graphql::Extensions) -> Self {
        match extensions.get("persistedQuery") {
            None | Some(async_graphql::Value::Null) => Persisted::No,
            Some(async_graphql::Value::Object(o)) => {
                let version = match o.get("version") {
                    Some(async_graphql::Value::Number(n)) => n.as_u64(),
                    _ => None,
                };
                let hash = match o.get("sha256Hash") {
                    Some(async_graphql::Value::String(h)) => Some(h.as_str()),
                    _ => None,
                };
                Persisted::parse(version, hash)
            }
            Some(_) => Persisted::Malformed,
        }
    }
}

/// The document a request names: its text (empty when it names a persisted one by hash).
#[derive(Debug, Clone, Copy)]
pub struct Document<'a> {
    /// The document text, or empty.
    pub text: &'a str,
    /// Its persisted-query hash, if given.
    pub persisted: Persisted,
    /// The variables as the JSON text the client sent, when they came so (a JSON body):
    /// they are parsed only when the operation runs, and a memoized response is found by
    /// this text, so a memo hit parses no variables. `None`: the request's own variables.
    pub variables: Option<&'a str>,
    /// Whether the client reads incremental delivery (`multipart/mixed`): a document with
    /// `@defer` or `@stream` is then answered in payloads ([`Answer::incremental`]).
    pub incremental: bool,
}

impl<'a> Document<'a> {
    /// The document `text` (maybe empty) with its `persisted` hash.
    pub fn new(text: &'a str, persisted: Persisted) -> Self {
        Self {
            text,
            persisted,
            variables: None,
            incremental: false,
        }
    }

    /// Whether the client reads incremental delivery (see [`Document::incremental`]).
    pub fn with_incremental(self, incremental: bool) -> Self {
        Self {
            incremental,
            ..self
        }
    }

    /// With the variables' JSON text (see [`Document::variables`]).
    pub fn with_variables(self, variables: Option<&'a str>) -> Self {
        Self { variables, ..self }
    }
}

/// The code of a request whose persisted-query hash is not registered.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";

/// One payload of a streamed operation: a response, or an incremental-delivery payload
/// (`@defer` / `@stream`: `{ data, hasNext }`, then `{ incremental, hasNext }`).
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// A whole response.
    Response(Response),
    /// A payload of incremental delivery.
    Incremental(serde_json::Value),
}

impl Payload {
    /// The response, when this is a whole one.
    pub fn response(&self) -> Option<&Response> {
        match self {
            Payload::Response(r) => Some(r),
            Payload::Incremental(_) => None,
        }
    }
}

impl From<Response> for Payload {
    fn from(r: Response) -> Self {
        Payload::Response(r)
    }
}

/// A response's document, operation and variables, kept to split it into payloads.
type ToSplit = (Arc<Prepared>, Option<String>, async_graphql::Variables);

/// One operation's result.
pub struct Answer {
    /// The GraphQL response.
    pub response: Response,
    /// How it ended.
    pub outcome: Outcome,
    /// The response already serialized (a memoized one, or one just memoized).
    pub body: Option<Bytes>,
    /// The payloads of incremental delivery, when the client reads them and the operation
    /// defers or streams something.
    pub incremental: Option<Vec<serde_json::Value>>,
    /// What splitting the response into those payloads needs, once its errors have codes.
    to_split: Option<Box<ToSplit>>,
}

impl Answer {
    fn malformed(message: &str) -> Self {
        let mut a = Self::refused("BAD_USER_INPUT", message);
        a.outcome = Outcome::Malformed;
        a
    }

    fn refused(code: &str, message: impl Into<String>) -> Self {
        let mut err = ServerError::new(message, None);
        err.extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
        Self {
            response: Response::from_errors(vec![err]),
            outcome: Outcome::RequestError,
            body: None,
            incremental: None,
            to_split: None,
        }
    }
}

/// What the memo had for a query (the index of its counter).
#[derive(Clone, Copy)]
enum MemoResult {
    Hit = 0,
    Miss = 1,
    Stale = 2,
}

/// Runs operations (see the module documentation). Shared by every request.
pub struct Pipeline {
    strict: ArenaSchema,
    fast: ArenaSchema,
    documents: DocumentCache,
    persisted: PersistedQueries,
    inputs: InputTypes,
    /// Responses of pure queries, with the versions they were computed from.
    memo: Memo,
    /// The version checks of memo hits, batched across requests.
    versions: Versions,
    /// `arena_response_memo_total` by result: hit, miss, stale.
    memo_counts: [prometheus::IntCounter; 3],
    /// Parses of persisted documents by their hash.
    by_hash: Mutex<LruCache<[u8; 32], Arc<Prepared>, persisted::DigestState>>,
    usage: Arc<UsageBuffer>,
    state: AppState,
    /// Whether async-graphql's tracing extension runs (it needs the document text).
    keep_text: bool,
    /// Live queries being kept up to date.
    live: Arc<Live>,
}

/// Set by the strict schema once an operation passed validation.
#[derive(Clone, Default)]
struct Validated(Arc<AtomicBool>);

/// The strict schema's one extension: it reports that validation passed.
pub struct ValidationWitness;

impl ExtensionFactory for ValidationWitness {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ValidationWitness)
    }
}

#[async_trait::async_trait]
impl Extension for ValidationWitness {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await;
        if result.is_ok() {
            if let Some(flag) = ctx.data_opt::<Validated>() {
                flag.0.store(true, Ordering::Release);
            }
        }
        result
    }
}

impl Pipeline {
    /// A pipeline over the two builds of the schema (see [`super::build_schemas`]).
    pub fn new(
        strict: ArenaSchema,
        fast: ArenaSchema,
        state: AppState,
        usage: Arc<UsageBuffer>,
        keep_text: bool,
    ) -> Self {
        let s = &state.settings;
        let limits = DocumentLimits {
            max_root_fields: s.max_root_fields,
            // Every field costs at least 1 of complexity: more selections than 10× the limit
            // could never pass it, whatever the fragments' type conditions.
            max_expanded: s.max_complexity.saturating_mul(10),
        };
        let inputs = InputTypes::from_sdl(&strict.sdl());
        Self {
            documents: DocumentCache::new(limits, s.document_cache_entries, s.document_cache_bytes),
            persisted: PersistedQueries::new(
                state.kv.clone(),
                s.document_cache_entries,
                Some(std::time::Duration::from_secs(s.persisted_ttl_secs)),
                s.persisted_only,
            ),
            memo: Memo::new(s.response_memo_entries, s.response_memo_bytes),
            versions: Versions::new(state.cache.clone()),
            memo_counts: ["hit", "miss", "stale"]
                .map(|r| state.metrics.response_memo.with_label_values(&[r])),
            by_hash: Mutex::new(LruCache::with_hasher(
                NonZeroUsize::new(s.document_cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN),
                persisted::DigestState::default(),
            )),
            strict,
            fast,
            inputs,
            usage,
            live: Arc::new({
                let health = state.clone();
                Live::new(state.events.clone(), state.metrics.clone(), move || {
                    health.cache_health.usable()
                })
            }),
            state,
            keep_text,
        }
    }

    /// The live queries.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The state operations run over.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The registered documents.
    pub fn persisted(&self) -> &PersistedQueries {
        &self.persisted
    }

    /// The parsed documents.
    pub fn documents(&self) -> &DocumentCache {
        &self.documents
    }

    /// Runs one query or mutation: the document `query` (empty when the request names a
    /// persisted one) with the rest of the request.
    pub async fn execute(
        &self,
        doc: Document<'_>,
        request: Request,
        auth: RequestAuth,
        via: Transport,
    ) -> Answer {
        let mut answer = self.run(doc, request, auth, via).await;
        code_errors(Some(&self.state.metrics), &mut answer.response);
        if let Some(split) = answer.to_split.take() {
            let (prepared, operation, variables) = *split;
            answer.incremental = prepared
                .operation(operation.as_deref())
                .and_then(|op| incremental::split(&prepared.doc, op, &variables, &answer.response));
        }
        answer
    }

    async fn run(
        &self,
        doc: Document<'_>,
        request: Request,
        auth: RequestAuth,
        via: Transport,
    ) -> Answer {
        let (prepared, mut request) = match self.prepare(doc, request, via).await {
            Ok(p) => p,
            Err(refused) => return refused,
        };
        let operation = request.operation_name.clone();
        // The memo answers queries while the cache tier can vouch for what they read. Its key
        // is the variables' text as sent (a response memoized for it had them parsed and
        // coerced), or the request's variables serialized.
        let incremental = doc.incremental && prepared.uses_incremental();
        let memo_key: Option<Cow<'_, str>> = (self.memo.enabled()
            && !incremental
            && prepared.operation_type(operation.as_deref()) == Some(OperationType::Query)
            && self.state.cache_health.usable())
        .then(|| match doc.variables {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(serde_json::to_string(&request.variables).unwrap_or_default()),
        });
        if let Some(vars) = &memo_key {
            let who = prepared.asks_viewer().then(|| memo::who(auth.header()));
            let key = memo::Key {
                prepared: &prepared,
                operation: operation.as_deref(),
                variables: vars,
                who: who.as_deref(),
            };
            if let Some(entry) = self.memo.get(&key) {
                let now = chrono::Utc::now().timestamp_millis();
                if entry.in_time(now) && self.still_current(&entry.reads).await {
                    self.memo_result(MemoResult::Hit);
                    if let Some((_, Some(viewer))) = &entry.viewer {
                        // The versions that vouch for the answer vouch for its viewer too.
                        auth.vouched_for(viewer.clone());
                    }
                    OperationUsage {
                        usage: self.usage.clone(),
                        fields: entry.fields.clone(),
                        auth: Some(auth),
                    }
                    .record();
                    return Answer {
                        response: Response::default(),
                        outcome: Outcome::Executed,
                        body: Some(entry.body.clone()),
                        incremental: None,
                        to_split: None,
                    };
                }
                self.memo_result(MemoResult::Stale);
                self.memo.forget(&key);
            } else {
                self.memo_result(MemoResult::Miss);
            }
        }
        if let Some(text) = doc.variables {
            request.variables = match parse_variables(text) {
                Ok(v) => v,
                Err(e) => return *e,
            };
        }
        if let Err(e) = self.coerce(&prepared, &request) {
            return *e;
        }
        let variables = incremental.then(|| request.variables.clone());
        let mut answer =
            Box::pin(self.run_operation(prepared.clone(), request, auth, memo_key)).await;
        if let Some(variables) = variables {
            if answer.outcome == Outcome::Executed {
                answer.to_split = Some(Box::new((prepared, operation, variables)));
            }
        }
        answer
    }

    /// Step 4 and 5 for an operation the memo did not answer. Boxed: async-graphql's
    /// execution is a large future, which a memo hit then never moves.
    async fn run_operation(
        &self,
        prepared: Arc<Prepared>,
        request: Request,
        auth: RequestAuth,
        memo_key: Option<Cow<'_, str>>,
    ) -> Answer {
        let operation = request.operation_name.clone();
        let validated = Validated::default();
        let asker = auth.clone();
        let usage_record =
            OperationUsage::new(&self.usage, &prepared, &request, Some(auth.clone()));
        let counting_fields = usage_record.fields.clone();
        let schema = if prepared.is_validated() {
            validated.0.store(true, Ordering::Release);
            &self.fast
        } else {
            &self.strict
        };
        let request = self.attach(request, &prepared, Some(auth), validated.clone());
        let _count = usage_record.armed_by(validated.clone());
        let (response, reads) = match &memo_key {
            Some(_) => entity::scope::read::tracking(schema.execute(request)).await,
            None => (schema.execute(request).await, Default::default()),
        };
        if !validated.0.load(Ordering::Acquire) {
            return Answer {
                response,
                outcome: Outcome::RequestError,
                body: None,
                incremental: None,
                to_split: None,
            };
        }
        prepared.mark_validated();
        let mut answer = Answer {
            response,
            outcome: Outcome::Executed,
            body: None,
            incremental: None,
            to_split: None,
        };
        if let Some(vars) = memo_key {
            if reads.is_pure() && answer.response.errors.is_empty() {
                let body = Bytes::from(serde_json::to_vec(&answer.response).unwrap_or_default());
                if reads.keyed {
                    prepared.mark_asks_viewer();
                }
                let who = prepared.asks_viewer().then(|| memo::who(asker.header()));
                let key = memo::Key {
                    prepared: &prepared,
                    operation: operation.as_deref(),
                    variables: &vars,
                    who: who.as_deref(),
                };
                let computed = memo::Computed {
                    body: body.clone(),
                    reads: reads.entries,
                    fields: counting_fields,
                    viewer: who.clone().map(|who| (who, asker.resolved_viewer())),
                    until: reads.until,
                };
                self.memo.put(&key, computed);
                answer.body = Some(body);
            }
        }
        answer
    }

    /// Whether every entry still holds the version read (one round trip, shared with the
    /// checks of concurrent requests; none when there are no entries).
    async fn still_current(&self, reads: &[(String, i64)]) -> bool {
        match self.versions.current(reads).await {
            Ok(current) => current,
            Err(()) => {
                self.state.cache_health.failed(std::iter::empty());
                false
            }
        }
    }

    fn memo_result(&self, result: MemoResult) {
        self.memo_counts[result as usize].inc();
    }

    /// Runs a subscription (or any operation) as a stream of payloads, for the WebSocket and
    /// Server-Sent Events. `connection` is the connection's data: the credential of its
    /// `connection_init` (or of the request), which every operation checks again. A query or
    /// mutation with `@defer` / `@stream` yields its incremental payloads; a `@live` query
    /// its result whenever it changes.
    pub fn execute_stream(
        self: &Arc<Self>,
        request: Request,
        connection: Option<Arc<Data>>,
        via: Transport,
    ) -> BoxStream<'static, Payload> {
        self.execute_stream_checked(request, connection, via).0
    }

    /// [`Pipeline::execute_stream`], with a flag set once the operation passed validation
    /// and began: until then, its first payload may still be a request error.
    pub fn execute_stream_checked(
        self: &Arc<Self>,
        request: Request,
        connection: Option<Arc<Data>>,
        via: Transport,
    ) -> (
        BoxStream<'static, Payload>,
        tokio::sync::watch::Receiver<bool>,
    ) {
        let (began, began_rx) = tokio::sync::watch::channel(false);
        let this = self.clone();
        let connection = connection.unwrap_or_default();
        let auth = connection
            .get(&std::any::TypeId::of::<RequestAuth>())
            .and_then(|d| d.downcast_ref::<RequestAuth>())
            .map(RequestAuth::unresolved);
        let metrics = self.state.metrics.clone();
        let stream = futures::stream::once(async move {
            let mut request = request;
            let query = std::mem::take(&mut request.query);
            let doc = Document::new(&query, Persisted::of(&request.extensions));
            let refused = |refused: Answer| {
                let mut response = refused.response;
                code_errors(Some(&metrics), &mut response);
                futures::stream::once(async move { Payload::Response(response) }).boxed()
            };
            let (prepared, request) = match this.prepare(doc, request, via).await {
                Ok(p) => p,
                Err(answer) => return refused(answer),
            };
            if let Err(answer) = this.coerce(&prepared, &request) {
                return refused(*answer);
            }
            let operation = request.operation_name.clone();
            if prepared.is_live(operation.as_deref()) {
                // Its first result comes at once, request error or not.
                return this.live_stream(prepared, request, auth).await;
            }
            let incremental = (prepared.uses_incremental()
                && prepared.operation_type(operation.as_deref())
                    != Some(OperationType::Subscription))
            .then(|| request.variables.clone());
            let validated = Validated::default();
            let schema = if prepared.is_validated() {
                validated.0.store(true, Ordering::Release);
                this.fast.clone()
            } else {
                this.strict.clone()
            };
            let usage_record = OperationUsage::new(&this.usage, &prepared, &request, auth.clone());
            let request = this.attach(request, &prepared, auth, validated.clone());
            let mut inner = schema.execute_stream_with_session_data(request, connection);
            let mut usage_record = Some(usage_record);
            let counted = prepared.clone();
            let responses = futures::stream::poll_fn(move |cx| {
                let next = inner.poll_next_unpin(cx);
                // Validation runs on the first poll: count once it has passed.
                if validated.0.load(Ordering::Acquire) {
                    if let Some(c) = usage_record.take() {
                        counted.mark_validated();
                        c.record();
                        began.send_replace(true);
                    }
                }
                next
            })
            .map(move |mut resp| {
                code_errors(Some(&metrics), &mut resp);
                resp
            });
            match incremental {
                None => responses.map(Payload::Response).boxed(),
                Some(variables) => responses
                    .flat_map(move |resp| {
                        let payloads = prepared.operation(operation.as_deref()).and_then(|op| {
                            incremental::split(&prepared.doc, op, &variables, &resp)
                        });
                        match payloads {
                            Some(p) => {
                                futures::stream::iter(p.into_iter().map(Payload::Incremental))
                                    .boxed()
                            }
                            None => {
                                futures::stream::once(async { Payload::Response(resp) }).boxed()
                            }
                        }
                    })
                    .boxed(),
            }
        })
        .flatten()
        .boxed();
        (stream, began_rx)
    }

    /// A live query: its first result, then each changed one (see [`live`]).
    async fn live_stream(
        self: &Arc<Self>,
        prepared: Arc<Prepared>,
        request: Request,
        auth: Option<RequestAuth>,
    ) -> BoxStream<'static, Payload> {
        let spec = live::Spec {
            who: memo::who(auth.as_ref().and_then(|a| a.header())),
            prepared,
            operation: request.operation_name.clone(),
            variables: request.variables,
            auth,
        };
        let first = Arc::new(self.live_execute(&spec, true).await);
        let head = futures::stream::once(futures::future::ready(first.response()));
        if first.terminal {
            return head.map(Payload::Response).boxed();
        }
        let rest = self.live.follow(self, spec, first);
        head.chain(rest).map(Payload::Response).boxed()
    }

    /// Whether the versions a live query read are still current; `None` when the cache
    /// cannot say.
    pub(super) async fn live_current(&self, reads: &[(String, i64)]) -> Option<bool> {
        if !self.state.cache_health.usable() {
            return None;
        }
        self.versions.current(reads).await.ok()
    }

    /// Runs a live query once, with its credential checked again (a refused one ends it).
    /// Only the `first` execution of a subscriber counts as an operation of its viewer.
    pub(super) async fn live_execute(&self, spec: &live::Spec, first: bool) -> live::Executed {
        let ticket = self.live.ticket();
        self.state.metrics.live_executions.inc();
        let prepared = &spec.prepared;
        let validated = Validated::default();
        let schema = if prepared.is_validated() {
            validated.0.store(true, Ordering::Release);
            &self.fast
        } else {
            &self.strict
        };
        let mut request = Request::new("").variables(spec.variables.clone());
        if let Some(op) = &spec.operation {
            request = request.operation_name(op.clone());
        }
        let auth = spec.auth.as_ref().map(RequestAuth::unresolved);
        let _count = first.then(|| {
            OperationUsage::new(&self.usage, prepared, &request, auth.clone())
                .armed_by(validated.clone())
        });
        let request = self.attach(request, prepared, auth.clone(), validated.clone());
        let (result, reads) = entity::scope::read::tracking(async {
            // Asked first, so a revoked credential ends the live query, and its result is
            // kept per credential.
            if let Some(a) = auth.as_ref().filter(|a| a.header().is_some()) {
                a.viewer().await?;
            }
            Ok::<_, crate::error::AppError>(schema.execute(request).await)
        })
        .await;
        let (mut response, mut terminal) = match result {
            Ok(response) => (response, false),
            Err(e) => {
                let e =
                    async_graphql::Error::from(e).into_server_error(async_graphql::Pos::default());
                (Response::from_errors(vec![e]), true)
            }
        };
        if validated.0.load(Ordering::Acquire) {
            prepared.mark_validated();
        } else {
            terminal = true;
        }
        let pure = reads.is_pure();
        if !pure && !terminal {
            let mut mode = async_graphql::indexmap::IndexMap::new();
            mode.insert(
                async_graphql::Name::new("mode"),
                async_graphql::Value::from("recheck"),
            );
            mode.insert(
                async_graphql::Name::new("intervalMs"),
                async_graphql::Value::from(live::RECHECK.as_millis() as u64),
            );
            response
                .extensions
                .insert("live".into(), async_graphql::Value::Object(mode));
        }
        code_errors(Some(&self.state.metrics), &mut response);
        let body = Bytes::from(serde_json::to_vec(&response).unwrap_or_default());
        live::Executed {
            ticket,
            response,
            body,
            reads: reads.entries,
            pure,
            until: reads.until,
            terminal,
        }
    }

    /// Steps 1 to 3: the document, its parse and the operation (its variables are coerced by
    /// [`Pipeline::coerce`]).
    async fn prepare(
        &self,
        doc: Document<'_>,
        request: Request,
        via: Transport,
    ) -> Result<(Arc<Prepared>, Request), Answer> {
        let prepared = self.document(doc).await?;
        let Some(op) = prepared.operation(request.operation_name.as_deref()) else {
            let message = match &request.operation_name {
                Some(name) => format!("the document has no operation named `{name}`"),
                None => "the document has several operations: name one in `operationName`".into(),
            };
            return Err(Answer::refused("BAD_USER_INPUT", message));
        };
        match (op.ty, via) {
            (OperationType::Mutation, Transport::Get) => {
                let mut refused = Answer::refused(
                    "BAD_USER_INPUT",
                    "mutations are not allowed over GET; send them with POST",
                );
                refused.outcome = Outcome::MutationOverGet;
                return Err(refused);
            }
            (OperationType::Subscription, Transport::Post | Transport::Get) => {
                return Err(Answer::refused(
                    "BAD_USER_INPUT",
                    "subscriptions run over the WebSocket at /graphql/ws or over \
                     Server-Sent Events at /graphql/stream",
                ))
            }
            (OperationType::Query, Transport::Post | Transport::Get)
                if prepared.is_live(request.operation_name.as_deref()) =>
            {
                return Err(Answer::refused(
                    "BAD_USER_INPUT",
                    "a `@live` query sends its result again whenever it changes: run it over \
                     the WebSocket at /graphql/ws or over Server-Sent Events at /graphql/stream",
                ))
            }
            _ => {}
        }
        Ok((prepared, request))
    }

    /// Step 3's end: the request's variable values against the operation's definitions.
    fn coerce(&self, prepared: &Prepared, request: &Request) -> Result<(), Box<Answer>> {
        match prepared.operation(request.operation_name.as_deref()) {
            Some(op) if !op.variable_definitions.is_empty() => self
                .inputs
                .coerce(op, &request.variables)
                .map_err(|e| Box::new(request_error(e))),
            _ => Ok(()),
        }
    }

    /// Steps 1 and 2: the request's document, sent or named by its hash, parsed.
    async fn document(&self, doc: Document<'_>) -> Result<Arc<Prepared>, Answer> {
        let query = doc.text;
        let apq =
            match doc.persisted {
                Persisted::No => None,
                Persisted::Hash(hash) => Some(hash),
                Persisted::Malformed => return Err(Answer::malformed(
                    "extensions.persistedQuery must be { version: 1, sha256Hash: <64 hex digits> }",
                )),
            };
        match (apq, query.is_empty()) {
            (None, true) => Err(Answer::malformed(
                "the request has no `query` (a GraphQL document)",
            )),
            (None, false) => {
                if self.persisted.only {
                    self.allowed(&persisted::sha256(query)).await?;
                }
                self.documents.prepare(query).map_err(request_error)
            }
            (Some(hash), true) => {
                // The parse by its hash: no text to hash or compare.
                if let Some(p) = self.by_hash.lock().get(&hash) {
                    return Ok(p.clone());
                }
                let text = match self.persisted.get(&hash).await {
                    Ok(Some(text)) => text,
                    Ok(None) => return Err(Answer::refused(
                        PERSISTED_QUERY_NOT_FOUND,
                        "PersistedQueryNotFound: send the document with its hash to register it",
                    )),
                    Err(e) => {
                        tracing::warn!(error = ?e, "reading a persisted query");
                        return Err(Answer::refused(
                            PERSISTED_QUERY_NOT_FOUND,
                            "PersistedQueryNotFound: send the document with its hash",
                        ));
                    }
                };
                let prepared = self.documents.prepare(&text).map_err(request_error)?;
                self.by_hash.lock().put(hash, prepared.clone());
                Ok(prepared)
            }
            (Some(hash), false) => {
                if persisted::sha256(query) != hash {
                    return Err(Answer::refused(
                        "BAD_USER_INPUT",
                        "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query",
                    ));
                }
                if self.persisted.only {
                    self.allowed(&hash).await?;
                } else if let Err(e) = self.persisted.register(&hash, query).await {
                    // The document still runs; the client registers it again next time.
                    tracing::warn!(error = ?e, "registering a persisted query");
                }
                self.documents.prepare(query).map_err(request_error)
            }
        }
    }

    /// In allow-list mode: refuses a document the operator did not register.
    async fn allowed(&self, hash: &[u8; 32]) -> Result<(), Answer> {
        match self.persisted.get(hash).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Answer::refused(
                ErrorCode::Forbidden.as_str(),
                "this server runs only registered documents, and this one is not registered",
            )),
            Err(e) => {
                tracing::warn!(error = ?e, "reading the persisted-query allow-list");
                Err(Answer::refused(
                    ErrorCode::Internal.as_str(),
                    "the allow-list of documents could not be read",
                ))
            }
        }
    }

    /// The request async-graphql runs: the parse (so it parses nothing), the credential, the
    /// loaders of this operation and the validation witness.
    fn attach(
        &self,
        mut request: Request,
        prepared: &Prepared,
        auth: Option<RequestAuth>,
        validated: Validated,
    ) -> Request {
        if self.keep_text {
            request.query = prepared.text.to_string();
        }
        request.set_parsed_query(prepared.doc.clone());
        let mut request = request.data(validated);
        if let Some(auth) = auth {
            request = request.data(auth);
        }
        crate::graphql::loaders::attach(request, &self.state)
    }
}

/// The variables of a JSON body, from their text: a map (`null` was absence already).
fn parse_variables(text: &str) -> Result<async_graphql::Variables, Box<Answer>> {
    serde_json::from_str(text).map_err(|e| {
        Box::new(Answer::malformed(&format!(
            "the body is not a GraphQL request: `variables` must be a map: {e}"
        )))
    })
}

/// A request refused for `e` (a parse or limit error) before it ran.
fn request_error(e: ServerError) -> Answer {
    Answer {
        response: Response::from_errors(vec![e]),
        outcome: Outcome::RequestError,
        body: None,
        incremental: None,
        to_split: None,
    }
}

/// Gives every error without a code `BAD_USER_INPUT` (parse, validation, depth, complexity,
/// argument coercion: all of them the client's input) and counts errors by code.
pub fn code_errors(metrics: Option<&Metrics>, resp: &mut Response) {
    for err in &mut resp.errors {
        let code = ensure_code(err, ErrorCode::BadUserInput.as_str());
        if let Some(m) = metrics {
            m.graphql_errors.with_label_values(&[code.as_str()]).inc();
        }
    }
}

/// Sets `code` on an error that has none; returns the error's code.
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

/// The usage record of one operation: each root field it runs, and its viewer. Armed, it
/// records when dropped — after the operation, or when a timeout cancels it — provided the operation
/// passed validation, so an operation that never ran counts nothing.
struct OperationUsage {
    usage: Arc<UsageBuffer>,
    fields: Arc<[async_graphql::Name]>,
    auth: Option<RequestAuth>,
}

impl OperationUsage {
    fn new(
        usage: &Arc<UsageBuffer>,
        prepared: &Prepared,
        request: &Request,
        auth: Option<RequestAuth>,
    ) -> Self {
        let fields = prepared.root_fields(request.operation_name.as_deref(), &request.variables);
        Self {
            usage: usage.clone(),
            fields,
            auth,
        }
    }

    fn record(self) {
        self.usage.record_fields(&self.fields);
        if let Some(auth) = &self.auth {
            self.usage.record_viewer(auth);
        }
    }

    fn armed_by(self, validated: Validated) -> UsageOnDrop {
        UsageOnDrop(Some((self, validated)))
    }
}

struct UsageOnDrop(Option<(OperationUsage, Validated)>);

impl Drop for UsageOnDrop {
    fn drop(&mut self) {
        if let Some((usage, validated)) = self.0.take() {
            if validated.0.load(Ordering::Acquire) {
                usage.record();
            }
        }
    }
}
