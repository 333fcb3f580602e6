//! The GraphiQL page: an example document that needs no login, a visible hint on
//! `Authorization`, and assets from `ARENA_GRAPHIQL_ASSETS`. (A browser drives it end to end
//! in `conformance/graphiql.mjs`.)

use crate::support::*;

async fn page(app: &TestApp) -> String {
    let resp = app
        .client
        .get(format!("{}/", app.url))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

async fn graphiql_opens_with_a_public_example_and_an_authorization_hint(app: TestApp) {
    let html = page(&app).await;
    assert!(html.contains("<title>Arena</title>"));
    assert!(html.contains("id=\"arena-hint\""), "a visible hint");
    assert!(html.contains("Authorization"), "the hint names the header");
    assert!(html.contains("Bearer &lt;token from login&gt;"));
    // The example document reads the public meal catalogue, and works without a viewer.
    assert!(html.contains("'  meals(first: 5) {',"));
    let r = app
        .gql(
            "{ meals(first: 5) { totalCount edges { node { id name cuisine price winPct } } } }",
            serde_json::json!({}),
        )
        .await;
    assert_no_errors(&r);
    // Assets from the public CDN by default.
    assert!(html.contains("src=\"https://unpkg.com/graphiql@"));
}

async fn graphiql_loads_its_assets_from_the_configured_mirror(app: TestApp) {
    let html = page(&app).await;
    assert!(html.contains("src=\"https://mirror.example/npm/react@"));
    assert!(html.contains("href=\"https://mirror.example/npm/graphiql@"));
    assert!(!html.contains("unpkg.com"));
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    graphiql_opens_with_a_public_example_and_an_authorization_hint,
    graphiql_loads_its_assets_from_the_configured_mirror =>
        |s| s.graphiql_assets = "https://mirror.example/npm/".into(),
}
