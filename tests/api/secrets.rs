//! Nothing secret ever leaves: the real binary, logging at `trace`, takes a run full of bad (and
//! some good) requests, and neither its logs nor any response carry a token, a secret key, the
//! JWT secret, the database password or anything from `auth.users` beyond the mapped columns.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;
use crate::keys::{JwksServer, SigningKey};

const OLD_SERVICE_KEY: &str = "sb_secret_old_key_must_never_be_logged_1";
const NEW_SERVICE_KEY: &str = "sb_secret_new_key_must_never_be_logged_2";
const PASSWORD_HASH: &str = "$2a$10$NeverLoggedHashNeverLoggedHashNeverLoggedHashNeverLo";
const RECOVERY_TOKEN: &str = "recovery-token-never-logged-0123456789";
const DB_PASSWORD: &str = "db-password-never-logged";

/// The service as a child process; its stderr is collected as it runs.
struct Binary {
    child: tokio::process::Child,
    base: String,
    logs: Arc<Mutex<String>>,
}

impl Binary {
    async fn start(env: &[(&str, String)]) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_usersync"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("USERSYNC_LISTEN", "127.0.0.1:0")
            .env("USERSYNC_LOG_FORMAT", "json")
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn({
            let logs = logs.clone();
            async move {
                let mut port_tx = Some(port_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(event) = serde_json::from_str::<Value>(&line) {
                        if event["fields"]["message"] == "usersync listening" {
                            if let Some(tx) = port_tx.take() {
                                let _ = tx.send(event["fields"]["port"].as_u64().unwrap());
                            }
                        }
                    }
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(30), port_rx)
            .await
            .unwrap_or_else(|_| panic!("the service did not start: {}", logs.lock().unwrap()))
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            logs,
        }
    }

    async fn stop(mut self) -> String {
        self.child.kill().await.unwrap();
        // Let the reader drain what is left in the pipe.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logs = self.logs.lock().unwrap().clone();
        logs
    }
}

/// Every response's status line, headers and body, as text.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    async fn record(&mut self, response: reqwest::Response) -> u16 {
        let status = response.status().as_u16();
        self.0.push_str(&format!("{status}\n"));
        for (name, value) in response.headers() {
            self.0.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        self.0.push_str(&response.text().await.unwrap());
        self.0.push('\n');
        status
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_any_response_in_a_run_full_of_bad_requests() {
    let db = TestDb::new().await;
    let user = AuthUser::new("ada@example.com");
    let id = user.insert(&db.pool).await;
    sqlx::query("update auth.users set encrypted_password = $2, recovery_token = $3 where id = $1")
        .bind(id)
        .bind(PASSWORD_HASH)
        .bind(RECOVERY_TOKEN)
        .execute(&db.pool)
        .await
        .unwrap();
    let ec = SigningKey::ec_a();
    let jwks = JwksServer::start(vec![ec.jwk()]).await;

    let mut url: url::Url = db.url().parse().unwrap();
    let db_password = match url.password() {
        Some(password) => password.to_owned(),
        None => {
            // Trust authentication ignores it, but it is in the URL the service is given.
            url.set_password(Some(DB_PASSWORD)).unwrap();
            DB_PASSWORD.to_owned()
        }
    };
    let binary = Binary::start(&[
        ("DATABASE_URL", url.to_string()),
        ("USERSYNC_JWT_SECRET", JWT_SECRET.to_owned()),
        (
            "USERSYNC_SERVICE_KEYS",
            format!("{OLD_SERVICE_KEY},{NEW_SERVICE_KEY}"),
        ),
        ("USERSYNC_JWKS_URL", jwks.url()),
        ("USERSYNC_JWKS_REFETCH_INTERVAL", "0s".to_owned()),
        ("USERSYNC_RATE_LIMIT_BURST", "5".to_owned()),
        ("USERSYNC_HEADER_LIMIT", "4096".to_owned()),
    ])
    .await;

    let mut expired = user_claims(id);
    expired["exp"] = json!(now_secs() - 600);
    let valid_hs256 = sign(&user_claims(id), JWT_SECRET);
    let valid_es256 = ec.sign(&user_claims(id));
    let tokens = vec![
        valid_hs256.clone(),
        valid_es256.clone(),
        sign(&expired, JWT_SECRET),
        ec.sign(&expired),
        sign(
            &user_claims(id),
            "a-wrong-secret-that-is-long-enough-to-pass",
        ),
        ec.sign_with_kid(&user_claims(id), Some("unknown-kid")),
        format!("{}.", &valid_hs256[..valid_hs256.rfind('.').unwrap()]),
        sign(&json!({"role": "anon", "exp": now_secs() + 60}), JWT_SECRET),
        sign(
            &json!({"role": "service_role", "exp": now_secs() + 60}),
            JWT_SECRET,
        ),
    ];
    // Credentials that are wrong, and secrets sent where they do not belong.
    let mut credentials: Vec<String> = tokens.clone();
    credentials.extend([
        JWT_SECRET.to_owned(),
        OLD_SERVICE_KEY.to_owned(),
        NEW_SERVICE_KEY.to_owned(),
        format!("{OLD_SERVICE_KEY}x"),
        PASSWORD_HASH.to_owned(),
        db_password.clone(),
    ]);

    // No connection reuse: the service closes a connection whose oversized body it did not read.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut transcript = Transcript::default();
    let mut statuses = Vec::new();
    let at = |path: &str| format!("{}{path}", binary.base);
    for credential in &credentials {
        for (method, path) in [
            (Method::POST, "/v1/users/me/sync".to_owned()),
            (Method::POST, format!("/v1/users/{id}/sync")),
            (Method::GET, format!("/v1/users/{id}/drift")),
            (Method::GET, "/v1/status".to_owned()),
        ] {
            for as_apikey in [false, true] {
                let request = client.request(method.clone(), at(&path));
                let request = if as_apikey {
                    request.header("apikey", credential)
                } else {
                    request.bearer_auth(credential)
                };
                statuses.push(transcript.record(request.send().await.unwrap()).await);
            }
        }
        // The credential in the path, the query, a cookie, an oversized header and a body.
        let probes = [
            client
                .post(at(&format!("/v1/users/{credential}/sync")))
                .header("apikey", NEW_SERVICE_KEY),
            client.get(at(&format!("/v1/status?token={credential}"))),
            client
                .get(at("/v1/status"))
                .header("cookie", format!("sb-access-token={credential}")),
            client
                .post(at("/v1/users/me/sync"))
                .bearer_auth(credential)
                .header("x-padding", "p".repeat(5000)),
            client
                .post(at("/v1/users/me/sync"))
                .header("content-type", "application/json")
                .body(json!({ "token": credential, "padding": "b".repeat(70_000) }).to_string()),
        ];
        for probe in probes {
            statuses.push(transcript.record(probe.send().await.unwrap()).await);
        }
    }
    let logs = binary.stop().await;

    // The run was what it claims: successes and every kind of refusal, all logged.
    for status in [200, 400, 401, 403, 413, 429, 431] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }
    assert!(logs.contains("JWKS loaded"), "{logs}");
    assert!(logs.lines().count() > 100, "suspiciously few log lines");
    assert!(
        transcript.0.contains(&id.to_string()),
        "the synced row was not returned"
    );

    let mut secrets = vec![
        (JWT_SECRET.to_owned(), "the JWT secret"),
        (OLD_SERVICE_KEY.to_owned(), "a secret key"),
        (NEW_SERVICE_KEY.to_owned(), "a secret key"),
        (PASSWORD_HASH.to_owned(), "the password hash"),
        (RECOVERY_TOKEN.to_owned(), "a recovery token"),
        (db_password, "the database password"),
    ];
    for token in &tokens {
        secrets.push((token.clone(), "a token"));
        let signature = token.rsplit('.').next().unwrap();
        if signature.len() > 16 {
            secrets.push((signature.to_owned(), "a token's signature"));
        }
    }
    for (secret, what) in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{what} is in the logs: {secret}"
        );
        assert!(
            !transcript.0.contains(secret.as_str()),
            "{what} is in a response: {secret}"
        );
    }
}
