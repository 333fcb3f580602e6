//! Specs over HTTP (SPEC §5): every access pattern, per-user isolation and input errors.

use serde_json::{json, Value};

use crate::support::sql::assert_indexed;
use crate::support::*;

const PUT: &str = "mutation($input: PutSpecInput!) {
    putSpec(input: $input) { id version modelCount title description updatedAt revision }
}";

async fn put(app: &TestApp, token: &str, id: &str, version: &str, model_count: i64) -> Value {
    let r = app
        .gql_as(
            token,
            PUT,
            json!({ "input": { "id": id, "version": version, "modelCount": model_count } }),
        )
        .await;
    assert_no_errors(&r);
    r["data"]["putSpec"].clone()
}

async fn query(app: &TestApp, token: &str, q: &str, vars: Value) -> Value {
    let r = app.gql_as(token, q, vars).await;
    assert_no_errors(&r);
    r["data"].clone()
}

async fn put_spec_creates_a_spec_and_spec_returns_its_latest_version(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let r = app
        .gql_as(
            &alice,
            PUT,
            json!({ "input": { "id": "resnet", "version": "1.0", "modelCount": 3,
                               "title": "ResNet", "description": "image models" } }),
        )
        .await;
    assert_no_errors(&r);
    let created = &r["data"]["putSpec"];
    assert_eq!(created["id"], "resnet");
    assert_eq!(created["title"], "ResNet");
    assert_eq!(created["revision"], 1);
    put(&app, &alice, "resnet", "1.1", 5).await;

    let d = query(
        &app,
        &alice,
        "query($id: String!) { spec(id: $id) { id version modelCount title description revision } }",
        json!({ "id": "resnet" }),
    )
    .await;
    assert_eq!(d["spec"]["version"], "1.1");
    assert_eq!(d["spec"]["modelCount"], 5);
    assert_eq!(d["spec"]["revision"], 2);
    assert!(
        d["spec"]["title"].is_null(),
        "a version carries its own title"
    );

    let missing = query(&app, &alice, "{ spec(id: \"nope\") { id } }", json!({})).await;
    assert!(missing["spec"].is_null());
}

async fn two_versions_put_back_to_back_in_the_same_second_are_both_kept_newest_first(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let first = put(&app, &alice, "bert", "a", 1).await;
    let second = put(&app, &alice, "bert", "b", 2).await;
    assert_eq!(first["revision"], 1);
    assert_eq!(second["revision"], 2);

    let d = query(
        &app,
        &alice,
        "{ specVersions(id: \"bert\") { version modelCount revision updatedAt } }",
        json!({}),
    )
    .await;
    let versions = d["specVersions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "both versions are kept: {d:#}");
    assert_eq!(versions[0]["version"], "b");
    assert_eq!(versions[1]["version"], "a");
    let latest = query(
        &app,
        &alice,
        "{ spec(id: \"bert\") { version } }",
        json!({}),
    )
    .await;
    assert_eq!(latest["spec"]["version"], "b");
}

async fn spec_versions_lists_every_version_newest_first(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    for i in 1..=6 {
        put(&app, &alice, "gpt", &format!("v{i}"), i).await;
    }
    put(&app, &alice, "other", "x", 1).await;
    let d = query(
        &app,
        &alice,
        "{ all: specVersions(id: \"gpt\") { version revision }
           top: specVersions(id: \"gpt\", first: 2) { version }
           none: specVersions(id: \"nope\") { version } }",
        json!({}),
    )
    .await;
    let all: Vec<&str> = d["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["v6", "v5", "v4", "v3", "v2", "v1"]);
    assert_eq!(d["top"], json!([{ "version": "v6" }, { "version": "v5" }]));
    assert_eq!(d["none"], json!([]));
}

async fn specs_lists_the_latest_version_of_each_spec(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    put(&app, &alice, "b-spec", "1", 1).await;
    put(&app, &alice, "a-spec", "1", 1).await;
    put(&app, &alice, "b-spec", "2", 2).await;
    put(&app, &alice, "a-spec", "2", 2).await;
    put(&app, &alice, "a-spec", "3", 3).await;
    let d = query(&app, &alice, "{ specs { id version } }", json!({})).await;
    assert_eq!(
        d["specs"],
        json!([{ "id": "a-spec", "version": "3" }, { "id": "b-spec", "version": "2" }])
    );
}

async fn model_count_sums_the_latest_model_count_of_each_spec(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let d = query(&app, &alice, "{ modelCount }", json!({})).await;
    assert_eq!(d["modelCount"], 0);
    put(&app, &alice, "one", "1", 10).await;
    put(&app, &alice, "one", "2", 4).await;
    put(&app, &alice, "two", "1", 7).await;
    let d = query(&app, &alice, "{ modelCount }", json!({})).await;
    assert_eq!(d["modelCount"], 11, "4 (latest of `one`) + 7");
}

async fn delete_spec_removes_every_version_and_returns_how_many(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    for v in ["1", "2", "3"] {
        put(&app, &alice, "gone", v, 1).await;
    }
    put(&app, &alice, "kept", "1", 2).await;
    let d = query(
        &app,
        &alice,
        "mutation { deleteSpec(id: \"gone\") }",
        json!({}),
    )
    .await;
    assert_eq!(d["deleteSpec"], 3);
    let d = query(
        &app,
        &alice,
        "{ spec(id: \"gone\") { id } specVersions(id: \"gone\") { id } specs { id } modelCount }",
        json!({}),
    )
    .await;
    assert!(d["spec"].is_null());
    assert_eq!(d["specVersions"], json!([]));
    assert_eq!(d["specs"], json!([{ "id": "kept" }]));
    assert_eq!(d["modelCount"], 2);
    let again = query(
        &app,
        &alice,
        "mutation { deleteSpec(id: \"gone\") }",
        json!({}),
    )
    .await;
    assert_eq!(again["deleteSpec"], 0);
    // A deleted spec starts again from its first revision.
    assert_eq!(put(&app, &alice, "gone", "new", 1).await["revision"], 1);
}

async fn delete_all_specs_removes_every_version_of_every_spec_of_the_viewer(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    put(&app, &alice, "a", "1", 1).await;
    put(&app, &alice, "a", "2", 1).await;
    put(&app, &alice, "b", "1", 1).await;
    let d = query(&app, &alice, "mutation { deleteAllSpecs }", json!({})).await;
    assert_eq!(d["deleteAllSpecs"], 3);
    let d = query(&app, &alice, "{ specs { id } modelCount }", json!({})).await;
    assert_eq!(d["specs"], json!([]));
    assert_eq!(d["modelCount"], 0);
}

async fn another_user_can_neither_read_list_count_nor_delete_someone_elses_specs(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    put(&app, &alice, "secret-spec", "1", 5).await;
    put(&app, &alice, "secret-spec", "2", 6).await;

    let d = query(
        &app,
        &bob,
        "{ spec(id: \"secret-spec\") { id } specs { id } specVersions(id: \"secret-spec\") { id }
           modelCount }",
        json!({}),
    )
    .await;
    assert!(d["spec"].is_null());
    assert_eq!(d["specs"], json!([]));
    assert_eq!(d["specVersions"], json!([]));
    assert_eq!(d["modelCount"], 0);
    let d = query(
        &app,
        &bob,
        "mutation { deleteSpec(id: \"secret-spec\") deleteAllSpecs }",
        json!({}),
    )
    .await;
    assert_eq!(d["deleteSpec"], 0);
    assert_eq!(d["deleteAllSpecs"], 0);

    // Bob's spec of the same id is his own, and Alice's is untouched.
    assert_eq!(
        put(&app, &bob, "secret-spec", "mine", 1).await["revision"],
        1
    );
    let d = query(
        &app,
        &alice,
        "{ spec(id: \"secret-spec\") { version } specVersions(id: \"secret-spec\") { version }
           modelCount }",
        json!({}),
    )
    .await;
    assert_eq!(d["spec"]["version"], "2");
    assert_eq!(d["specVersions"].as_array().unwrap().len(), 2);
    assert_eq!(d["modelCount"], 6);
}

async fn specs_need_a_signed_in_viewer(app: TestApp) {
    for q in [
        "{ specs { id } }",
        "{ modelCount }",
        "{ spec(id: \"x\") { id } }",
        "mutation { deleteAllSpecs }",
    ] {
        let r = app.gql(q, json!({})).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{q}");
    }
}

async fn put_spec_refuses_bad_input_and_names_the_field(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    for (input, field) in [
        (json!({ "id": "", "version": "1", "modelCount": 1 }), "id"),
        (
            json!({ "id": "x".repeat(129), "version": "1", "modelCount": 1 }),
            "id",
        ),
        (
            json!({ "id": "ok", "version": "", "modelCount": 1 }),
            "version",
        ),
        (
            json!({ "id": "ok", "version": "1", "modelCount": -1 }),
            "modelCount",
        ),
        (
            json!({ "id": "ok", "version": "1", "modelCount": 1, "title": "t".repeat(300) }),
            "title",
        ),
    ] {
        let r = app.gql_as(&alice, PUT, json!({ "input": input })).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{input}");
        assert_eq!(r["errors"][0]["extensions"]["field"], field, "{r:#}");
        assert!(error_message(&r).contains(field), "{r:#}");
    }
    let d = query(&app, &alice, "{ specs { id } }", json!({})).await;
    assert_eq!(d["specs"], json!([]), "a refused put writes nothing");
}

async fn concurrent_puts_of_one_spec_get_distinct_revisions_and_one_latest(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let puts = (0..8).map(|i| {
        let (app, alice) = (&app, &alice);
        async move { put(app, alice, "hot", &format!("v{i}"), i).await }
    });
    let results = futures::future::join_all(puts).await;
    let mut revisions: Vec<i64> = results
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    revisions.sort();
    assert_eq!(revisions, (1..=8).collect::<Vec<_>>());
    let d = query(
        &app,
        &alice,
        "{ specs { id revision } spec(id: \"hot\") { revision } specVersions(id: \"hot\") { revision } }",
        json!({}),
    )
    .await;
    assert_eq!(d["specs"], json!([{ "id": "hot", "revision": 8 }]));
    assert_eq!(d["spec"]["revision"], 8);
    assert_eq!(d["specVersions"].as_array().unwrap().len(), 8);
}

async fn every_spec_access_pattern_is_one_index_search(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    for i in 0..20 {
        put(&app, &alice, &format!("s{}", i % 3), "v", i).await;
    }
    for sql in [
        // spec(id), and the next revision of putSpec
        "SELECT * FROM specs WHERE user_id = 1 AND spec_id = 's1' ORDER BY seq DESC LIMIT 1",
        "SELECT MAX(seq) FROM specs WHERE user_id = 1 AND spec_id = 's1'",
        // specs
        "SELECT * FROM specs WHERE user_id = 1 AND latest = true ORDER BY spec_id",
        // specVersions(id)
        "SELECT * FROM specs WHERE user_id = 1 AND spec_id = 's1' ORDER BY seq DESC",
        // modelCount
        "SELECT SUM(model_count) FROM specs WHERE user_id = 1 AND latest = true",
        // putSpec: the older versions stop being the latest
        "UPDATE specs SET latest = false WHERE user_id = 1 AND spec_id = 's1' AND latest = true AND seq < 9",
        // deleteSpec(id), deleteAllSpecs
        "DELETE FROM specs WHERE user_id = 1 AND spec_id = 's1'",
        "DELETE FROM specs WHERE user_id = 1",
    ] {
        assert_indexed(&app, sql).await;
    }
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    put_spec_creates_a_spec_and_spec_returns_its_latest_version,
    two_versions_put_back_to_back_in_the_same_second_are_both_kept_newest_first,
    spec_versions_lists_every_version_newest_first,
    specs_lists_the_latest_version_of_each_spec,
    model_count_sums_the_latest_model_count_of_each_spec,
    delete_spec_removes_every_version_and_returns_how_many,
    delete_all_specs_removes_every_version_of_every_spec_of_the_viewer,
    another_user_can_neither_read_list_count_nor_delete_someone_elses_specs,
    specs_need_a_signed_in_viewer,
    put_spec_refuses_bad_input_and_names_the_field,
    concurrent_puts_of_one_spec_get_distinct_revisions_and_one_latest,
    every_spec_access_pattern_is_one_index_search,
}
