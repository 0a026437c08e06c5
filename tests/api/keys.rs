//! Asymmetric signing keys and a JWKS endpoint, as Supabase Auth serves them, for the tests.
//!
//! The keys are committed test-only PEM files (tests/fixtures/keys/); the JWKS is served by a
//! small axum app on a random local port, which counts its fetches and can be taken down.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::Auth;

/// The path Supabase Auth serves its JWKS at, below the issuer.
pub const ISSUER_PATH: &str = "/auth/v1";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A private signing key with its `kid` and algorithm.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
}

impl SigningKey {
    fn load(file: &str, kid: &str, algorithm: Algorithm) -> Self {
        let pem = fixture(file);
        let encoding = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        Self {
            kid: kid.to_owned(),
            algorithm,
            encoding,
        }
    }

    pub fn ec_a() -> Self {
        Self::load("ec_a.pem", "ec-a", Algorithm::ES256)
    }

    pub fn ec_b() -> Self {
        Self::load("ec_b.pem", "ec-b", Algorithm::ES256)
    }

    pub fn rsa_a() -> Self {
        Self::load("rsa_a.pem", "rsa-a", Algorithm::RS256)
    }

    /// A 1024-bit RSA key: too short to be trusted.
    pub fn rsa_weak() -> Self {
        Self::load("rsa_weak.pem", "rsa-weak", Algorithm::RS256)
    }

    /// The public JWK, shaped as Supabase publishes it (`alg`, `kid`, `use: sig`,
    /// `key_ops: [verify]`).
    pub fn jwk(&self) -> Value {
        let jwk = Jwk::from_encoding_key(&self.encoding, self.algorithm).unwrap();
        let mut value = serde_json::to_value(jwk).unwrap();
        value["kid"] = json!(self.kid);
        value["use"] = json!("sig");
        value["key_ops"] = json!(["verify"]);
        value
    }

    /// Signs `claims` with this key; the header names its `kid` and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(claims, Some(&self.kid))
    }

    pub fn sign_with_kid(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &self.encoding).unwrap()
    }

    pub fn bearer(&self, claims: &Value) -> Auth {
        Auth::Bearer(self.sign(claims))
    }
}

/// A JWKS endpoint on 127.0.0.1 that serves whatever key set the test gives it.
#[derive(Clone)]
pub struct JwksServer {
    pub base: String,
    shared: Arc<Shared>,
}

struct Shared {
    keys: Mutex<Value>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        let shared = Arc::new(Shared {
            keys: Mutex::new(json!({ "keys": keys })),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .route(
                &format!("{ISSUER_PATH}/.well-known/jwks.json"),
                axum::routing::get(serve_jwks),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, shared }
    }

    /// The issuer whose `/.well-known/jwks.json` this server answers.
    pub fn issuer(&self) -> String {
        format!("{}{ISSUER_PATH}", self.base)
    }

    pub fn url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.issuer())
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.shared.keys.lock().unwrap() = json!({ "keys": keys });
    }

    /// While down, every fetch is answered 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = shared.keys.lock().unwrap().clone();
    ([("cache-control", "public, max-age=600")], axum::Json(keys)).into_response()
}

/// A URL on which nothing listens.
pub async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}{ISSUER_PATH}/.well-known/jwks.json")
}

/// A local endpoint that answers every request with a 302 to `target`, as a hijacked or
/// misconfigured JWKS URL would.
pub async fn redirecting_to(target: String) -> String {
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { (StatusCode::FOUND, [("location", target)]).into_response() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("{base}{ISSUER_PATH}/.well-known/jwks.json")
}
