//! The project's asymmetric signing keys, fetched from its JWKS and cached.
//!
//! Policy, after Supabase's own clients and `reference/supabase.md` §2.4:
//! - the set is fetched at start-up and again every `ttl` (10 minutes, as Supabase caches it),
//!   by a background task, so no request waits for a routine refresh;
//! - a token naming a `kid` the cache does not hold (a key just rotated in) triggers one fetch,
//!   at most once per `refetch_interval`; concurrent requests share that one fetch (a single
//!   flight), so a request never waits for more than one fetch;
//! - when a fetch fails the keys already held keep working, and `/readyz` reports them stale;
//!   a successful fetch replaces the whole set, so a revoked key stops working then.
//!
//! Only keys that can verify, and only as what they are, are kept: `use` must be `sig` and
//! `key_ops` must include `verify` when present; the algorithm is the JWK's own (`alg`, or
//! derived from `kty`/`crv` when absent), and must be ES256 on P-256 or RS256 with a modulus of
//! at least 2048 bits. Symmetric (`oct`) keys are never taken from a URL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;

/// Most time one fetch of the JWKS may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS accepted: a real one is a few kilobytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
/// Shortest pause of the background refresh, whatever the settings say.
const MIN_REFRESH_PAUSE: Duration = Duration::from_millis(100);

/// A key and the one algorithm it verifies.
#[derive(Clone)]
pub(super) struct VerifyingKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// How fresh the cached keys are, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysHealth {
    /// The last fetch succeeded.
    Fresh { keys: usize },
    /// The last fetch failed; keys from an earlier one are still used.
    Stale {
        keys: usize,
        age: Duration,
        error: String,
    },
    /// No fetch has succeeded yet: no asymmetric token can be verified.
    Unavailable { error: String },
}

/// The JWKS cache. Cheap to share behind an `Arc`.
pub struct Jwks {
    url: Url,
    client: reqwest::Client,
    ttl: Duration,
    refetch_interval: Duration,
    cache: RwLock<Cache>,
    /// Held for the duration of a fetch (the single flight); the time the last one started.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Cache {
    keys: Arc<HashMap<String, VerifyingKey>>,
    fetched_at: Option<Instant>,
    last_error: Option<String>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url.as_str())
            .field("health", &self.health())
            .finish()
    }
}

/// Why a fetch failed; shown in logs and on `/readyz` (it holds nothing secret: the URL is
/// public and the body is a public key set).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot fetch the JWKS: {}", chain(.0))]
    Http(#[from] reqwest::Error),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS is not a JSON key set: {0}")]
    Json(#[from] serde_json::Error),
}

/// An error and its causes on one line (reqwest's `Display` alone says only "error sending
/// request").
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    pub fn new(url: Url, ttl: Duration, refetch_interval: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("usersync/", env!("CARGO_PKG_VERSION")))
            .redirect(redirect_policy())
            .build()?;
        if url.scheme() == "http" && !is_loopback(&url) {
            tracing::warn!(
                url = %url,
                "the JWKS is fetched over plain http: whoever can alter that traffic can sign \
                 tokens; use https outside a private network"
            );
        }
        Ok(Self {
            url,
            client,
            ttl,
            refetch_interval,
            cache: RwLock::new(Cache {
                keys: Arc::default(),
                fetched_at: None,
                last_error: Some("not fetched yet".to_owned()),
            }),
            last_attempt: tokio::sync::Mutex::new(None),
        })
    }

    /// The key named `kid`, fetching the set again (at most once per interval) when it is not
    /// held. Requests that miss at the same time share one fetch: each waits for the fetch in
    /// flight, then looks again before considering one of its own.
    pub(super) async fn key(&self, kid: &str) -> Option<VerifyingKey> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        let mut last_attempt = self.last_attempt.lock().await;
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        if last_attempt.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return None;
        }
        let _ = self.fetch_and_store(&mut last_attempt).await;
        self.cached(kid)
    }

    fn cached(&self, kid: &str) -> Option<VerifyingKey> {
        self.snapshot().keys.get(kid).cloned()
    }

    fn snapshot(&self) -> Cache {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn health(&self) -> KeysHealth {
        let cache = self.snapshot();
        match (cache.fetched_at, cache.last_error) {
            (Some(_), None) => KeysHealth::Fresh {
                keys: cache.keys.len(),
            },
            (Some(at), Some(error)) => KeysHealth::Stale {
                keys: cache.keys.len(),
                age: at.elapsed(),
                error,
            },
            (None, error) => KeysHealth::Unavailable {
                error: error.unwrap_or_default(),
            },
        }
    }

    /// Fetches the set now, whenever the last fetch was; waits for one already in flight.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last_attempt = self.last_attempt.lock().await;
        self.fetch_and_store(&mut last_attempt).await
    }

    async fn fetch_and_store(&self, last_attempt: &mut Option<Instant>) -> Result<usize, String> {
        *last_attempt = Some(Instant::now());
        let fetched = self.fetch().await;
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fetched {
            Ok(keys) => {
                let count = keys.len();
                let changed = {
                    let mut before: Vec<&String> = cache.keys.keys().collect();
                    let mut after: Vec<&String> = keys.keys().collect();
                    before.sort();
                    after.sort();
                    before != after
                };
                if changed || cache.last_error.is_some() {
                    let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
                    kids.sort_unstable();
                    tracing::info!(url = %self.url, keys = count, kids = ?kids, "JWKS loaded");
                }
                *cache = Cache {
                    keys: Arc::new(keys),
                    fetched_at: Some(Instant::now()),
                    last_error: None,
                };
                Ok(count)
            }
            Err(error) => {
                let error = error.to_string();
                tracing::warn!(url = %self.url, error = %error, keys_kept = cache.keys.len(),
                    "JWKS fetch failed; the keys already held keep working");
                cache.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, FetchError> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?
            .error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(parse_key_set(&body)?)
    }

    /// Refreshes every `ttl` while the set is fresh, every `refetch_interval` while fetches
    /// fail; stops when the cache is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let pause = match weak.upgrade() {
                    Some(jwks) => jwks.next_refresh_in(),
                    None => return,
                };
                tokio::time::sleep(pause.max(MIN_REFRESH_PAUSE)).await;
                match weak.upgrade() {
                    Some(jwks) => {
                        let _ = jwks.refresh().await;
                    }
                    None => return,
                }
            }
        });
    }

    fn next_refresh_in(&self) -> Duration {
        let cache = self.snapshot();
        match (cache.fetched_at, cache.last_error) {
            (Some(at), None) => self.ttl.saturating_sub(at.elapsed()),
            _ => self.refetch_interval,
        }
    }

    /// A cache holding the keys of `jwks_json`, which never fetches: for unit tests.
    #[cfg(test)]
    pub(super) fn preloaded(jwks_json: &[u8]) -> Self {
        let mut jwks = Self::new(
            Url::parse("http://127.0.0.1:9/jwks.json").unwrap(),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        )
        .unwrap();
        jwks.cache = RwLock::new(Cache {
            keys: Arc::new(parse_key_set(jwks_json).unwrap()),
            fetched_at: Some(Instant::now()),
            last_error: None,
        });
        jwks.last_attempt = tokio::sync::Mutex::new(Some(Instant::now()));
        jwks
    }
}

/// Most redirects one fetch follows.
const MAX_REDIRECTS: usize = 3;

/// Redirects are followed only to https on the URL's own host: the keys decide who may sign
/// tokens, so a hop to plain http (readable and alterable on the way) or to another host
/// (whoever runs it) would hand that decision to someone else.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match first {
            Some(first) if redirect_allowed(&first, attempt.url()) => attempt.follow(),
            _ => {
                let refused = format!(
                    "refused a redirect to {}: only https on the same host is followed",
                    attempt.url()
                );
                attempt.error(refused)
            }
        }
    })
}

fn redirect_allowed(from: &Url, to: &Url) -> bool {
    to.scheme() == "https" && to.host() == from.host()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

/// The usable keys of a JWKS document, by `kid`. A malformed or unusable entry is skipped
/// (and logged by `kid`, which is public), never fatal: one odd key must not disable the rest.
fn parse_key_set(body: &[u8]) -> Result<HashMap<String, VerifyingKey>, serde_json::Error> {
    let raw: RawKeySet = serde_json::from_slice(body)?;
    let mut keys = HashMap::new();
    for entry in raw.keys {
        let kid = entry
            .get("kid")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_owned();
        let usable = serde_json::from_value::<Jwk>(entry)
            .map_err(|_| "not a JWK")
            .and_then(|jwk| verifying_key(&jwk));
        match usable {
            Ok(_) if kid.is_empty() => {
                tracing::warn!("JWKS key without a kid skipped: tokens name their key by kid");
            }
            Ok(_) if keys.contains_key(&kid) => {
                tracing::warn!(kid = %kid, "JWKS key with a duplicate kid skipped");
            }
            Ok(key) => {
                keys.insert(kid, key);
            }
            Err(reason) => tracing::warn!(kid = %kid, reason, "JWKS key skipped"),
        }
    }
    Ok(keys)
}

/// The key a JWK describes, with the algorithm it fixes; or why it may not verify tokens.
fn verifying_key(jwk: &Jwk) -> Result<VerifyingKey, &'static str> {
    if let Some(key_use) = &jwk.common.public_key_use {
        if *key_use != PublicKeyUse::Signature {
            return Err("its `use` is not `sig`");
        }
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("its `key_ops` do not include `verify`");
        }
    }
    let declared = jwk.common.key_algorithm;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256
                && matches!(declared, None | Some(KeyAlgorithm::ES256)) =>
        {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(rsa) if matches!(declared, None | Some(KeyAlgorithm::RS256)) => {
            if modulus_bits(&rsa.n).is_none_or(|bits| bits < MIN_RSA_BITS) {
                return Err("its RSA modulus is shorter than 2048 bits");
            }
            Algorithm::RS256
        }
        _ => return Err("it is not an ES256 (P-256) or RS256 key"),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "its key material is malformed")?;
    Ok(VerifyingKey { algorithm, key })
}

/// The bit length of a base64url big-endian RSA modulus.
fn modulus_bits(n: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    let significant = &bytes[first..];
    Some(significant.len() * 8 - significant[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redirects_are_followed_only_to_https_on_the_same_host() {
        let url = |raw: &str| Url::parse(raw).unwrap();
        let from = url("https://abc.supabase.co/auth/v1/.well-known/jwks.json");
        assert!(redirect_allowed(
            &from,
            &url("https://abc.supabase.co/keys")
        ));
        assert!(redirect_allowed(
            &from,
            &url("https://abc.supabase.co:8443/keys")
        ));
        assert!(!redirect_allowed(
            &from,
            &url("http://abc.supabase.co/keys")
        ));
        assert!(!redirect_allowed(&from, &url("https://evil.example/keys")));
        assert!(!redirect_allowed(&from, &url("https://supabase.co/keys")));
        // A plain-http URL may be upgraded, never kept on http by a redirect.
        let plain = url("http://127.0.0.1:9999/jwks.json");
        assert!(redirect_allowed(
            &plain,
            &url("https://127.0.0.1:9999/jwks.json")
        ));
        assert!(!redirect_allowed(
            &plain,
            &url("http://127.0.0.1:9999/elsewhere")
        ));
    }

    fn ec_jwk() -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256", "kid": "ec",
               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    fn usable(entry: serde_json::Value) -> Result<Algorithm, &'static str> {
        let jwk: Jwk = serde_json::from_value(entry).unwrap();
        verifying_key(&jwk).map(|k| k.algorithm)
    }

    #[test]
    fn the_algorithm_comes_from_the_key_type_when_alg_is_absent() {
        assert_eq!(usable(ec_jwk()), Ok(Algorithm::ES256));
        let mut declared = ec_jwk();
        declared["alg"] = json!("ES256");
        assert_eq!(usable(declared), Ok(Algorithm::ES256));
    }

    #[test]
    fn keys_for_encryption_or_other_algorithms_are_never_used() {
        let cases = [
            ("use", json!("enc")),
            ("key_ops", json!(["encrypt"])),
            ("key_ops", json!(["sign"])),
            ("alg", json!("RS256")),
            ("alg", json!("HS256")),
            ("alg", json!("ES384")),
            ("alg", json!("none")),
            ("crv", json!("P-384")),
        ];
        for (field, value) in cases {
            let mut entry = ec_jwk();
            entry[field] = value.clone();
            assert!(usable(entry).is_err(), "{field}: {value} was accepted");
        }
        let oct = json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
        assert!(usable(oct).is_err());
    }

    #[test]
    fn a_set_with_one_odd_key_keeps_the_others() {
        let body = serde_json::to_vec(&json!({"keys": [
            ec_jwk(),
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": "AA", "y": "AA"},
            {"kty": "WAT"},
            "not even an object",
        ]}))
        .unwrap();
        let keys = parse_key_set(&body).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ec"]);
    }

    #[test]
    fn rsa_modulus_length_is_measured_in_significant_bits() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(modulus_bits(&b64.encode([0u8, 0x80, 0, 0])), Some(24));
        assert_eq!(modulus_bits(&b64.encode([0x01, 0xff])), Some(9));
        assert_eq!(modulus_bits(&b64.encode([0u8; 4])), None);
        assert_eq!(modulus_bits("!!"), None);
    }
}
