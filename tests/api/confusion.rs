//! Algorithm confusion and key misuse, refused by construction: the key a token names fixes the
//! one algorithm its signature must use, and only keys meant for verifying signatures are kept.

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::keys::{fixture, JwksServer, SigningKey};

/// One app that trusts the JWKS and the JWT secret, one that trusts only the JWKS, each with a
/// user.
async fn apps(server: &JwksServer) -> Vec<(TestApp, Uuid)> {
    let mut apps = Vec::new();
    for jwt_secret in [Some(JWT_SECRET.to_owned()), None] {
        let (app, id) = spawn_app_with_user(AppOptions {
            jwks_url: Some(server.url()),
            jwt_secret,
            ..Default::default()
        })
        .await;
        apps.push((app, id));
    }
    apps
}

async fn assert_refused(app: &TestApp, token: String, what: &str) {
    let response = app.sync_me(&Auth::Bearer(token)).await;
    let status = response.status().as_u16();
    assert_eq!(status, 401, "{what} was not refused");
    let body: Value = response.json().await.unwrap();
    assert!(
        ["invalid_token", "unknown_key"].contains(&body["code"].as_str().unwrap()),
        "{what}: {body}"
    );
    assert_eq!(app.target_count().await, 0, "{what} wrote a row");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn unsigned_tokens_are_refused_whatever_key_they_name() {
    let ec = SigningKey::ec_a();
    let server = JwksServer::start(vec![ec.jwk()]).await;
    for (app, id) in apps(&server).await {
        let payload = b64(&serde_json::to_vec(&user_claims(id)).unwrap());
        let signed = ec.sign(&user_claims(id));
        let real_signature = signed.rsplit('.').next().unwrap();
        for header in [
            json!({"alg": "none", "kid": "ec-a"}),
            json!({"alg": "none"}),
            json!({"alg": "None", "kid": "ec-a"}),
            json!({"alg": "ES256", "kid": "ec-a"}),
        ] {
            let header = b64(header.to_string().as_bytes());
            assert_refused(&app, format!("{header}.{payload}."), "an empty signature").await;
            assert_refused(&app, format!("{header}.{payload}"), "a missing signature").await;
            // Another token's valid signature over different bytes.
            assert_refused(
                &app,
                format!("{header}.{payload}.{real_signature}"),
                "a transplanted signature",
            )
            .await;
        }
        // The positive control: the same key and claims, properly signed.
        assert_eq!(
            app.sync_me(&ec.bearer(&user_claims(id))).await.status(),
            200
        );
    }
}

#[tokio::test]
async fn an_hs256_token_keyed_with_a_public_key_is_refused() {
    let (ec, rsa) = (SigningKey::ec_a(), SigningKey::rsa_a());
    let server = JwksServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let public_keys = [
        ("ec-a", fixture("ec_a.pub.pem")),
        ("ec-a", fixture("ec_a.pub.der")),
        ("ec-a", serde_json::to_vec(&ec.jwk()).unwrap()),
        ("rsa-a", fixture("rsa_a.pub.pem")),
        ("rsa-a", fixture("rsa_a.pub.der")),
        ("rsa-a", serde_json::to_vec(&rsa.jwk()).unwrap()),
    ];
    for (app, id) in apps(&server).await {
        for (kid, bytes) in &public_keys {
            for header_kid in [Some(*kid), None, Some("unknown")] {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = header_kid.map(str::to_owned);
                let token =
                    encode(&header, &user_claims(id), &EncodingKey::from_secret(bytes)).unwrap();
                assert_refused(
                    &app,
                    token,
                    &format!("HS256 keyed with {kid}'s public key, kid {header_kid:?}"),
                )
                .await;
            }
        }
    }
}

#[tokio::test]
async fn a_header_algorithm_that_differs_from_its_keys_is_refused() {
    let (ec, rsa) = (SigningKey::ec_a(), SigningKey::rsa_a());
    let server = JwksServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    for (app, id) in apps(&server).await {
        // Signed correctly by one listed key, but naming the other.
        assert_refused(
            &app,
            rsa.sign_with_kid(&user_claims(id), Some("ec-a")),
            "RS256 naming the EC key",
        )
        .await;
        assert_refused(
            &app,
            ec.sign_with_kid(&user_claims(id), Some("rsa-a")),
            "ES256 naming the RSA key",
        )
        .await;
        // Other algorithms of the same family, with the JWT secret.
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("ec-a".into());
            let token = encode(
                &header,
                &user_claims(id),
                &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            )
            .unwrap();
            assert_refused(&app, token, &format!("{alg:?} with the JWT secret")).await;
        }
        // An RSA key used with PS256 instead of RS256.
        let pem = fixture("rsa_a.pem");
        let mut header = Header::new(Algorithm::PS256);
        header.kid = Some("rsa-a".into());
        let token = encode(
            &header,
            &user_claims(id),
            &EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
        .unwrap();
        assert_refused(&app, token, "PS256 with the RS256 key").await;
    }
}

#[tokio::test]
async fn a_kid_that_names_no_key_is_refused() {
    let ec = SigningKey::ec_a();
    let server = JwksServer::start(vec![ec.jwk()]).await;
    let [(with_secret, id1), (jwks_only, id2)]: [(TestApp, Uuid); 2] =
        apps(&server).await.try_into().ok().unwrap();
    for kid in ["nope", "", "../ec-a", "EC-A"] {
        let token = ec.sign_with_kid(&user_claims(id2), Some(kid));
        assert_problem(
            jwks_only.sync_me(&Auth::Bearer(token)).await,
            401,
            "unknown_key",
        )
        .await;
        // With a secret, the token is checked against it, as HS256, and fails.
        let token = ec.sign_with_kid(&user_claims(id1), Some(kid));
        assert_problem(
            with_secret.sync_me(&Auth::Bearer(token)).await,
            401,
            "invalid_token",
        )
        .await;
    }
    // No kid at all: only the secret could verify it.
    let token = ec.sign_with_kid(&user_claims(id2), None);
    assert_problem(
        jwks_only.sync_me(&Auth::Bearer(token)).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn keys_meant_for_encryption_or_mislabelled_are_never_used() {
    let (sig, enc, ops, mislabelled, weak, bare) = (
        SigningKey::ec_a(),
        SigningKey::ec_b(),
        SigningKey::rsa_a(),
        SigningKey::ec_b(),
        SigningKey::rsa_weak(),
        SigningKey::ec_b(),
    );
    let mut enc_jwk = enc.jwk();
    enc_jwk["kid"] = json!("enc");
    enc_jwk["use"] = json!("enc");
    enc_jwk.as_object_mut().unwrap().remove("key_ops");
    let mut ops_jwk = ops.jwk();
    ops_jwk["kid"] = json!("ops");
    ops_jwk.as_object_mut().unwrap().remove("use");
    ops_jwk["key_ops"] = json!(["encrypt", "wrapKey"]);
    let mut mislabelled_jwk = mislabelled.jwk();
    mislabelled_jwk["kid"] = json!("mislabelled");
    mislabelled_jwk["alg"] = json!("RS256");
    // No `alg`, `use` or `key_ops`: ES256 follows from `kty: EC, crv: P-256`.
    let mut bare_jwk = bare.jwk();
    bare_jwk["kid"] = json!("bare");
    for field in ["alg", "use", "key_ops"] {
        bare_jwk.as_object_mut().unwrap().remove(field);
    }
    let server = JwksServer::start(vec![
        sig.jwk(),
        enc_jwk,
        ops_jwk,
        mislabelled_jwk,
        weak.jwk(),
        bare_jwk,
    ])
    .await;
    for (app, id) in apps(&server).await {
        let claims = user_claims(id);
        assert_refused(
            &app,
            enc.sign_with_kid(&claims, Some("enc")),
            "a `use: enc` key",
        )
        .await;
        assert_refused(
            &app,
            ops.sign_with_kid(&claims, Some("ops")),
            "a key_ops [encrypt] key",
        )
        .await;
        assert_refused(
            &app,
            mislabelled.sign_with_kid(&claims, Some("mislabelled")),
            "an EC key labelled RS256",
        )
        .await;
        assert_refused(&app, weak.sign(&claims), "a 1024-bit RSA key").await;
        assert_eq!(app.sync_me(&sig.bearer(&claims)).await.status(), 200);
        assert_eq!(
            app.sync_me(&Auth::Bearer(bare.sign_with_kid(&claims, Some("bare"))))
                .await
                .status(),
            200
        );
    }
}
