//! Every authentication rule of the design, and the problem+json shape of each refusal.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

async fn app_with_user() -> (TestApp, Uuid) {
    spawn_app_with_user(AppOptions::default()).await
}

#[tokio::test]
async fn a_request_without_credentials_is_401_with_a_bearer_challenge() {
    let (app, _) = app_with_user().await;
    let response = app.sync_me(&Auth::None).await;
    assert_problem(response, 401, "missing_credentials").await;
    assert_eq!(app.target_count().await, 0);
}

#[tokio::test]
async fn garbage_and_malformed_authorization_headers_are_401() {
    let (app, _) = app_with_user().await;
    for token in ["garbage", "a.b.c", "", "Bearer"] {
        let response = app.sync_me(&Auth::Bearer(token.into())).await;
        assert_problem(response, 401, "invalid_token").await;
    }
    let response = app
        .request(reqwest::Method::POST, "/v1/users/me/sync", &Auth::None)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "invalid_token").await;
    assert_eq!(app.target_count().await, 0);
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401() {
    let (app, id) = app_with_user().await;
    let token = sign(
        &user_claims(id),
        "another-secret-that-is-at-least-32-chars!",
    );
    assert_problem(
        app.sync_me(&Auth::Bearer(token)).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(app.target_count().await, 0);
}

#[tokio::test]
async fn a_correctly_signed_token_naming_a_critical_extension_is_401() {
    let (app, id) = app_with_user().await;
    let signed_with = |crit: Option<Vec<String>>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.crit = crit;
        jsonwebtoken::encode(
            &header,
            &user_claims(id),
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    // RFC 7515 §4.1.11: usersync implements no extension, so any `crit` is one it cannot honour.
    for crit in [
        vec!["urn:example:ext".to_owned()],
        vec!["b64".to_owned()],
        vec![],
    ] {
        let response = app.sync_me(&Auth::Bearer(signed_with(Some(crit)))).await;
        assert_problem(response, 401, "invalid_token").await;
    }
    assert_eq!(app.target_count().await, 0);
    // The same token without `crit` is accepted: the signature was never the problem.
    let response = app.sync_me(&Auth::Bearer(signed_with(None))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_401() {
    use base64::Engine;
    let (app, id) = app_with_user().await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64.encode(serde_json::to_vec(&user_claims(id)).unwrap());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert_problem(
            app.sync_me(&Auth::Bearer(token)).await,
            401,
            "invalid_token",
        )
        .await;
    }
    // HS512 with the right secret is still not an accepted algorithm.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &user_claims(id),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_problem(
        app.sync_me(&Auth::Bearer(hs512)).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(app.target_count().await, 0);
}

#[tokio::test]
async fn an_expired_token_is_401_token_expired() {
    let (app, id) = app_with_user().await;
    let mut claims = user_claims(id);
    claims["exp"] = json!(now_secs() - 300);
    let token = sign(&claims, JWT_SECRET);
    assert_problem(
        app.sync_me(&Auth::Bearer(token)).await,
        401,
        "token_expired",
    )
    .await;
}

#[tokio::test]
async fn a_token_not_valid_yet_is_401() {
    let (app, id) = app_with_user().await;
    let mut claims = user_claims(id);
    claims["nbf"] = json!(now_secs() + 600);
    let token = sign(&claims, JWT_SECRET);
    assert_problem(
        app.sync_me(&Auth::Bearer(token)).await,
        401,
        "token_not_yet_valid",
    )
    .await;
}

#[tokio::test]
async fn a_small_clock_skew_is_tolerated() {
    let (app, id) = app_with_user().await;
    let mut claims = user_claims(id);
    claims["nbf"] = json!(now_secs() + 5);
    let token = sign(&claims, JWT_SECRET);
    assert_eq!(app.sync_me(&Auth::Bearer(token)).await.status(), 200);
}

#[tokio::test]
async fn a_user_token_for_another_audience_is_401() {
    let (app, id) = app_with_user().await;
    for aud in [json!("anon"), json!(["other"]), serde_json::Value::Null] {
        let mut claims = user_claims(id);
        claims["aud"] = aud;
        let token = sign(&claims, JWT_SECRET);
        assert_problem(
            app.sync_me(&Auth::Bearer(token)).await,
            401,
            "invalid_audience",
        )
        .await;
    }
    // An audience list that includes `authenticated` is fine.
    let mut claims = user_claims(id);
    claims["aud"] = json!(["authenticated", "other"]);
    assert_eq!(
        app.sync_me(&Auth::Bearer(sign(&claims, JWT_SECRET)))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_anon_key_and_tokens_without_a_role_are_403() {
    let (app, id) = app_with_user().await;
    let anon_key = sign(
        &json!({"iss": "supabase", "ref": "x", "role": "anon", "iat": now_secs(), "exp": now_secs() + 3600}),
        JWT_SECRET,
    );
    assert_problem(
        app.sync_me(&Auth::Bearer(anon_key.clone())).await,
        403,
        "forbidden_role",
    )
    .await;
    assert_problem(
        app.status(&Auth::Bearer(anon_key)).await,
        403,
        "forbidden_role",
    )
    .await;
    let mut claims = user_claims(id);
    claims.as_object_mut().unwrap().remove("role");
    let token = sign(&claims, JWT_SECRET);
    assert_problem(
        app.sync_me(&Auth::Bearer(token)).await,
        403,
        "forbidden_role",
    )
    .await;
    assert_eq!(app.target_count().await, 0);
}

#[tokio::test]
async fn a_user_token_whose_sub_is_not_a_uuid_is_401() {
    let (app, _) = app_with_user().await;
    for sub in [json!("not-a-uuid"), json!(42), serde_json::Value::Null] {
        let mut claims = user_claims(Uuid::new_v4());
        claims["sub"] = sub;
        let token = sign(&claims, JWT_SECRET);
        assert_problem(
            app.sync_me(&Auth::Bearer(token)).await,
            401,
            "invalid_subject",
        )
        .await;
    }
}

#[tokio::test]
async fn the_issuer_is_checked_when_configured() {
    let (app, id) = spawn_app_with_user(AppOptions {
        issuer: Some("https://ref.supabase.co/auth/v1".into()),
        ..Default::default()
    })
    .await;
    let mut claims = user_claims(id);
    claims["iss"] = json!("https://evil.example/auth/v1");
    let token = sign(&claims, JWT_SECRET);
    assert_problem(
        app.sync_me(&Auth::Bearer(token)).await,
        401,
        "invalid_issuer",
    )
    .await;
    claims["iss"] = json!("https://ref.supabase.co/auth/v1");
    let token = sign(&claims, JWT_SECRET);
    assert_eq!(app.sync_me(&Auth::Bearer(token)).await.status(), 200);
    // The legacy service_role key keeps working whatever issuer user tokens must carry.
    assert_eq!(app.status(&service_token()).await.status(), 200);
}

#[tokio::test]
async fn a_user_cannot_sync_or_read_another_user() {
    let (app, id) = app_with_user().await;
    let other = app
        .insert_auth_user(&AuthUser::new("bob@example.com"))
        .await;
    let response = app.sync_user(&other.to_string(), &user_token(id)).await;
    assert_problem(response, 403, "not_self").await;
    let response = app.drift(&other.to_string(), &user_token(id)).await;
    assert_problem(response, 403, "not_self").await;
    assert!(app.target_row(other).await.is_none());
    // Their own id is fine.
    assert_eq!(
        app.sync_user(&id.to_string(), &user_token(id))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_user_cannot_read_the_status() {
    let (app, id) = app_with_user().await;
    assert_problem(app.status(&user_token(id)).await, 403, "service_only").await;
}

#[tokio::test]
async fn the_token_of_a_deleted_user_is_refused() {
    let (app, id) = app_with_user().await;
    let token = user_token(id);
    sqlx::query("delete from auth.users where id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_problem(app.sync_me(&token).await, 404, "user_not_found").await;
    assert!(app.target_row(id).await.is_none());
}

#[tokio::test]
async fn the_service_may_sync_anyone_with_a_service_role_token_or_a_secret_key() {
    let (app, id) = app_with_user().await;
    let response = app.sync_user(&id.to_string(), &service_token()).await;
    assert_eq!(response.status(), 200);
    for auth in [secret_key(), Auth::Bearer(SERVICE_KEY.into())] {
        let response = app.sync_user(&id.to_string(), &auth).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["action"], "unchanged");
    }
    // The audit log names the caller.
    let callers: Vec<String> =
        sqlx::query_scalar("select caller from usersync.repairs where user_id = $1")
            .bind(id)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(callers, vec!["service".to_owned()]);
}

#[tokio::test]
async fn a_wrong_secret_key_is_not_the_service() {
    let (app, _) = app_with_user().await;
    let response = app
        .status(&Auth::ApiKey("sb_secret_test_0123456789abcdeX".into()))
        .await;
    assert_problem(response, 401, "invalid_token").await;
}

#[tokio::test]
async fn the_service_has_no_me() {
    let (app, _) = app_with_user().await;
    assert_problem(app.sync_me(&secret_key()).await, 403, "user_only").await;
}

#[tokio::test]
async fn during_a_secret_key_rotation_both_keys_are_the_service() {
    let (old, new) = (
        "sb_secret_old_rotating_0123456789",
        "sb_secret_new_rotating_0123456789",
    );
    let app = spawn_app_with_options(AppOptions {
        service_keys: vec![old.to_owned(), new.to_owned()],
        ..Default::default()
    })
    .await;
    for key in [old, new] {
        assert_eq!(app.status(&Auth::ApiKey(key.into())).await.status(), 200);
        assert_eq!(app.status(&Auth::Bearer(key.into())).await.status(), 200);
    }
    // A prefix, an extension, or the two glued together are not keys.
    for wrong in [
        &old[..old.len() - 1],
        &format!("{new}x"),
        &format!("{old},{new}"),
    ] {
        assert_problem(
            app.status(&Auth::ApiKey(wrong.to_owned())).await,
            401,
            "invalid_token",
        )
        .await;
    }
}
