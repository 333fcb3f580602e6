//! Users and sessions over HTTP (SPEC §3).

use serde_json::json;

use crate::helpers::*;

async fn a_new_user_can_sign_up_log_in_and_see_themselves(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let r = app.gql_as(&token, "{ me { username createdAt } }", json!({})).await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["me"]["username"], "alice");
    let anon = app.gql("{ me { username } }", json!({})).await;
    assert!(anon["data"]["me"].is_null());
}

crate::both_backends!(a_new_user_can_sign_up_log_in_and_see_themselves);
