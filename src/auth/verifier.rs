//! Token and secret-key verification.
//!
//! The keys, and so the accepted algorithms, come from configuration, never from the token.
//! A token's `kid` picks a key from the JWKS; a token without one, or whose `kid` the JWKS does
//! not list (it never lists symmetric keys), is checked against the shared secret. Either way
//! the key fixes the single algorithm the signature must use, so `alg: none`, an HS256 token
//! "signed" with a public key, or any header that disagrees with its key fails by construction.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::jwks::{Jwks, KeysHealth, VerifyingKey};
use super::{AuthError, Caller};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// The audience of Supabase user access tokens.
const USER_AUDIENCE: &str = "authenticated";

/// The configured secret keys; their values never appear in `Debug`.
#[derive(Clone)]
pub struct ServiceKeys(pub Vec<SecretString>);

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceKeys([{} redacted])", self.0.len())
    }
}

/// Where the project's signing keys are fetched from, and how often.
#[derive(Debug, Clone)]
pub struct JwksSource {
    pub url: reqwest::Url,
    /// How long fetched keys are used before a background refresh.
    pub cache_ttl: Duration,
    /// Least time between fetches caused by tokens naming an unknown `kid`.
    pub refetch_interval: Duration,
}

/// What callers are verified against (`config` builds it from the settings, having checked
/// that someone can authenticate).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The project's JWT secret (HS256).
    pub jwt_secret: Option<SecretString>,
    /// The issuer user tokens must carry; unchecked when `None`.
    pub jwt_issuer: Option<String>,
    pub service_keys: Option<ServiceKeys>,
    pub jwks: Option<JwksSource>,
}

/// Verifies credentials against the configured secret and keys.
#[derive(Clone)]
pub struct Verifier {
    secret: Option<VerifyingKey>,
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    service_keys: Vec<SecretString>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.secret.is_some())
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("service_keys", &self.service_keys.len())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// The claims that decide who the caller is; everything else in the token is ignored.
#[derive(Deserialize)]
struct Claims {
    /// Any JSON: a non-string `sub` must be refused as a bad subject, not as a bad token.
    sub: Option<serde_json::Value>,
    role: Option<String>,
    aud: Option<Audience>,
    iss: Option<String>,
}

impl Verifier {
    /// Builds the verifier; the JWKS, if any, is not fetched until [`Verifier::load_keys`].
    pub fn new(config: &Credentials) -> anyhow::Result<Self> {
        let jwks = config
            .jwks
            .as_ref()
            .map(|source| {
                Jwks::new(
                    source.url.clone(),
                    source.cache_ttl,
                    source.refetch_interval,
                )
            })
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            secret: config.jwt_secret.as_ref().map(|s| VerifyingKey {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(s.expose_secret().as_bytes()),
            }),
            jwks,
            issuer: config.jwt_issuer.clone(),
            service_keys: config
                .service_keys
                .as_ref()
                .map(|k| k.0.clone())
                .unwrap_or_default(),
        })
    }

    /// Fetches the JWKS once and keeps it fresh in the background.
    ///
    /// A failed first fetch does not stop start-up: the service comes up, answers with the
    /// shared secret and secret keys if configured, reports the keys on `/readyz`, and retries
    /// every refetch interval. A JWKS outage at deploy time then costs readiness, not a crash
    /// loop. (Settings that cannot work, like a malformed URL, stop start-up before this.)
    pub async fn load_keys(&self) {
        if let Some(jwks) = &self.jwks {
            if let Err(error) = jwks.refresh().await {
                tracing::error!(error = %error, "no JWKS at start-up: asymmetric tokens are refused until a fetch succeeds");
            }
            jwks.spawn_refresher();
        }
    }

    /// The JWKS's state, when one is configured.
    pub fn keys_health(&self) -> Option<KeysHealth> {
        self.jwks.as_ref().map(|jwks| jwks.health())
    }

    /// Whether user tokens can be verified without the JWKS.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Authenticates a request from its headers.
    ///
    /// A configured secret key in `apikey` or `Authorization` makes the caller the service.
    /// Otherwise the bearer token is verified; without one, a JWT in `apikey` (a legacy
    /// `service_role` key sent the way the Supabase gateway expects) is.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let apikey = headers.get("apikey").and_then(|v| v.to_str().ok());
        let bearer = match headers.get(AUTHORIZATION) {
            None => None,
            Some(value) => Some(bearer_token(
                value.to_str().map_err(|_| AuthError::Invalid)?,
            )?),
        };
        if [apikey, bearer]
            .into_iter()
            .flatten()
            .any(|candidate| self.is_service_key(candidate))
        {
            return Ok(Caller::Service);
        }
        match (bearer, apikey) {
            (Some(token), _) => self.verify_jwt(token).await,
            (None, Some(key)) => self.verify_jwt(key).await,
            (None, None) => Err(AuthError::Missing),
        }
    }

    /// Compares against every configured key without stopping at the first match, in constant
    /// time per key.
    fn is_service_key(&self, candidate: &str) -> bool {
        self.service_keys
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.expose_secret().as_bytes().ct_eq(candidate.as_bytes())
            })
            .into()
    }

    async fn verify_jwt(&self, token: &str) -> Result<Caller, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        // RFC 7515 §4.1.11: a token naming critical extensions must be refused by a verifier
        // that does not implement them, and this one implements none.
        if header.crit.is_some() {
            return Err(AuthError::Invalid);
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        // The key's algorithm, and only it: the header's `alg` chooses nothing.
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        // The audience depends on the role (legacy API keys carry none), so it is checked below.
        validation.validate_aud = false;
        let claims = decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid,
            })?
            .claims;
        match claims.role.as_deref() {
            Some("service_role") => Ok(Caller::Service),
            Some("authenticated") => self.user(claims),
            Some(other) => Err(AuthError::ForbiddenRole(other.to_owned())),
            None => Err(AuthError::ForbiddenRole(String::new())),
        }
    }

    /// The key a token names: a JWKS key by `kid`, else the shared secret.
    async fn key_for(&self, kid: Option<&str>) -> Result<VerifyingKey, AuthError> {
        if let (Some(kid), Some(jwks)) = (kid, &self.jwks) {
            if let Some(key) = jwks.key(kid).await {
                return Ok(key);
            }
        }
        match (&self.secret, kid) {
            (Some(secret), _) => Ok(secret.clone()),
            (None, Some(_)) => Err(AuthError::UnknownKey),
            (None, None) => Err(AuthError::Invalid),
        }
    }

    fn user(&self, claims: Claims) -> Result<Caller, AuthError> {
        if !claims.aud.is_some_and(|a| a.contains(USER_AUDIENCE)) {
            return Err(AuthError::WrongAudience);
        }
        if let Some(expected) = &self.issuer {
            if claims.iss.as_deref() != Some(expected.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        let id = claims
            .sub
            .as_ref()
            .and_then(|sub| sub.as_str())
            .and_then(|sub| Uuid::parse_str(sub).ok())
            .ok_or(AuthError::InvalidSubject)?;
        Ok(Caller::User(id))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Result<&str, AuthError> {
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}

/// Property tests: arbitrary bytes and arbitrary token-shaped strings thrown at the header
/// parsing and the verifier. They must never panic, never authenticate without a valid
/// signature, and, with one, authenticate exactly as the claims say. Raise the number of cases
/// with `PROPTEST_CASES=100000 cargo test --lib auth::verifier`.
#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use base64::Engine;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &str = "unit-test-jwt-secret-with-32-characters-or-more";
    const SERVICE_KEY: &str = "sb_secret_unit_test_0123456789";

    /// Built once: parsing the RSA key dominates a case otherwise.
    fn verifier() -> Verifier {
        static VERIFIER: std::sync::OnceLock<Verifier> = std::sync::OnceLock::new();
        VERIFIER.get_or_init(build_verifier).clone()
    }

    fn build_verifier() -> Verifier {
        let jwks: Vec<Value> = [
            (
                include_bytes!("../../tests/fixtures/keys/ec_a.pem").as_slice(),
                "ec-a",
                Algorithm::ES256,
            ),
            (
                include_bytes!("../../tests/fixtures/keys/rsa_a.pem").as_slice(),
                "rsa-a",
                Algorithm::RS256,
            ),
        ]
        .into_iter()
        .map(|(pem, kid, alg)| {
            let key = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
                _ => EncodingKey::from_rsa_pem(pem),
            }
            .unwrap();
            let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
            jwk["kid"] = json!(kid);
            jwk
        })
        .collect();
        let jwks = serde_json::to_vec(&json!({ "keys": jwks })).unwrap();
        Verifier {
            secret: Some(VerifyingKey {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(SECRET.as_bytes()),
            }),
            jwks: Some(Arc::new(Jwks::preloaded(&jwks))),
            issuer: None,
            service_keys: vec![SecretString::from(SERVICE_KEY.to_owned())],
        }
    }

    fn authenticate(verifier: &Verifier, headers: &HeaderMap) -> Result<Caller, AuthError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(verifier.authenticate(headers))
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Arbitrary JSON, a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A JOSE header: a real or made-up algorithm, a known, unknown or odd `kid`, extra fields.
    fn jose_header() -> impl Strategy<Value = Value> {
        let alg = prop_oneof![
            Just(json!("none")),
            Just(json!("HS256")),
            Just(json!("HS512")),
            Just(json!("ES256")),
            Just(json!("RS256")),
            Just(json!("PS256")),
            Just(json!("EdDSA")),
            json_value(),
        ];
        let kid = prop_oneof![
            Just(None),
            Just(Some(json!("ec-a"))),
            Just(Some(json!("rsa-a"))),
            json_value().prop_map(Some),
        ];
        (alg, kid, json_value()).prop_map(|(alg, kid, extra)| {
            let mut header = json!({ "alg": alg, "typ": "JWT", "x": extra });
            if let Some(kid) = kid {
                header["kid"] = kid;
            }
            header
        })
    }

    /// Claims that may or may not make a caller.
    fn claims() -> impl Strategy<Value = Value> {
        let role = prop_oneof![
            Just(json!("authenticated")),
            Just(json!("service_role")),
            Just(json!("anon")),
            json_value(),
        ];
        let sub = prop_oneof![
            Just(json!("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")),
            json_value(),
        ];
        let aud = prop_oneof![
            Just(json!("authenticated")),
            Just(json!(["other", "authenticated"])),
            json_value(),
        ];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let exp = prop_oneof![
            Just(json!(now + 3600)),
            (now - 7200..now + 7200).prop_map(Value::from),
            json_value(),
        ];
        (role, sub, aud, exp, json_value()).prop_map(|(role, sub, aud, exp, extra)| {
            json!({ "role": role, "sub": sub, "aud": aud, "exp": exp, "extra": extra })
        })
    }

    fn headers(name: &'static str, value: HeaderValue) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, value);
        headers
    }

    proptest! {
        #[test]
        fn arbitrary_header_bytes_never_panic_and_never_authenticate(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            name in prop_oneof![Just("authorization"), Just("apikey")],
            prefix in prop_oneof![Just(&b""[..]), Just(&b"Bearer "[..]), Just(&b"bearer  "[..])],
        ) {
            let verifier = verifier();
            let value = [prefix, &bytes].concat();
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let result = authenticate(&verifier, &headers(name, value));
                prop_assert!(result.is_err(), "{result:?}");
            }
        }

        #[test]
        fn token_shaped_strings_without_a_valid_signature_are_refused(
            header in jose_header(),
            claims in claims(),
            signature in prop::collection::vec(any::<u8>(), 0..300),
            dots in 0usize..3,
        ) {
            let verifier = verifier();
            let mut token = format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes()),
                b64(&signature),
            );
            token.push_str(&".".repeat(dots));
            let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            let result = authenticate(&verifier, &headers("authorization", value));
            prop_assert!(result.is_err(), "{result:?}");
        }

        #[test]
        fn a_signed_token_makes_exactly_the_caller_its_claims_describe(claims in claims()) {
            let verifier = verifier();
            let token = encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ).unwrap();
            let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            let result = authenticate(&verifier, &headers("authorization", value));
            match result {
                Ok(Caller::Service) => prop_assert_eq!(&claims["role"], "service_role"),
                Ok(Caller::User(id)) => {
                    prop_assert_eq!(&claims["role"], "authenticated");
                    prop_assert_eq!(&claims["sub"], &json!(id.to_string()));
                    let aud = &claims["aud"];
                    prop_assert!(aud == "authenticated"
                        || aud.as_array().is_some_and(|a| a.contains(&json!("authenticated"))));
                }
                Err(_) => {}
            }
        }
    }

    #[test]
    fn bearer_parsing_takes_only_the_bearer_scheme() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bEaReR   abc  "), Ok("abc"));
        for bad in ["", "Bearer", "Bearer ", "Basic abc", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(bad), Err(AuthError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn the_service_key_is_found_among_several_and_never_printed() {
        let mut verifier = verifier();
        verifier.service_keys = vec![
            SecretString::from("sb_secret_old_key_0123456789".to_owned()),
            SecretString::from(SERVICE_KEY.to_owned()),
        ];
        for key in ["sb_secret_old_key_0123456789", SERVICE_KEY] {
            assert!(verifier.is_service_key(key));
        }
        assert!(!verifier.is_service_key("sb_secret_old_key_012345678"));
        assert!(!verifier.is_service_key(""));
        let debug = format!("{verifier:?}");
        assert!(
            !debug.contains("sb_secret") && !debug.contains(SECRET),
            "{debug}"
        );
    }
}
