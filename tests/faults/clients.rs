//! The workload: concurrent clients writing unique prices and reading meals three ways, every
//! operation recorded with its call and return times into a [`History`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use history::{History, ListRead, Op, OpId, Outcome};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::rng::XorShift;

/// A value no write wrote, recorded for a price that is not a whole number (so the checker
/// reports it instead of the harness hiding it).
const NOT_AN_INTEGER: i64 = i64::MIN;

/// One kind of operation of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum OpClass {
    Write,
    ReadById,
    ReadByName,
    List,
}

impl OpClass {
    pub const ALL: [OpClass; 4] = [
        OpClass::Write,
        OpClass::ReadById,
        OpClass::ReadByName,
        OpClass::List,
    ];

    pub fn is_read(self) -> bool {
        self != OpClass::Write
    }

    pub fn name(self) -> &'static str {
        match self {
            OpClass::Write => "updateMeal",
            OpClass::ReadById => "meal(id)",
            OpClass::ReadByName => "mealByName",
            OpClass::List => "meals",
        }
    }
}

/// What the harness knows of one recorded operation beyond the history.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    pub op: OpId,
    pub class: OpClass,
    pub replica: usize,
    pub outcome: Outcome,
    /// Return − call, for operations that returned.
    pub latency_ns: Option<u64>,
}

/// A meal of the workload; its id is the history's key.
#[derive(Clone, Debug, Serialize)]
pub struct Meal {
    pub id: String,
    pub name: String,
    pub price: i64,
}

/// What every client shares.
pub struct Workload {
    /// `http://…` of each replica.
    pub replicas: Vec<String>,
    pub meals: Vec<Meal>,
    /// The cuisine only these meals have, for the list read.
    pub cuisine: String,
    /// A signed-in user's token, for the writes.
    pub token: String,
    pub clients: usize,
    pub request_timeout: Duration,
}

/// The shared record of a run.
pub struct Recorder {
    start: Instant,
    /// The wall clock at `start`, to find a time of the history in the replicas' logs.
    started_at: chrono::DateTime<chrono::Utc>,
    inner: Mutex<(History, Vec<Sample>)>,
    next_price: AtomicI64,
    /// Successful list reads that did not return exactly the workload's meals.
    incomplete_lists: AtomicUsize,
    /// Error answers and transport errors by message, for the report.
    errors: Mutex<BTreeMap<String, usize>>,
}

impl Recorder {
    /// Starts the clock; keys start at the meals' prices, written values above them all.
    pub fn new(meals: &[Meal]) -> Recorder {
        let mut history = History::new();
        for m in meals {
            history.initial(m.id.clone(), Some(m.price));
        }
        let top = meals.iter().map(|m| m.price).max().unwrap_or(0);
        Recorder {
            start: Instant::now(),
            started_at: chrono::Utc::now(),
            inner: Mutex::new((history, Vec::new())),
            next_price: AtomicI64::new(top.max(999) + 1),
            incomplete_lists: AtomicUsize::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn started_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.started_at
    }

    fn op(&self, op: Op, class: OpClass, replica: usize) {
        let latency_ns = op.ret.map(|r| r - op.call);
        let outcome = op.outcome();
        let mut g = self.inner.lock().unwrap();
        let id = OpId::Op(g.0.ops.len());
        g.0.push(op);
        g.1.push(Sample {
            op: id,
            class,
            replica,
            outcome,
            latency_ns,
        });
    }

    fn list(&self, list: ListRead, replica: usize) {
        let latency_ns = list.ret.map(|r| r - list.call);
        let outcome = list.outcome();
        let mut g = self.inner.lock().unwrap();
        let id = OpId::List(g.0.lists.len());
        g.0.push_list(list);
        g.1.push(Sample {
            op: id,
            class: OpClass::List,
            replica,
            outcome,
            latency_ns,
        });
    }

    fn error(&self, what: &str) {
        let key: String = what.chars().take(160).collect();
        *self.errors.lock().unwrap().entry(key).or_default() += 1;
    }

    /// The history, samples, incomplete lists and errors recorded.
    pub fn finish(&self) -> (History, Vec<Sample>, usize, BTreeMap<String, usize>) {
        let (h, s) = std::mem::take(&mut *self.inner.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (h, s, self.incomplete_lists.load(Ordering::SeqCst), errors)
    }
}

/// What a request came back with.
enum Answer {
    Data(Value),
    /// `UNAVAILABLE`, "nothing was written": definitely not applied.
    Refused,
    /// Another error answer (or an answer that is not GraphQL).
    Error(String),
    /// No answer: a timeout or a lost connection.
    Lost(String),
}

/// POSTs one GraphQL operation.
async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Answer {
    let mut req = http
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Answer::Lost(transport_error(&e)),
    };
    let status = resp.status();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Answer::Lost(transport_error(&e)),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return Answer::Error(format!("HTTP {status}, not JSON"));
    };
    match body.get("errors").and_then(Value::as_array) {
        Some(errors) if !errors.is_empty() => {
            let e = &errors[0];
            let code = e["extensions"]["code"].as_str().unwrap_or("");
            let message = e["message"].as_str().unwrap_or("");
            if code == "UNAVAILABLE" && message.contains("nothing was written") {
                Answer::Refused
            } else {
                Answer::Error(format!("{code}: {message}"))
            }
        }
        _ => Answer::Data(body["data"].clone()),
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    format!("{kind} error")
}

/// A price as the history's integer (`None`: no meal).
fn price_of(meal: &Value) -> Option<i64> {
    if meal.is_null() {
        return None;
    }
    match meal["price"].as_f64() {
        Some(p) if p.fract() == 0.0 && p.abs() < 9.0e15 => Some(p as i64),
        _ => Some(NOT_AN_INTEGER),
    }
}

/// Signs up a user and creates `count` meals of a cuisine of their own, through `url`.
pub async fn seed(url: &str, count: usize) -> Result<(String, String, Vec<Meal>), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let must = |a: Answer, what: &str| match a {
        Answer::Data(d) => Ok(d),
        Answer::Refused => Err(format!("{what}: refused")),
        Answer::Error(e) | Answer::Lost(e) => Err(format!("{what}: {e}")),
    };
    let username = format!("faults{tag}");
    let q = "mutation($u: String!) { createUser(username: $u, password: \"password123\") { id } }";
    must(
        gql(&http, url, None, q, json!({ "u": username })).await,
        "createUser",
    )?;
    let q = "mutation($u: String!) { login(username: $u, password: \"password123\") { token } }";
    let d = must(
        gql(&http, url, None, q, json!({ "u": username })).await,
        "login",
    )?;
    let token = d["login"]["token"]
        .as_str()
        .ok_or("login: no token")?
        .to_owned();
    let cuisine = format!("faults-{tag}");
    let mut meals = Vec::new();
    for i in 0..count {
        let name = format!("faults-{tag}-{i}");
        let q = "mutation($i: CreateMealInput!) { createMeal(input: $i) { id version price } }";
        let input = json!({ "i": { "name": name, "cuisine": cuisine, "price": (i + 1) as f64, "difficulty": "LOW" } });
        // A refusal wrote nothing and says to try again (a replica's sync, a busy machine).
        let mut answer = gql(&http, url, Some(&token), q, input.clone()).await;
        for _ in 0..50 {
            if !matches!(answer, Answer::Refused) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            answer = gql(&http, url, Some(&token), q, input.clone()).await;
        }
        let d = must(answer, "createMeal")?;
        let meal = &d["createMeal"];
        meals.push(Meal {
            id: meal["id"].as_str().ok_or("createMeal: no id")?.to_owned(),
            name,
            price: price_of(meal).ok_or("createMeal: no price")?,
        });
    }
    Ok((token, cuisine, meals))
}

const WRITE: &str =
    "mutation($id: ID!, $p: Float!) { updateMeal(id: $id, input: { price: $p }) { id price version } }";
const BY_ID: &str = "query($id: ID!) { meal(id: $id) { id price version } }";
const BY_NAME: &str = "query($n: String!) { mealByName(name: $n) { id price version } }";
const LIST: &str = "query($c: String!) { meals(first: 20, cuisine: $c) { nodes { id price } } }";

/// One client: random operations on random replicas until `stop`.
pub async fn client(
    index: usize,
    seed: u64,
    work: Arc<Workload>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(work.request_timeout)
        .build()
        .expect("an HTTP client");
    let mut rng = XorShift::new(seed, 1000 + index as u64);
    // A process whose operation is left pending continues as a new process (as in Jepsen).
    let mut process = index as u64;
    while !stop.load(Ordering::SeqCst) {
        let replica = rng.below(work.replicas.len() as u64) as usize;
        let meal = &work.meals[rng.below(work.meals.len() as u64) as usize];
        let url = work.replicas[replica].as_str();
        let class = match rng.below(100) {
            0..=29 => OpClass::Write,
            30..=54 => OpClass::ReadById,
            55..=79 => OpClass::ReadByName,
            _ => OpClass::List,
        };
        let key = meal.id.as_str();
        let call = rec.now();
        let outcome = match class {
            OpClass::Write => {
                let value = rec.next_price.fetch_add(1, Ordering::SeqCst);
                let vars = json!({ "id": key, "p": value as f64 });
                let answer = gql(&http, url, Some(&work.token), WRITE, vars).await;
                let ret = rec.now();
                let op = match answer {
                    Answer::Data(_) => Op::write(process, key, call, ret, value),
                    Answer::Refused => Op::write_failed(process, key, call, ret, value),
                    Answer::Error(e) | Answer::Lost(e) => {
                        rec.error(&format!("{}: {e}", class.name()));
                        Op::write_indeterminate(process, key, call, value)
                    }
                };
                let outcome = op.outcome();
                rec.op(op, class, replica);
                outcome
            }
            OpClass::ReadById | OpClass::ReadByName => {
                let (query, vars, field) = if class == OpClass::ReadById {
                    (BY_ID, json!({ "id": key }), "meal")
                } else {
                    (BY_NAME, json!({ "n": meal.name }), "mealByName")
                };
                let answer = gql(&http, url, None, query, vars).await;
                let ret = rec.now();
                let op = match answer {
                    Answer::Data(d) => Op::read(process, key, call, ret, price_of(&d[field])),
                    Answer::Refused => Op::read_failed(process, key, call, ret),
                    Answer::Error(e) => {
                        rec.error(&format!("{}: {e}", class.name()));
                        Op::read_failed(process, key, call, ret)
                    }
                    Answer::Lost(e) => {
                        rec.error(&format!("{}: {e}", class.name()));
                        Op::read_indeterminate(process, key, call)
                    }
                };
                let outcome = op.outcome();
                rec.op(op, class, replica);
                outcome
            }
            OpClass::List => {
                let answer = gql(&http, url, None, LIST, json!({ "c": work.cuisine })).await;
                let ret = rec.now();
                let list = match answer {
                    Answer::Data(d) => {
                        let nodes = d["meals"]["nodes"].as_array().cloned().unwrap_or_default();
                        let items: Vec<(String, i64)> = nodes
                            .iter()
                            .filter_map(|n| {
                                let id = n["id"].as_str()?.to_owned();
                                Some((id, price_of(n).unwrap_or(NOT_AN_INTEGER)))
                            })
                            .collect();
                        let complete = items.len() == work.meals.len()
                            && work
                                .meals
                                .iter()
                                .all(|m| items.iter().any(|(k, _)| *k == m.id));
                        if !complete {
                            rec.incomplete_lists.fetch_add(1, Ordering::SeqCst);
                        }
                        ListRead::new(process, call, ret, items)
                    }
                    Answer::Refused => ListRead::failed(process, call, ret),
                    Answer::Error(e) => {
                        rec.error(&format!("{}: {e}", class.name()));
                        ListRead::failed(process, call, ret)
                    }
                    Answer::Lost(e) => {
                        rec.error(&format!("{}: {e}", class.name()));
                        ListRead::indeterminate(process, call)
                    }
                };
                let outcome = list.outcome();
                rec.list(list, replica);
                outcome
            }
        };
        if outcome == Outcome::Indeterminate {
            process += work.clients as u64;
        }
    }
}
