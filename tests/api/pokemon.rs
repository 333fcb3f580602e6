//! Trainers, Pokémon, trades and CSV imports over HTTP and WebSocket (SPEC §7).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const TRAINER_FIELDS: &str = "id firstName lastName dateOfBirth";
const REPORT_FIELDS: &str = "importId rows inserted updated errors { row column message }";

/// POSTs `csv` to `importTrainers` / `importPokemons` as a GraphQL multipart request
/// (fields `operations`, `map`, `0`).
async fn import(app: &TestApp, token: &str, field: &str, csv: &str, dry_run: bool) -> Value {
    let query = format!(
        "mutation($file: Upload!, $dry: Boolean) {{ {field}(file: $file, dryRun: $dry) {{ {REPORT_FIELDS} }} }}"
    );
    upload(
        app,
        token,
        &query,
        json!({ "file": null, "dry": dry_run }),
        csv,
    )
    .await
}

/// POSTs `query` with `variables` and `csv` as the file at `variables.file`.
async fn upload(app: &TestApp, token: &str, query: &str, variables: Value, csv: &str) -> Value {
    let operations = json!({ "query": query, "variables": variables });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(csv.as_bytes().to_vec())
                .file_name("rows.csv")
                .mime_str("text/csv")
                .unwrap(),
        );
    app.client
        .post(format!("{}/graphql", app.url))
        .header("Authorization", format!("Bearer {token}"))
        .multipart(form)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON response")
}

/// A trainer CSV of `trainer1` … `trainerN`, as the seed's suite uses.
fn trainers_csv(n: usize) -> String {
    let mut csv = String::from("id,firstName,lastName,dateOfBirth\n");
    for i in 1..=n {
        csv.push_str(&format!(
            "trainer{i},First{i},Last{i},{:02}-0{}-19{}\n",
            (i % 28) + 1,
            (i % 9) + 1,
            70 + i % 30
        ));
    }
    csv
}

/// `per_trainer` Pokémon for each of `trainer1` … `trainerN`: `p<trainer>_<k>`.
fn pokemons_csv(trainers: usize, per_trainer: usize) -> String {
    let mut csv = String::from("id,nickname,species,level,owner,dateOfOwnership\n");
    let species = ["Pikachu", "Bulbasaur", "Charmander", "Squirtle"];
    for t in 1..=trainers {
        for k in 1..=per_trainer {
            csv.push_str(&format!(
                "p{t}_{k},Nick{t}_{k},{},{},trainer{t},15-06-2020\n",
                species[k % species.len()],
                (t + k) % 100 + 1
            ));
        }
    }
    csv
}

async fn import_ok(app: &TestApp, token: &str, field: &str, csv: &str) -> Value {
    let r = import(app, token, field, csv, false).await;
    assert_no_errors(&r);
    let report = r["data"][field].clone();
    assert_eq!(report["errors"], json!([]), "{report:#}");
    report
}

async fn owner_of(app: &TestApp, pokemon: &str) -> Value {
    let r = app
        .gql(
            "query($id: ID!) { pokemon(id: $id) { owner { id } ownerId dateOfOwnership } }",
            json!({ "id": pokemon }),
        )
        .await;
    assert_no_errors(&r);
    r["data"]["pokemon"]["owner"]["id"].clone()
}

/// Creates `trainer`, then `pokemon` (each a mutation's input), as `token`.
async fn trainer_with_a_pokemon(app: &TestApp, token: &str, trainer: Value, pokemon: Value) {
    for (mutation, input) in [
        (
            "mutation($i: CreateTrainerInput!) { createTrainer(input: $i) { id } }",
            trainer,
        ),
        (
            "mutation($i: CreatePokemonInput!) { createPokemon(input: $i) { id } }",
            pokemon,
        ),
    ] {
        assert_no_errors(&app.gql_as(token, mutation, json!({ "i": input })).await);
    }
}

async fn pokemon_count(app: &TestApp) -> i64 {
    let r = app
        .gql("{ pokemons(first: 1) { totalCount } }", json!({}))
        .await;
    assert_no_errors(&r);
    r["data"]["pokemons"]["totalCount"].as_i64().unwrap()
}

async fn trainer_count(app: &TestApp) -> i64 {
    let r = app
        .gql("{ trainers(first: 1) { totalCount } }", json!({}))
        .await;
    assert_no_errors(&r);
    r["data"]["trainers"]["totalCount"].as_i64().unwrap()
}

const TRADE: &str = "mutation($a: ID!, $b: ID!, $pa: [ID!]!, $pb: [ID!]!) {
    exchangePokemons(trainerA: $a, trainerB: $b, pokemonsA: $pa, pokemonsB: $pb) {
        id trainerA { id } trainerB { id } pokemonsA { id ownerId } pokemonsB { id ownerId } tradedAt
    }
}";

async fn the_trainer_csv_imports_and_pages_five_at_a_time(app: TestApp) {
    let token = app.login_new_user("ash").await;
    let report = import_ok(&app, &token, "importTrainers", &trainers_csv(12)).await;
    assert_eq!(report["rows"], 12);
    assert_eq!(report["inserted"], 12);
    assert_eq!(report["updated"], 0);
    assert!(!report["importId"].as_str().unwrap().is_empty());

    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = app
            .gql(
                &format!(
                    "query($after: String) {{ trainers(first: 5, after: $after) {{
                        totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {TRAINER_FIELDS} }} }} }} }}"
                ),
                json!({ "after": after }),
            )
            .await;
        assert_no_errors(&r);
        let conn = &r["data"]["trainers"];
        assert_eq!(conn["totalCount"], 12);
        pages += 1;
        for e in conn["edges"].as_array().unwrap() {
            seen.push(e["node"]["id"].as_str().unwrap().to_owned());
        }
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = (1..=12).map(|i| format!("trainer{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected);

    // CSV dates are DD-MM-YYYY; GraphQL answers ISO.
    let r = app
        .gql(
            &format!("{{ trainer(id: \"trainer1\") {{ {TRAINER_FIELDS} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(
        r["data"]["trainer"],
        json!({ "id": "trainer1", "firstName": "First1", "lastName": "Last1", "dateOfBirth": "1971-02-02" })
    );
}

async fn a_trainer_is_read_with_their_pokemon(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    let report = import_ok(&app, &token, "importPokemons", &pokemons_csv(3, 4)).await;
    assert_eq!(report["inserted"], 12);

    let r = app
        .gql(
            "{ trainer(id: \"trainer2\") { id pokemons { id nickname species level dateOfOwnership owner { id } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let pokemons = r["data"]["trainer"]["pokemons"].as_array().unwrap();
    let ids: Vec<&str> = pokemons.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["p2_1", "p2_2", "p2_3", "p2_4"]);
    assert_eq!(pokemons[0]["owner"]["id"], "trainer2");
    assert_eq!(pokemons[0]["dateOfOwnership"], "2020-06-15");
    assert_eq!(pokemons[0]["nickname"], "Nick2_1");

    let r = app
        .gql(
            "{ pokemons(first: 10, ownerId: \"trainer3\", species: \"Pikachu\") { totalCount edges { node { id species ownerId } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["pokemons"]["totalCount"], 1);
    assert_eq!(r["data"]["pokemons"]["edges"][0]["node"]["id"], "p3_4");

    let r = app
        .gql(
            "{ trainer(id: \"nobody\") { id } pokemon(id: \"nothing\") { id } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert!(r["data"]["trainer"].is_null());
    assert!(r["data"]["pokemon"].is_null());
}

/// A Pokémon of a list is answered in one pass when its selection is scalars only
/// (`pagination::fast`), and through async-graphql otherwise or when read by id: both ways must
/// answer every selection the same, in `pokemons` and in `Trainer.pokemons`.
async fn a_listed_pokemon_answers_every_selection_as_the_same_pokemon_by_id(app: TestApp) {
    let token = app.login_new_user("ash").await;
    trainer_with_a_pokemon(
        &app,
        &token,
        json!({ "id": "misty", "firstName": "Misty", "lastName": "W", "dateOfBirth": "1996-04-01" }),
        json!({ "id": "starmie4", "nickname": "Star", "species": "Starmie", "level": 30, "ownerId": "misty", "dateOfOwnership": "2020-01-02" }),
    )
    .await;
    // Several Pokémon in each list, and two trainers in a page: the first walk of a
    // selection learns its shape, the others follow it.
    trainer_with_a_pokemon(
        &app,
        &token,
        json!({ "id": "brock", "firstName": "Brock", "lastName": "S", "dateOfBirth": "1994-07-01" }),
        json!({ "id": "onix7", "nickname": "Rocky", "species": "Onix", "level": 41, "ownerId": "brock", "dateOfOwnership": "2019-03-04" }),
    )
    .await;
    for more in [
        json!({ "id": "starmie5", "nickname": "Shine", "species": "Starmie", "level": 12, "ownerId": "misty", "dateOfOwnership": "2021-05-06" }),
        json!({ "id": "staryu6", "nickname": "Yu", "species": "Staryu", "level": 8, "ownerId": "misty", "dateOfOwnership": "2022-12-31" }),
    ] {
        let r = app
            .gql_as(
                &token,
                "mutation($i: CreatePokemonInput!) { createPokemon(input: $i) { id } }",
                json!({ "i": more }),
            )
            .await;
        assert_no_errors(&r);
    }
    // By id order: Brock's one, then Misty's three.
    let ids = ["onix7", "starmie4", "starmie5", "staryu6"];
    let selections = [
        "id nickname species level ownerId dateOfOwnership",
        "a: id __typename ...P ... on Pokemon { l: level } ... { species }",
        "id @skip(if: $yes) level @include(if: $yes) nickname @include(if: $no)",
        "id owner { id firstName }",
        "nickname owner { lastName pokemons { id } } ...P",
        "level level l: level ...P",
    ];
    for selection in selections {
        let fragment = if selection.contains("...P") {
            "fragment P on Pokemon { nickname ownerId }"
        } else {
            ""
        };
        let vars = json!({ "yes": true, "no": false });
        let declared = crate::meals::flags_declared(selection);
        let query = |root: &str| {
            format!("query{declared} {{ {root} }} {fragment}").replace("SEL", selection)
        };
        let mut expected = Vec::new();
        for id in ids {
            let by_id = app
                .gql(
                    &query(&format!("pokemon(id: \"{id}\") {{ SEL }}")),
                    vars.clone(),
                )
                .await;
            assert_no_errors(&by_id);
            expected.push(by_id["data"]["pokemon"].clone());
        }
        let listed = app
            .gql(
                &query("pokemons(first: 4) { edges { node { SEL } } }"),
                vars.clone(),
            )
            .await;
        assert_no_errors(&listed);
        let nodes: Vec<Value> = (0..4)
            .map(|i| listed["data"]["pokemons"]["edges"][i]["node"].clone())
            .collect();
        assert_eq!(nodes, expected, "pokemons, selection `{selection}`");
        let owned = app
            .gql(
                &query("trainer(id: \"misty\") { pokemons { SEL } }"),
                vars.clone(),
            )
            .await;
        assert_no_errors(&owned);
        assert_eq!(
            owned["data"]["trainer"]["pokemons"],
            json!(expected[1..]),
            "Trainer.pokemons, selection `{selection}`"
        );
        // Through a page of trainers, whose Pokémon are loaded for the whole page at once.
        let paged = app
            .gql(
                &query("trainers(first: 2) { edges { node { pokemons { SEL } } } }"),
                vars,
            )
            .await;
        assert_no_errors(&paged);
        let edges = &paged["data"]["trainers"]["edges"];
        assert_eq!(
            (
                edges[0]["node"]["pokemons"].clone(),
                edges[1]["node"]["pokemons"].clone()
            ),
            (json!(expected[..1]), json!(expected[1..])),
            "trainers' pokemons, selection `{selection}`"
        );
    }
}

async fn trainers_and_pokemon_are_created_updated_and_deleted(app: TestApp) {
    let create_trainer = "mutation($input: CreateTrainerInput!) { createTrainer(input: $input) { id firstName dateOfBirth } }";
    let input = json!({ "id": "misty", "firstName": "Misty", "lastName": "W", "dateOfBirth": "1996-04-01" });
    let anon = app.gql(create_trainer, json!({ "input": input })).await;
    assert_eq!(error_code(&anon), "UNAUTHENTICATED");

    let token = app.login_new_user("ash").await;
    let r = app
        .gql_as(&token, create_trainer, json!({ "input": input }))
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["createTrainer"]["dateOfBirth"], "1996-04-01");
    let again = app
        .gql_as(&token, create_trainer, json!({ "input": input }))
        .await;
    assert_eq!(error_code(&again), "CONFLICT");
    let bad_date = app
        .gql_as(
            &token,
            create_trainer,
            json!({ "input": { "id": "x", "firstName": "X", "lastName": "Y", "dateOfBirth": "01-04-1996" } }),
        )
        .await;
    assert_eq!(error_code(&bad_date), "BAD_USER_INPUT");
    assert!(error_message(&bad_date).contains("dateOfBirth"));

    let create_pokemon = "mutation($input: CreatePokemonInput!) { createPokemon(input: $input) { id level owner { id } dateOfOwnership } }";
    let r = app
        .gql_as(
            &token,
            create_pokemon,
            json!({ "input": { "id": "starmie4", "nickname": "Star", "species": "Starmie", "level": 30, "ownerId": "misty", "dateOfOwnership": "2020-01-02" } }),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["createPokemon"]["owner"]["id"], "misty");
    for (input, field) in [
        (
            json!({ "id": "a1", "nickname": "A", "species": "S", "level": 101, "ownerId": "misty" }),
            "level",
        ),
        (
            json!({ "id": "a1", "nickname": "A", "species": "S", "level": 5, "ownerId": "ghost" }),
            "ownerId",
        ),
        (
            json!({ "id": "a b", "nickname": "A", "species": "S", "level": 5, "ownerId": "misty" }),
            "id",
        ),
    ] {
        let r = app
            .gql_as(&token, create_pokemon, json!({ "input": input }))
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r:#}");
        assert!(error_message(&r).contains(field), "{r:#}");
    }

    // Read (filling the cache), update, read again: the new values, never the cached ones.
    let read = "{ trainer(id: \"misty\") { firstName pokemons { id level nickname } } pokemon(id: \"starmie4\") { level nickname } }";
    let before = app.gql(read, json!({})).await;
    assert_eq!(before["data"]["pokemon"]["level"], 30);
    let r = app
        .gql_as(
            &token,
            "mutation { updateTrainer(id: \"misty\", input: { firstName: \"Kasumi\" }) { firstName lastName } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(
        r["data"]["updateTrainer"],
        json!({ "firstName": "Kasumi", "lastName": "W" })
    );
    let r = app
        .gql_as(
            &token,
            "mutation { updatePokemon(id: \"starmie4\", input: { level: 31, nickname: \"Twinkle\" }) { level nickname } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let after = app.gql(read, json!({})).await;
    assert_eq!(after["data"]["trainer"]["firstName"], "Kasumi");
    assert_eq!(
        after["data"]["pokemon"],
        json!({ "level": 31, "nickname": "Twinkle" })
    );
    let r = app
        .gql_as(
            &token,
            "mutation { updatePokemon(id: \"nope\", input: { level: 3 }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "NOT_FOUND");

    // A trainer who owns Pokémon is not deleted unless asked to cascade.
    let r = app
        .gql_as(
            &token,
            "mutation { deleteTrainer(id: \"misty\") }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "CONFLICT");
    assert_eq!(
        app.gql(read, json!({})).await["data"]["trainer"]["firstName"],
        "Kasumi"
    );
    let r = app
        .gql_as(
            &token,
            "mutation { deleteTrainer(id: \"misty\", cascade: true) }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let gone = app.gql(read, json!({})).await;
    assert_no_errors(&gone);
    assert!(gone["data"]["trainer"].is_null());
    assert!(gone["data"]["pokemon"].is_null());

    // The id can be used again, and the new row is read (not the deleted one's tombstone).
    let r = app
        .gql_as(&token, create_trainer, json!({ "input": input }))
        .await;
    assert_no_errors(&r);
    let r = app
        .gql_as(
            &token,
            create_pokemon,
            json!({ "input": { "id": "psyduck", "nickname": "Duck", "species": "Psyduck", "level": 9, "ownerId": "misty" } }),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(
        app.gql(read, json!({})).await["data"]["trainer"]["firstName"],
        "Misty"
    );
    let r = app
        .gql_as(
            &token,
            "mutation { deletePokemon(id: \"psyduck\") }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert!(app
        .gql("{ pokemon(id: \"psyduck\") { id } }", json!({}))
        .await["data"]["pokemon"]
        .is_null());
    let r = app
        .gql_as(
            &token,
            "mutation { deleteTrainer(id: \"misty\") }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let r = app
        .gql_as(
            &token,
            "mutation { deleteTrainer(id: \"misty\") }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "NOT_FOUND");
}

/// Opens a `graphql-transport-ws` subscription and returns the stream of its `next` payloads.
async fn subscribe(app: &TestApp, query: &str) -> impl futures::Stream<Item = Value> + Unpin {
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connects");
    ws.send(Message::Text(
        json!({ "type": "connection_init", "payload": {} })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    loop {
        let msg = ws.next().await.expect("ack").expect("ws message");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "connection_ack" {
                break;
            }
        }
    }
    ws.send(Message::Text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    Box::pin(ws.filter_map(|m| async move {
        match m {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).ok()?;
                (v["type"] == "next").then(|| v["payload"].clone())
            }
            _ => None,
        }
    }))
}

/// The next event of `stream` about trade `id` (events of other trades are skipped and
/// returned too, so callers can check what went by).
async fn event_of(
    stream: &mut (impl futures::Stream<Item = Value> + Unpin),
    id: &Value,
    limit: Duration,
) -> Option<(Value, Vec<Value>)> {
    let mut skipped = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .ok()??;
        let trade = event["data"]["tradeCompleted"].clone();
        if trade["id"] == *id {
            return Some((trade, skipped));
        }
        skipped.push(trade);
    }
}

/// Trades `p3_3` between trainer3 and trainer2 until `stream` reports one of those trades:
/// from then on the subscription is certainly live.
async fn until_live(
    app: &TestApp,
    token: &str,
    stream: &mut (impl futures::Stream<Item = Value> + Unpin),
) {
    for _ in 0..50 {
        let (a, b) = if owner_of(app, "p3_3").await == "trainer3" {
            ("trainer3", "trainer2")
        } else {
            ("trainer2", "trainer3")
        };
        let r = app
            .gql_as(
                token,
                TRADE,
                json!({ "a": a, "b": b, "pa": ["p3_3"], "pb": [] }),
            )
            .await;
        assert_no_errors(&r);
        let id = r["data"]["exchangePokemons"]["id"].clone();
        if event_of(stream, &id, Duration::from_millis(200))
            .await
            .is_some()
        {
            return;
        }
    }
    panic!("the subscription never went live");
}

async fn three_pokemon_of_trainer1_trade_for_two_of_trainer2(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    import_ok(&app, &token, "importPokemons", &pokemons_csv(3, 4)).await;
    // Fill the cache with the owners before the trade.
    for p in ["p1_1", "p1_2", "p1_3", "p2_1", "p2_2"] {
        owner_of(&app, p).await;
    }
    let mut events = subscribe(
        &app,
        "subscription { tradeCompleted(trainerId: \"trainer2\") { id trainerA { id } pokemonIdsA pokemonIdsB } }",
    )
    .await;
    let mut ignoring = subscribe(
        &app,
        "subscription { tradeCompleted(trainerId: \"trainer3\") { id } }",
    )
    .await;
    until_live(&app, &token, &mut events).await;
    until_live(&app, &token, &mut ignoring).await;

    let r = app
        .gql_as(
            &token,
            TRADE,
            json!({ "a": "trainer1", "b": "trainer2", "pa": ["p1_1", "p1_2", "p1_3"], "pb": ["p2_1", "p2_2"] }),
        )
        .await;
    assert_no_errors(&r);
    let trade = r["data"]["exchangePokemons"].clone();
    assert_eq!(trade["trainerA"]["id"], "trainer1");
    assert_eq!(trade["pokemonsA"].as_array().unwrap().len(), 3);
    for p in trade["pokemonsA"].as_array().unwrap() {
        assert_eq!(p["ownerId"], "trainer2");
    }
    for p in ["p1_1", "p1_2", "p1_3"] {
        assert_eq!(owner_of(&app, p).await, "trainer2", "{p}");
    }
    for p in ["p2_1", "p2_2"] {
        assert_eq!(owner_of(&app, p).await, "trainer1", "{p}");
    }
    for p in ["p1_4", "p2_3", "p2_4"] {
        let expected = &p[1..2];
        assert_eq!(owner_of(&app, p).await, format!("trainer{expected}"), "{p}");
    }
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let r = app
        .gql("{ pokemon(id: \"p1_1\") { dateOfOwnership } }", json!({}))
        .await;
    assert_eq!(r["data"]["pokemon"]["dateOfOwnership"], today);
    let r = app
        .gql(
            "{ a: trainer(id: \"trainer1\") { pokemons { id } } b: trainer(id: \"trainer2\") { pokemons { id } } }",
            json!({}),
        )
        .await;
    // (p3_3 went back and forth while the subscriptions warmed up.)
    let ids = |v: &Value| -> Vec<String> {
        v["pokemons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .filter(|id| id != "p3_3")
            .collect()
    };
    assert_eq!(ids(&r["data"]["a"]), ["p1_4", "p2_1", "p2_2"]);
    assert_eq!(
        ids(&r["data"]["b"]),
        ["p1_1", "p1_2", "p1_3", "p2_3", "p2_4"]
    );

    let r = app
        .gql(
            "{ trades(first: 10, trainerId: \"trainer1\") { totalCount edges { node { id pokemonIdsA pokemonsB { id } tradedAt } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["trades"]["totalCount"], 1);
    let node = &r["data"]["trades"]["edges"][0]["node"];
    assert_eq!(node["id"], trade["id"]);
    assert_eq!(node["pokemonIdsA"], json!(["p1_1", "p1_2", "p1_3"]));
    assert_eq!(
        node["pokemonsB"],
        json!([{ "id": "p2_1" }, { "id": "p2_2" }])
    );

    let (got, _) = event_of(&mut events, &trade["id"], Duration::from_secs(10))
        .await
        .expect("a tradeCompleted event for trainer2");
    assert_eq!(got["trainerA"]["id"], "trainer1");
    assert_eq!(got["pokemonIdsB"], json!(["p2_1", "p2_2"]));
    // trainer3's subscription does not see it: the next event it gets is trainer3's trade.
    let r = app
        .gql_as(
            &token,
            TRADE,
            json!({ "a": "trainer3", "b": "trainer1", "pa": ["p3_1"], "pb": [] }),
        )
        .await;
    assert_no_errors(&r);
    let (_, skipped) = event_of(
        &mut ignoring,
        &r["data"]["exchangePokemons"]["id"],
        Duration::from_secs(10),
    )
    .await
    .expect("a tradeCompleted event for trainer3");
    assert!(
        skipped.iter().all(|t| t["id"] != trade["id"]),
        "{skipped:?}"
    );
}

async fn a_stale_or_partly_wrong_trade_moves_nothing(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    import_ok(&app, &token, "importPokemons", &pokemons_csv(3, 3)).await;
    // p2_1 belongs to trainer2, not trainer1; `ghost` does not exist; p2_2 is fine.
    let r = app
        .gql_as(
            &token,
            TRADE,
            json!({ "a": "trainer1", "b": "trainer2", "pa": ["p1_1", "p2_1", "ghost"], "pb": ["p2_2", "p3_1"] }),
        )
        .await;
    assert_eq!(error_code(&r), "CONFLICT");
    let msg = error_message(&r);
    for offender in ["p2_1", "ghost", "p3_1"] {
        assert!(msg.contains(offender), "{msg}");
    }
    assert!(!msg.contains("p1_1") && !msg.contains("p2_2"), "{msg}");
    assert_eq!(owner_of(&app, "p1_1").await, "trainer1");
    assert_eq!(owner_of(&app, "p2_2").await, "trainer2");

    // A stale trade: p1_1 moved to trainer3 after the client last looked.
    let r = app
        .gql_as(
            &token,
            TRADE,
            json!({ "a": "trainer1", "b": "trainer3", "pa": ["p1_1"], "pb": [] }),
        )
        .await;
    assert_no_errors(&r);
    let r = app
        .gql_as(
            &token,
            TRADE,
            json!({ "a": "trainer1", "b": "trainer2", "pa": ["p1_1", "p1_2"], "pb": ["p2_1"] }),
        )
        .await;
    assert_eq!(error_code(&r), "CONFLICT");
    assert!(error_message(&r).contains("p1_1"));
    assert_eq!(owner_of(&app, "p1_2").await, "trainer1");
    assert_eq!(owner_of(&app, "p2_1").await, "trainer2");
    let r = app.gql("{ trades { totalCount } }", json!({})).await;
    assert_eq!(r["data"]["trades"]["totalCount"], 1);

    for (vars, field) in [
        (
            json!({ "a": "trainer1", "b": "trainer1", "pa": ["p1_2"], "pb": [] }),
            "trainerB",
        ),
        (
            json!({ "a": "trainer1", "b": "trainer2", "pa": [], "pb": [] }),
            "pokemonsA",
        ),
        (
            json!({ "a": "trainer1", "b": "trainer2", "pa": ["p1_2", "p1_2"], "pb": [] }),
            "pokemonsA",
        ),
        (
            json!({ "a": "nobody", "b": "trainer2", "pa": ["p1_2"], "pb": [] }),
            "trainerA",
        ),
    ] {
        let r = app.gql_as(&token, TRADE, vars).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r:#}");
        assert!(error_message(&r).contains(field), "{r:#}");
    }
}

async fn eight_concurrent_trades_of_one_pokemon_have_exactly_one_winner(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(9)).await;
    import_ok(&app, &token, "importPokemons", &pokemons_csv(9, 1)).await;
    // Eight trades each giving trainer1's p1_1 to a different trainer, for their own Pokémon.
    let trades = (2..=9).map(|t| {
        let app = &app;
        let token = &token;
        async move {
            app.gql_as(
                token,
                TRADE,
                json!({ "a": "trainer1", "b": format!("trainer{t}"), "pa": ["p1_1"], "pb": [format!("p{t}_1")] }),
            )
            .await
        }
    });
    let results = futures::future::join_all(trades).await;
    let winners: Vec<&Value> = results
        .iter()
        .filter(|r| r.get("errors").is_none_or(|e| e.is_null()))
        .collect();
    assert_eq!(winners.len(), 1, "{results:#?}");
    for r in results
        .iter()
        .filter(|r| r.get("errors").is_some_and(|e| !e.is_null()))
    {
        assert_eq!(error_code(r), "CONFLICT", "{r:#}");
    }
    let winner = winners[0]["data"]["exchangePokemons"]["trainerB"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(owner_of(&app, "p1_1").await, winner.as_str());
    for t in 2..=9 {
        let expected = if format!("trainer{t}") == winner {
            "trainer1".to_owned()
        } else {
            format!("trainer{t}")
        };
        assert_eq!(owner_of(&app, &format!("p{t}_1")).await, expected.as_str());
    }
    let r = app.gql("{ trades { totalCount } }", json!({})).await;
    assert_eq!(r["data"]["trades"]["totalCount"], 1);
}

async fn a_csv_with_bad_rows_writes_nothing_and_reports_each(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(2)).await;
    let csv = "id,nickname,species,level,owner,dateOfOwnership\n\
               good1,Good,Pikachu,5,trainer1,01-02-2020\n\
               bad2,,Pikachu,5,trainer1,01-02-2020\n\
               bad3,Nick,Pikachu,five,trainer1,01-02-2020\n\
               bad4,Nick,Pikachu,5,trainer1,2020-02-01\n\
               bad5,Nick,Pikachu,101,trainer1,01-02-2020\n\
               bad6,Nick,Pikachu,5,ghost,01-02-2020\n\
               good1,Again,Pikachu,5,trainer2,01-02-2020\n\
               good8,Fine,Eevee,50,trainer2,31-12-2019\n";
    let r = import(&app, &token, "importPokemons", csv, false).await;
    assert_no_errors(&r);
    let report = &r["data"]["importPokemons"];
    assert_eq!(report["rows"], 8);
    assert_eq!(report["inserted"], 0);
    assert_eq!(report["updated"], 0);
    let errors: Vec<(i64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_i64().unwrap(),
                e["column"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (2, "nickname".to_owned()),
            (3, "level".to_owned()),
            (4, "dateOfOwnership".to_owned()),
            (5, "level".to_owned()),
            (6, "owner".to_owned()),
            (7, "id".to_owned()),
        ],
        "{report:#}"
    );
    assert!(report["errors"][5]["message"]
        .as_str()
        .unwrap()
        .contains("row 1"));
    assert_eq!(pokemon_count(&app).await, 0);
    assert!(app
        .gql("{ pokemon(id: \"good8\") { id } }", json!({}))
        .await["data"]["pokemon"]
        .is_null());

    // A missing column is refused as a whole.
    let r = import(
        &app,
        &token,
        "importTrainers",
        "id,firstName,dateOfBirth\nx,y,01-01-2000\n",
        false,
    )
    .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert!(error_message(&r).contains("lastName"));
    assert_eq!(trainer_count(&app).await, 2);

    // Without a viewer nothing is even read.
    let anon = import(
        &app,
        "not-a-token",
        "importTrainers",
        &trainers_csv(3),
        false,
    )
    .await;
    assert_eq!(error_code(&anon), "UNAUTHENTICATED");
    assert_eq!(trainer_count(&app).await, 2);
}

async fn a_dry_run_writes_nothing(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(2)).await;
    let r = import(&app, &token, "importTrainers", &trainers_csv(5), true).await;
    assert_no_errors(&r);
    let report = &r["data"]["importTrainers"];
    assert_eq!(report["rows"], 5);
    assert_eq!(report["inserted"], 3);
    assert_eq!(report["updated"], 2);
    assert_eq!(report["errors"], json!([]));
    assert_eq!(trainer_count(&app).await, 2);
    // The staged rows are gone once the import answered.
    let staged = app
        .scan_keys(&format!("import:{}:", report["importId"].as_str().unwrap()))
        .await;
    assert!(staged.is_empty(), "{staged:?}");
}

/// `dryRun: Boolean = false`: left out of the arguments, declared as a variable and left out
/// of `variables` (CoerceArgumentValues: the default applies), or an explicit `null`, it is
/// `false` and the import writes.
async fn an_omitted_or_null_dry_run_imports_for_real(app: TestApp) {
    let token = app.login_new_user("ash").await;
    let mut trainers = 0;
    let mut pokemons = 0;
    for (how, args, variables) in [
        ("no dryRun argument", "", json!({ "file": null })),
        (
            "$dry left out of variables",
            ", dryRun: $dry",
            json!({ "file": null }),
        ),
        (
            "$dry null",
            ", dryRun: $dry",
            json!({ "file": null, "dry": null }),
        ),
        ("dryRun: null", ", dryRun: null", json!({ "file": null })),
    ] {
        trainers += 1;
        let declare = if args.contains("$dry") {
            ", $dry: Boolean"
        } else {
            ""
        };
        let query = format!(
            "mutation($file: Upload!{declare}) {{ importTrainers(file: $file{args}) {{ {REPORT_FIELDS} }} }}"
        );
        let r = upload(
            &app,
            &token,
            &query,
            variables.clone(),
            &trainers_csv(trainers),
        )
        .await;
        assert_no_errors(&r);
        assert_eq!(
            trainer_count(&app).await,
            trainers as i64,
            "importTrainers, {how}: {r}"
        );

        pokemons += 1;
        let query = format!(
            "mutation($file: Upload!{declare}) {{ importPokemons(file: $file{args}) {{ {REPORT_FIELDS} }} }}"
        );
        let r = upload(&app, &token, &query, variables, &pokemons_csv(1, pokemons)).await;
        assert_no_errors(&r);
        assert_eq!(
            pokemon_count(&app).await,
            pokemons as i64,
            "importPokemons, {how}: {r}"
        );
    }
    // And `true` still means a dry run.
    let r = import(&app, &token, "importTrainers", &trainers_csv(9), true).await;
    assert_no_errors(&r);
    assert_eq!(trainer_count(&app).await, trainers as i64);
}

/// `cascade: Boolean = false`: left out, left out of `variables`, or `null`, a trainer who
/// owns Pokémon is not deleted (`CONFLICT`); `true` deletes them and their Pokémon.
async fn an_omitted_or_null_cascade_refuses_to_delete_an_owner(app: TestApp) {
    let token = app.login_new_user("ash").await;
    trainer_with_a_pokemon(
        &app,
        &token,
        json!({ "id": "brock", "firstName": "Brock", "lastName": "H", "dateOfBirth": "1990-01-01" }),
        json!({ "id": "onix1", "nickname": "Rocky", "species": "Onix", "level": 20, "ownerId": "brock", "dateOfOwnership": "2020-01-01" }),
    )
    .await;
    for (how, query, variables) in [
        (
            "no cascade argument",
            "mutation { deleteTrainer(id: \"brock\") }",
            json!({}),
        ),
        (
            "$c left out of variables",
            "mutation($c: Boolean) { deleteTrainer(id: \"brock\", cascade: $c) }",
            json!({}),
        ),
        (
            "$c null",
            "mutation($c: Boolean) { deleteTrainer(id: \"brock\", cascade: $c) }",
            json!({ "c": null }),
        ),
        (
            "cascade: null",
            "mutation { deleteTrainer(id: \"brock\", cascade: null) }",
            json!({}),
        ),
    ] {
        let r = app.gql_as(&token, query, variables).await;
        assert_eq!(error_code(&r), "CONFLICT", "{how}: {r}");
        assert_eq!(trainer_count(&app).await, 1, "{how}");
    }
    let r = app
        .gql_as(
            &token,
            "mutation($c: Boolean) { deleteTrainer(id: \"brock\", cascade: $c) }",
            json!({ "c": true }),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["deleteTrainer"], true);
    assert_eq!(trainer_count(&app).await, 0);
    assert_eq!(pokemon_count(&app).await, 0);
}

async fn a_second_import_of_the_same_file_updates_instead_of_duplicating(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    let csv = pokemons_csv(3, 2);
    let first = import_ok(&app, &token, "importPokemons", &csv).await;
    assert_eq!(
        (first["inserted"].as_i64(), first["updated"].as_i64()),
        (Some(6), Some(0))
    );
    let read = "{ pokemon(id: \"p1_1\") { nickname level } }";
    assert_eq!(
        app.gql(read, json!({})).await["data"]["pokemon"]["nickname"],
        "Nick1_1"
    );

    let second = import_ok(&app, &token, "importPokemons", &csv).await;
    assert_eq!(
        (second["inserted"].as_i64(), second["updated"].as_i64()),
        (Some(0), Some(6))
    );
    assert_eq!(pokemon_count(&app).await, 6);

    // A changed file updates the rows, and the cached copies are not served any more.
    let changed = csv.replace("Nick1_1", "Renamed") + "p9_9,New,Eevee,3,trainer3,01-01-2021\n";
    let third = import_ok(&app, &token, "importPokemons", &changed).await;
    assert_eq!(
        (third["inserted"].as_i64(), third["updated"].as_i64()),
        (Some(1), Some(6))
    );
    assert_eq!(
        app.gql(read, json!({})).await["data"]["pokemon"]["nickname"],
        "Renamed"
    );
    assert_eq!(pokemon_count(&app).await, 7);

    // A Pokémon written through the hooks is cached; an import that changes it invalidates
    // the cached copy.
    let r = app
        .gql_as(
            &token,
            "mutation { createPokemon(input: { id: \"solo1\", nickname: \"Before\", species: \"Mew\", level: 7, ownerId: \"trainer1\" }) { id } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let solo = "{ pokemon(id: \"solo1\") { nickname level } }";
    let hits = "arena_cache_hits_total{entity=\"pokemon\"}";
    let before = app.metric(hits).await;
    assert_eq!(
        app.gql(solo, json!({})).await["data"]["pokemon"]["nickname"],
        "Before"
    );
    assert_eq!(
        app.metric(hits).await,
        before + 1.0,
        "served from the cache"
    );
    import_ok(
        &app,
        &token,
        "importPokemons",
        "id,nickname,species,level,owner,dateOfOwnership\nsolo1,After,Mew,8,trainer2,02-03-2021\n",
    )
    .await;
    assert_eq!(
        app.gql(solo, json!({})).await["data"]["pokemon"],
        json!({ "nickname": "After", "level": 8 })
    );
}

async fn listing_fifty_trainers_with_their_pokemon_costs_a_constant_number_of_queries(
    app: TestApp,
) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(50)).await;
    import_ok(&app, &token, "importPokemons", &pokemons_csv(50, 2)).await;
    let list = "query($n: Int) { trainers(first: $n) { edges { node { id pokemons { id } } } } }";
    let mut costs = Vec::new();
    for n in [5, 50] {
        let before = app
            .metric("arena_sql_queries_total{caller=\"request\"}")
            .await;
        let r = app.gql(list, json!({ "n": n })).await;
        assert_no_errors(&r);
        let edges = r["data"]["trainers"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), n);
        assert!(edges
            .iter()
            .all(|e| e["node"]["pokemons"].as_array().unwrap().len() == 2));
        costs.push(
            app.metric("arena_sql_queries_total{caller=\"request\"}")
                .await
                - before,
        );
    }
    // The same for 5 and for 50 trainers (no count: `totalCount` is not selected). On
    // PostgreSQL the page and its Pokémon are one statement; elsewhere the page, then one
    // batch of Pokémon. N+1 would cost 52.
    let per_list = if app.settings.database_url.starts_with("postgres") {
        1.0
    } else {
        2.0
    };
    assert_eq!(costs, [per_list, per_list], "queries for 5 vs 50 trainers");

    // With each Pokémon's owner too: reached through the trainer, the owner is known and
    // costs nothing more.
    let before = app
        .metric("arena_sql_queries_total{caller=\"request\"}")
        .await;
    let r = app
        .gql(
            "{ trainers(first: 50) { edges { node { id pokemons { owner { id } } } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    for e in r["data"]["trainers"]["edges"].as_array().unwrap() {
        for p in e["node"]["pokemons"].as_array().unwrap() {
            assert_eq!(p["owner"]["id"], e["node"]["id"]);
        }
    }
    let cost = app
        .metric("arena_sql_queries_total{caller=\"request\"}")
        .await
        - before;
    assert_eq!(
        cost, per_list,
        "queries for 50 trainers with their Pokémon and owners"
    );

    // Listing 100 Pokémon with their owners: the 100 owner lookups are one batch (50 distinct
    // trainers), never one query per Pokémon.
    let before = app
        .metric("arena_sql_queries_total{caller=\"request\"}")
        .await;
    let r = app
        .gql(
            "{ pokemons(first: 100) { edges { node { id owner { id } } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let edges = r["data"]["pokemons"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 100);
    // Count, page, one batch of owners (read through the cache; on a miss from SQL).
    let cost = app
        .metric("arena_sql_queries_total{caller=\"request\"}")
        .await
        - before;
    assert!(
        cost <= 3.0,
        "{cost} queries for 100 Pokémon with their owners"
    );
}

/// `solo1` (owned by `trainer2`), created through the hooks and read into the cache; returns
/// what a read of it answers.
async fn a_cached_pokemon(app: &TestApp, token: &str) -> Value {
    let r = app
        .gql_as(
            token,
            "mutation { createPokemon(input: { id: \"solo1\", nickname: \"Before\", species: \"Mew\", level: 7, ownerId: \"trainer2\" }) { id } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let first = read_solo(app).await;
    assert_eq!(first["nickname"], "Before");
    first
}

/// Reads `solo1`, each time with another alias: the memo of responses would otherwise
/// answer a repeated query without a cache read.
async fn read_solo(app: &TestApp) -> Value {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static READS: AtomicUsize = AtomicUsize::new(0);
    let alias = format!("r{}", READS.fetch_add(1, Ordering::Relaxed));
    let r = app
        .gql(
            &format!(
                "{{ {alias}: pokemon(id: \"solo1\") {{ nickname species level ownerId dateOfOwnership }} }}"
            ),
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    r["data"][&alias].clone()
}

/// `solo1` reads as `expected` and straight from the cache: its entry was neither changed
/// nor dropped, and no write mark was left on it (a marked entry reads as a miss).
///
/// A read that counts neither a hit nor a miss did not reach the cache tier: under load a
/// cache call timed out, and the replica reads the database until the tier answers again.
/// That says nothing about the entry, so the read is made again.
async fn solo_is_served_from_the_cache_as(app: &TestApp, expected: &Value) {
    let hits = "arena_cache_hits_total{entity=\"pokemon\"}";
    let misses = "arena_cache_misses_total{entity=\"pokemon\"}";
    for _ in 0..100 {
        let (hits_before, misses_before) = (app.metric(hits).await, app.metric(misses).await);
        assert_eq!(&read_solo(app).await, expected);
        if app.metric(hits).await == hits_before + 1.0 {
            return;
        }
        assert_eq!(
            app.metric(misses).await,
            misses_before,
            "solo1 missed the cache: its entry was changed, dropped or left marked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("solo1 was never read through the cache tier");
}

/// Whether the cache entry of Pokémon `id` (which has none) carries no write mark: a fill
/// after a leased miss is stored only on an unmarked key. The probe entry is removed.
async fn unmarked(app: &TestApp, id: &str) -> bool {
    let key = vec![arena::consistency::entry_key("pokemon", id)];
    let ttl = Duration::from_secs(60);
    let cache = app.state.cache.as_ref();
    let got = cache.leased_get_many(&key, "probe", ttl).await.unwrap();
    assert_eq!(got, vec![None], "{id} has no entry");
    let probe = arena::backends::cache::Versioned {
        version: 1,
        payload: "null".into(),
    };
    let stored = cache
        .leased_fill_many(&[(key[0].clone(), probe)], "probe", ttl)
        .await
        .unwrap();
    cache.invalidate(&key).await.unwrap();
    stored == [true]
}

/// A file of `rows` Pokémon rows: `solo1` changed first when `with_solo`, then new ids
/// `big1` …, then `last`.
fn big_csv(rows: usize, with_solo: bool, last: &str) -> String {
    let mut csv = String::from("id,nickname,species,level,owner,dateOfOwnership\n");
    let mut left = rows - 1;
    if with_solo {
        csv.push_str("solo1,After,Mew,9,trainer1,02-03-2021\n");
        left -= 1;
    }
    for i in 1..=left {
        csv.push_str(&format!(
            "big{i},Nick{i},Pikachu,{},trainer{},15-06-2020\n",
            i % 100 + 1,
            i % 3 + 1
        ));
    }
    csv.push_str(last);
    csv.push('\n');
    csv
}

/// After a failed import: nothing of the file was written, `solo1` is still served from
/// the cache as it was, and the file's new ids carry no write mark.
async fn nothing_was_written_and_the_cache_is_as_it_was(app: &TestApp, solo: &Value) {
    assert_eq!(pokemon_count(app).await, 1);
    solo_is_served_from_the_cache_as(app, solo).await;
    for id in ["big1", "big9000"] {
        assert!(app
            .gql(&format!("{{ pokemon(id: \"{id}\") {{ id }} }}"), json!({}))
            .await["data"]["pokemon"]
            .is_null());
        assert!(unmarked(app, id).await, "{id} was left marked");
    }
    let staged = app.scan_keys("import:").await;
    assert!(staged.is_empty(), "{staged:?}");
}

/// A bad row at the end of a large file, or an unknown owner there, means nothing is
/// written: not the 19 999 good rows before it, not the change to a cached Pokémon, and the
/// cache is left exactly as it was.
async fn a_bad_row_at_the_end_of_a_large_file_writes_nothing_and_leaves_the_cache_be(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    let solo = a_cached_pokemon(&app, &token).await;
    for (last, column) in [
        ("late,Nick,Pikachu,101,trainer1,01-02-2020", "level"),
        ("late,Nick,Pikachu,5,ghost,01-02-2020", "owner"),
    ] {
        let r = import(
            &app,
            &token,
            "importPokemons",
            &big_csv(20_000, true, last),
            false,
        )
        .await;
        assert_no_errors(&r);
        let report = &r["data"]["importPokemons"];
        assert_eq!(report["rows"], 20_000);
        assert_eq!(
            (&report["inserted"], &report["updated"]),
            (&json!(0), &json!(0))
        );
        let errors = report["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{report:#}");
        assert_eq!(
            (&errors[0]["row"], &errors[0]["column"]),
            (&json!(20_000), &json!(column))
        );
        nothing_was_written_and_the_cache_is_as_it_was(&app, &solo).await;
    }
}

/// PostgreSQL: a row the database refuses although it passed validation (here a `CHECK`
/// constraint the test adds) fails the import during the write, after the ids were marked:
/// the transaction rolls back and the marks are cleared, both when the rows go through the
/// temporary table (the file updates `solo1`) and when they are copied straight into the
/// table (every id is new).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_fails_in_the_database_leaves_it_and_the_cache_as_they_were() {
    let Some(app) = TestApp::builder(Backends::Real).try_spawn().await else {
        return;
    };
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    let solo = a_cached_pokemon(&app, &token).await;
    use sea_orm::ConnectionTrait;
    app.state
        .db
        .execute_unprepared(
            "ALTER TABLE pokemons ADD CONSTRAINT no_doom CHECK (nickname <> 'Doom')",
        )
        .await
        .unwrap();
    for with_solo in [true, false] {
        let csv = big_csv(20_000, with_solo, "late,Doom,Pikachu,5,trainer1,01-02-2020");
        let r = import(&app, &token, "importPokemons", &csv, false).await;
        assert_eq!(error_code(&r), "INTERNAL", "{r:#}");
        nothing_was_written_and_the_cache_is_as_it_was(&app, &solo).await;
    }
    // The same file without the refused row imports.
    let csv = big_csv(20_000, true, "late,Fine,Pikachu,5,trainer1,01-02-2020");
    let report = import_ok(&app, &token, "importPokemons", &csv).await;
    assert_eq!(
        (&report["inserted"], &report["updated"]),
        (&json!(19_999), &json!(1))
    );
    assert_eq!(read_solo(&app).await["nickname"], "After");
}

/// PostgreSQL: the owners of an import are locked for its transaction (`FOR KEY SHARE`, set
/// for the whole file at once, in place of the foreign key's check of every row): a trainer
/// deleted by a transaction that held its row while the import started makes the import
/// write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_deleted_while_the_import_waits_for_it_means_nothing_is_written() {
    let Some(app) = TestApp::builder(Backends::Real).try_spawn().await else {
        return;
    };
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let deleter = app.state.db.begin().await.unwrap();
    deleter
        .execute_unprepared("SELECT id FROM trainers WHERE id = 'trainer1' FOR UPDATE")
        .await
        .unwrap();
    let csv = big_csv(5_000, false, "late,Nick,Pikachu,5,trainer2,01-02-2020");
    let importing = async {
        let r = import(&app, &token, "importPokemons", &csv, false).await;
        (r, std::time::Instant::now())
    };
    let deleting = async {
        // Once the import waits for trainer1's row lock (not before: a busy machine may take
        // longer than any fixed delay to get there).
        let db = &app.state.db;
        wait_until(Duration::from_secs(60), || async move {
            let waiting = db
                .query_one(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                ))
                .await
                .unwrap()
                .and_then(|row| row.try_get::<i64>("", "n").ok())
                .unwrap_or(0);
            waiting > 0
        })
        .await;
        deleter
            .execute_unprepared("DELETE FROM trainers WHERE id = 'trainer1'")
            .await
            .unwrap();
        deleter.commit().await.unwrap();
        std::time::Instant::now()
    };
    let ((r, answered), deleted) = tokio::join!(importing, deleting);
    assert!(answered > deleted, "the import waited for trainer1's row");
    assert_eq!(error_code(&r), "CONFLICT", "{r:#}");
    assert!(
        error_message(&r).contains("deleted during the import"),
        "{r:#}"
    );
    assert_eq!(pokemon_count(&app).await, 0);
    assert_eq!(trainer_count(&app).await, 2);
}

/// A bulk write (a CSV import of hundreds of rows) wakes the live queries over what it wrote:
/// a list and a row it updated (the change event names the kinds of keys, not each key).
async fn a_csv_import_updates_live_queries_over_what_it_wrote(app: TestApp) {
    let token = app.login_new_user("ash").await;
    import_ok(&app, &token, "importTrainers", &trainers_csv(3)).await;
    import_ok(
        &app,
        &token,
        "importPokemons",
        &big_csv(3, true, "x1,Before,Mew,1,trainer2,01-02-2020"),
    )
    .await;
    let mut ws =
        crate::support::ws::connect(&app.ws_url(), crate::support::ws::TRANSPORT_WS, json!({}))
            .await;
    ws.subscribe(
        "list",
        "query @live { pokemons(first: 1, ownerId: \"trainer2\") { totalCount } }",
        json!({}),
    )
    .await;
    let first = ws.next_data(Duration::from_secs(10)).await.unwrap();
    let before = first["data"]["pokemons"]["totalCount"].as_i64().unwrap();
    ws.subscribe(
        "one",
        "query @live { pokemon(id: \"solo1\") { nickname } }",
        json!({}),
    )
    .await;
    let one = ws.next_data(Duration::from_secs(10)).await.unwrap();
    assert_eq!(one["data"]["pokemon"]["nickname"], "After");

    let csv = big_csv(600, true, "x2,Late,Mew,1,trainer2,01-02-2020")
        .replace("solo1,After", "solo1,Renamed");
    import_ok(&app, &token, "importPokemons", &csv).await;
    let (mut list, mut renamed) = (None, None);
    while list.is_none() || renamed.is_none() {
        let m = ws
            .next_message(Duration::from_secs(10))
            .await
            .expect("both live queries updated");
        match m.id.as_str() {
            "list" => {
                list = Some(
                    m.payload["data"]["pokemons"]["totalCount"]
                        .as_i64()
                        .unwrap(),
                )
            }
            "one" => renamed = Some(m.payload["data"]["pokemon"]["nickname"].clone()),
            _ => {}
        }
    }
    assert!(list.unwrap() > before, "{list:?} after {before}");
    assert_eq!(renamed.unwrap(), "Renamed");
    ws.close().await;
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    a_csv_import_updates_live_queries_over_what_it_wrote,
    a_bad_row_at_the_end_of_a_large_file_writes_nothing_and_leaves_the_cache_be,
    the_trainer_csv_imports_and_pages_five_at_a_time,
    a_trainer_is_read_with_their_pokemon,
    a_listed_pokemon_answers_every_selection_as_the_same_pokemon_by_id,
    trainers_and_pokemon_are_created_updated_and_deleted,
    three_pokemon_of_trainer1_trade_for_two_of_trainer2,
    a_stale_or_partly_wrong_trade_moves_nothing,
    eight_concurrent_trades_of_one_pokemon_have_exactly_one_winner,
    a_csv_with_bad_rows_writes_nothing_and_reports_each,
    a_dry_run_writes_nothing,
    an_omitted_or_null_dry_run_imports_for_real,
    an_omitted_or_null_cascade_refuses_to_delete_an_owner,
    a_second_import_of_the_same_file_updates_instead_of_duplicating,
    listing_fifty_trainers_with_their_pokemon_costs_a_constant_number_of_queries,
}
