//! Supabase Auth (GoTrue) writes to `auth.users` and `auth.identities`, replayed statement by
//! statement as GoTrue `bc32168e` (supabase/auth, 2026-08-20) runs them through gobuffalo/pop
//! v6.1.1. The research behind every function is in `gotrue-statements.md`; each function names
//! the Go handler it follows.
//!
//! How to read and use it:
//!
//! * `db` is a pool whose connections are already logged in as `supabase_auth_admin`, whose
//!   role-level `search_path` is `auth`: table names are unqualified, as in GoTrue, and no
//!   `set role` is issued.
//! * Each function runs the statements in the transactions GoTrue uses, in GoTrue's order, with
//!   pop's SQL text: `INSERT INTO "users" (<every column, sorted>) VALUES (...)`,
//!   `UPDATE "users" AS users SET "<col>" = $1, ..., "updated_at" = $n WHERE users.id = $m` (pop
//!   sets `updated_at` itself on every `Update`/`UpdateOnly`), `DELETE FROM "users" AS users
//!   WHERE users.id = $1`. Column lists are sorted, as pop sorts them.
//! * Every timestamp GoTrue writes here comes from the Go clock (`time.Now()`, pop's
//!   `nowFunc`), never from the database's `now()`; the replay binds [`go_now`] for each one, read
//!   in the same order. The only database-clock statement is [`cleanup_anonymous_users`].
//! * The test fixture has `users` and `identities` only. Statements on `sessions`,
//!   `refresh_tokens`, `mfa_amr_claims`, `one_time_tokens`, `audit_log_entries`, `flow_state`,
//!   `mfa_factors` and `webauthn_credentials` are not run: a `// skipped:` comment stands where each
//!   one runs, naming it. Plain reads GoTrue does in between are noted as `// read:`; reads the
//!   replay needs are run.
//! * Configuration is GoTrue's default unless a function says otherwise: `aud` and the default
//!   role `authenticated`, implicit flow (no PKCE), `GOTRUE_MAILER_AUTOCONFIRM` off,
//!   `GOTRUE_MAILER_SECURE_EMAIL_CHANGE_ENABLED` on, `GOTRUE_SMS_AUTOCONFIRM` off, refresh token
//!   algorithm 0 (legacy), no hooks, no provider linking domains.
//! * Values GoTrue computes in Go that a test cannot reproduce (bcrypt hashes, OTP token hashes)
//!   are bound with the same shape: a fixed bcrypt string, 56 random hex digits for a
//!   `sha224(email || otp)` hex digest. The soft-delete obfuscation is computed exactly
//!   (`base64url(sha256(id || value))`, by Postgres in the read GoTrue does anyway).
//! * Every function returns `Result<_, sqlx::Error>`: `Ok` means GoTrue's transaction(s)
//!   committed. Where GoTrue would refuse the request, the replay returns
//!   `sqlx::Error::Protocol("GoTrue would refuse: ...")` having written nothing.

// Not every replay is used by every test.
#![allow(dead_code)]

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Map, Value};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// `users.instance_id` as GoTrue writes it: `uuid.Nil`.
const INSTANCE_ID: Uuid = Uuid::nil();
/// `GOTRUE_JWT_AUD`, the audience of every user (`requestAud`).
const AUD: &str = "authenticated";
/// `GOTRUE_JWT_DEFAULT_GROUP_NAME` on Supabase: the role `SetRole` writes.
const DEFAULT_ROLE: &str = "authenticated";
/// A bcrypt hash (`$2a$10$`, 60 characters) standing for the password GoTrue hashes in Go.
const PASSWORD_HASH: &str = "$2a$10$abcdefghijklmnopqrstuuJ0rV0yqQ6m8m8m8m8m8m8m8m8m8m8m8";

type Tx = Transaction<'static, Postgres>;

// ---------------------------------------------------------------------------------------------
// Public API: the flows
// ---------------------------------------------------------------------------------------------

/// A new email user, as `signUp` (POST /signup) or admin `createUser` sends it.
pub struct SignUp {
    /// GoTrue draws the id in Go (`NewUser`) before the transaction; admin `createUser` may pass
    /// its own.
    pub id: Uuid,
    pub email: String,
    /// Admin `createUser` only: a phone alongside the email.
    pub phone: Option<String>,
    /// `options.data` (sign-up) or `user_metadata` (admin).
    pub user_metadata: Value,
    /// Admin `createUser`'s `app_metadata`. POST /signup has no such parameter: a `SignUp` that
    /// carries app metadata is replayed by [`sign_up`] as admin `createUser`.
    pub custom_app_metadata: Option<Value>,
    /// Sign-up: the project autoconfirms (`GOTRUE_MAILER_AUTOCONFIRM` / `GOTRUE_SMS_AUTOCONFIRM`).
    /// Admin `createUser`: `email_confirm: true` (and `phone_confirm: true` with a phone).
    pub confirm: bool,
}

impl SignUp {
    pub fn new(email: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            email: email.to_owned(),
            phone: None,
            user_metadata: json!({}),
            custom_app_metadata: None,
            confirm: false,
        }
    }

    pub fn user_metadata(mut self, value: Value) -> Self {
        self.user_metadata = value;
        self
    }

    pub fn app_metadata(mut self, value: Value) -> Self {
        self.custom_app_metadata = Some(value);
        self
    }

    pub fn phone(mut self, phone: &str) -> Self {
        self.phone = Some(phone.to_owned());
        self
    }

    pub fn confirmed(mut self) -> Self {
        self.confirm = true;
        self
    }
}

/// An identity as an OAuth provider returns it: `claims` is `structs.Map(provider.Claims)`, the
/// map GoTrue stores as `identity_data` (it must hold `sub`; `email` and `email_verified` are the
/// provider's primary email, as `internalExternalProviderCallback` sets them).
#[derive(Clone, Debug)]
pub struct OAuthIdentity {
    pub provider: String,
    pub claims: Value,
}

impl OAuthIdentity {
    pub fn new(provider: &str, claims: Value) -> Self {
        Self {
            provider: provider.to_owned(),
            claims,
        }
    }

    /// The claims `provider/github.go · GetUserData` builds, plus the primary email the
    /// callback adds (`email`, `email_verified`; `phone_verified` is always present).
    pub fn github(id: u64, login: &str, name: &str, email: &str, email_verified: bool) -> Self {
        let id = id.to_string();
        Self::new(
            "github",
            json!({
                "iss": "https://api.github.com",
                "sub": id,
                "name": name,
                "preferred_username": login,
                "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
                "full_name": name,
                "provider_id": id,
                "user_name": login,
                "email": email,
                "email_verified": email_verified,
                "phone_verified": false,
            }),
        )
    }
}

/// `models.DetermineAccountLinking`'s decision for an OAuth callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkingDecision {
    AccountExists,
    CreateAccount,
    LinkAccount,
}

/// What an OAuth callback did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OAuthOutcome {
    pub user_id: Uuid,
    pub decision: LinkingDecision,
    /// False when GoTrue committed but refused to sign in (`storage.NewCommitWithError`): the
    /// provider's email is unverified and a confirmation mail went out instead.
    pub signed_in: bool,
}

/// Which link of an email change the user follows (`/verify?type=email_change`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailChangeLink {
    /// The one sent to the current address (secure email change only).
    Current,
    /// The one sent to the new address.
    New,
}

/// `api/signup.go · Signup` for an email (`signUp({ email, password, options: { data } })`),
/// implicit flow. One transaction: insert with role `''` and provider-only app metadata, set the
/// role, insert the `email` identity, overwrite `raw_user_meta_data` with the identity data,
/// rewrite `raw_app_meta_data` from the identities, then either record the confirmation mail or,
/// when [`SignUp::confirm`] (autoconfirm), confirm; an autoconfirmed user then signs in, in a
/// second transaction.
///
/// A `SignUp` with app metadata is an admin `createUser` ([`admin_create_user`]): POST /signup
/// takes none.
pub async fn sign_up(db: &PgPool, user: &SignUp) -> Result<Uuid, sqlx::Error> {
    if user.custom_app_metadata.is_some() {
        return admin_create_user(db, user).await;
    }
    // validateEmail lower-cases; NewUser lower-cases again.
    let email = user.email.to_lowercase();
    let data = object(&user.user_metadata);
    // read: models.IsDuplicatedEmail (identities by email, then FindUserByEmailAndAudience).
    let mut tx = db.begin().await?;
    let app = json!({"provider": "email", "providers": ["email"]});
    signup_new_user(
        &mut tx,
        &NewUser {
            id: user.id,
            email: Some(email.clone()),
            phone: None,
            encrypted_password: Some(PASSWORD_HASH.to_owned()),
            app_metadata: app.clone(),
            user_metadata: Value::Object(data.clone()),
            is_anonymous: false,
        },
    )
    .await?;
    // read: FindIdentityByIdAndProvider(user.id, "email") -> not found.
    let mut identity_data = claims(user.id, Some(&email), None, false, false);
    for (k, v) in &data {
        if !identity_data.contains_key(k) {
            identity_data.insert(k.clone(), v.clone());
        }
    }
    let identity = insert_identity(&mut tx, user.id, "email", &mut identity_data).await?;
    let mut state = Memory {
        user_metadata: data,
        app_metadata: object(&app),
        identities: vec![],
    };
    remove_unconfirmed_identities(
        &mut tx,
        user.id,
        &mut state,
        identity,
        "email",
        &identity_data,
    )
    .await?;
    // skipped: INSERT INTO "audit_log_entries" (user_signedup or user_confirmation_requested).
    if user.confirm {
        confirm(&mut tx, user.id, &mut state.user_metadata).await?;
    } else {
        send_confirmation(&mut tx, user.id).await?;
    }
    tx.commit().await?;
    if user.confirm {
        // Signup: the autoconfirmed user is signed in, in a second transaction.
        let mut tx = db.begin().await?;
        // skipped: INSERT INTO "audit_log_entries" (login).
        issue_refresh_token(&mut tx, user.id).await?;
        tx.commit().await?;
    }
    Ok(user.id)
}

/// `api/signup.go · Signup` for a phone (`signUp({ phone, password, options: { data } })`). As
/// [`sign_up`], with a `phone` identity whose data has no phone (`Claims{Subject, Email: ""}`) and
/// an SMS OTP in `confirmation_token`; `autoconfirm` is `GOTRUE_SMS_AUTOCONFIRM`.
pub async fn sign_up_phone(
    db: &PgPool,
    phone: &str,
    user_metadata: Value,
    autoconfirm: bool,
) -> Result<Uuid, sqlx::Error> {
    let phone = validate_phone(phone)?;
    let data = object(&user_metadata);
    let id = Uuid::new_v4();
    // read: FindUserByPhoneAndAudience.
    let mut tx = db.begin().await?;
    let app = json!({"provider": "phone", "providers": ["phone"]});
    signup_new_user(
        &mut tx,
        &NewUser {
            id,
            email: None,
            phone: Some(phone.clone()),
            encrypted_password: Some(PASSWORD_HASH.to_owned()),
            app_metadata: app.clone(),
            user_metadata: Value::Object(data.clone()),
            is_anonymous: false,
        },
    )
    .await?;
    // read: FindIdentityByIdAndProvider(user.id, "phone") -> not found.
    let mut identity_data = claims(id, None, None, false, false);
    for (k, v) in &data {
        if !identity_data.contains_key(k) {
            identity_data.insert(k.clone(), v.clone());
        }
    }
    let identity = insert_identity(&mut tx, id, "phone", &mut identity_data).await?;
    let mut state = Memory {
        user_metadata: data,
        app_metadata: object(&app),
        identities: vec![],
    };
    remove_unconfirmed_identities(&mut tx, id, &mut state, identity, "phone", &identity_data)
        .await?;
    // skipped: INSERT INTO "audit_log_entries".
    if autoconfirm {
        confirm_phone(&mut tx, id).await?;
    } else {
        // sendPhoneConfirmation(phoneConfirmationOtp): the token is sha224(phone || otp).
        let sent_at = go_now();
        update_only(
            &mut tx,
            "users",
            id,
            vec![
                ("confirmation_token", Val::Str(token_hash())),
                ("confirmation_sent_at", Val::Time(Some(sent_at))),
            ],
        )
        .await?;
        // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE token_type = $1 and
        //          user_id = $2; INSERT INTO "one_time_tokens" (confirmation_token).
    }
    tx.commit().await?;
    if autoconfirm {
        let mut tx = db.begin().await?;
        // skipped: INSERT INTO "audit_log_entries" (login).
        issue_refresh_token(&mut tx, id).await?;
        tx.commit().await?;
    }
    Ok(id)
}

/// `api/anonymous.go · SignupAnonymously` (`signInAnonymously({ options: { data } })`): one
/// transaction, the insert (no email, no phone, `encrypted_password = ''`, `is_anonymous`, app
/// metadata `{}`: no provider), the role, and the session with `last_sign_in_at`. No identity.
pub async fn sign_up_anonymous(db: &PgPool, user_metadata: Value) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    let mut tx = db.begin().await?;
    signup_new_user(
        &mut tx,
        &NewUser {
            id,
            email: None,
            phone: None,
            encrypted_password: Some(String::new()),
            app_metadata: json!({}),
            user_metadata: Value::Object(object(&user_metadata)),
            is_anonymous: true,
        },
    )
    .await?;
    issue_refresh_token(&mut tx, id).await?;
    tx.commit().await?;
    Ok(id)
}

/// `api/verify.go · verifyPost` with `type=signup` and a token hash (the confirmation link):
/// confirm, mark the matching identities verified, rewrite the providers, sign in. One
/// transaction.
pub async fn confirm_sign_up(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    // read: FindUserByConfirmationToken (one_time_tokens, then users with its identities).
    let user = load_user(&mut tx, id).await?;
    let identities = load_identities(&mut tx, id).await?;
    let mut user_metadata = object_opt(&user.raw_user_meta_data);
    // signupVerify; skipped: INSERT INTO "audit_log_entries" (user_signedup).
    confirm(&mut tx, id, &mut user_metadata).await?;
    let email = user.email.clone().unwrap_or_default();
    for identity in &identities {
        let identity_email = identity.email.clone().unwrap_or_default();
        if identity_email.is_empty() || email.is_empty() || identity_email != email {
            continue;
        }
        let mut data = object(&identity.identity_data);
        merge(&mut data, &object(&json!({"email_verified": true})));
        update_identity_data_raw(&mut tx, identity.id, &data).await?;
    }
    let mut app_metadata = object_opt(&user.raw_app_meta_data);
    providers_and_session(&mut tx, id, &mut app_metadata).await?;
    tx.commit().await
}

/// `api/verify.go · verifyPost` with `type=sms` (the phone sign-up OTP): confirm the phone,
/// rewrite the providers, sign in. One transaction.
pub async fn confirm_phone_sign_up(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    // read: FindUserByPhoneAndAudience.
    let user = load_user(&mut tx, id).await?;
    // smsVerify; skipped: INSERT INTO "audit_log_entries" (user_signedup).
    confirm_phone(&mut tx, id).await?;
    no_longer_anonymous(&mut tx, &user).await?;
    // read: tx.Load(user, "Identities").
    let mut app_metadata = object_opt(&user.raw_app_meta_data);
    providers_and_session(&mut tx, id, &mut app_metadata).await?;
    tx.commit().await
}

/// A password sign-in of the user `id` (`signInWithPassword`, POST /token?grant_type=password):
/// see [`sign_in_with_password`], which this calls with the user's email.
pub async fn sign_in(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let email: Option<String> = sqlx::query_scalar("select email from users where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .flatten();
    match email {
        Some(email) => sign_in_with_password(db, &email).await,
        None => Err(refused("Invalid login credentials (no such email user)")),
    }
}

/// `api/token.go · ResourceOwnerPasswordGrant` with an email: the user is found outside any
/// transaction by `LOWER(email)`; GoTrue refuses an unconfirmed email ("Email not confirmed"), a
/// user without a password, a banned one. Then one transaction: audit, session, refresh token,
/// `UPDATE "users" SET "last_sign_in_at", "updated_at"` (both from the Go clock), AMR claim. That
/// update is all a password sign-in writes to `users`.
pub async fn sign_in_with_password(db: &PgPool, email: &str) -> Result<(), sqlx::Error> {
    let user = find_user_by_email_and_audience(db, email).await?;
    let Some((id, encrypted_password, email_confirmed_at, banned_until)) = user else {
        return Err(refused("Invalid login credentials"));
    };
    if encrypted_password.unwrap_or_default().is_empty() {
        return Err(refused("Invalid login credentials (no password)"));
    }
    if banned_until.is_some_and(|until| until > Utc::now()) {
        return Err(refused("User is banned"));
    }
    // (User.Authenticate may rehash a bcrypt cost-4 or >10 password in memory: not written. With
    // database encryption on, a re-encrypted password is written by
    // `db.UpdateOnly(user, "encrypted_password")` outside any transaction.)
    if email_confirmed_at.is_none() {
        return Err(refused("Email not confirmed"));
    }
    let mut tx = db.begin().await?;
    // skipped: INSERT INTO "audit_log_entries" (login).
    issue_refresh_token(&mut tx, id).await?;
    tx.commit().await
}

/// An OAuth sign-up: the provider callback for an identity nobody has. The same endpoint as
/// [`oauth_sign_in`]; see [`oauth_callback`].
pub async fn oauth_sign_up(db: &PgPool, identity: &OAuthIdentity) -> Result<Uuid, sqlx::Error> {
    Ok(oauth_callback(db, identity).await?.user_id)
}

/// An OAuth sign-in: the provider callback for an identity a user already has (every time, the
/// identity's data is replaced and merged into `raw_user_meta_data`). See [`oauth_callback`].
pub async fn oauth_sign_in(db: &PgPool, identity: &OAuthIdentity) -> Result<Uuid, sqlx::Error> {
    Ok(oauth_callback(db, identity).await?.user_id)
}

/// `api/external.go · internalExternalProviderCallback` → `createAccountFromExternalIdentity`,
/// implicit flow, one transaction: `DetermineAccountLinking` decides from the database whether
/// the identity exists (`AccountExists`: its data replaced, merged into `raw_user_meta_data`),
/// belongs to the one user with the same verified email (`LinkAccount`: a new identity, merged
/// likewise) or to nobody (`CreateAccount`: a new user whose metadata is the claims). An
/// unconfirmed user then loses its other identities and password and takes the identity data as
/// metadata; a verified provider email confirms it. Last, the session (`last_sign_in_at`).
pub async fn oauth_callback(
    db: &PgPool,
    identity: &OAuthIdentity,
) -> Result<OAuthOutcome, sqlx::Error> {
    let provider = identity.provider.as_str();
    let mut identity_data = object(&identity.claims);
    let sub = match identity_data.get("sub") {
        Some(Value::String(sub)) => sub.clone(),
        _ => return Err(refused("error missing provider id")),
    };
    let (primary_email, email_verified) = match identity_data.get("email") {
        Some(Value::String(email)) if !email.is_empty() => (
            email.clone(),
            identity_data.get("email_verified") == Some(&Value::Bool(true)),
        ),
        _ => return Err(refused("Error getting user email from external provider")),
    };
    let mut candidate_email = primary_email.to_lowercase();
    let verified_emails: Vec<String> = if email_verified {
        vec![primary_email.to_lowercase()]
    } else {
        vec![]
    };

    let mut tx = db.begin().await?;

    // models.DetermineAccountLinking
    let existing = find_identity(&mut tx, &sub, provider).await?;
    let mut decision = LinkingDecision::CreateAccount;
    let mut linked_user: Option<UserRow> = None;
    let mut existing_identity: Option<IdentityRow> = None;
    if let Some(found) = existing {
        let user = load_user(&mut tx, found.user_id).await?;
        candidate_email = user.email.clone().unwrap_or_default();
        decision = LinkingDecision::AccountExists;
        linked_user = Some(user);
        existing_identity = Some(found);
    } else if verified_emails.is_empty() {
        if is_duplicated_email(&mut tx, &candidate_email).await? {
            candidate_email = String::new();
        }
    } else {
        let similar_identities: Vec<(Uuid, String)> = sqlx::query_as(
            r#"SELECT identities.user_id, identities.provider FROM "identities" AS identities
                WHERE email = any ($1)"#,
        )
        .bind(&verified_emails)
        .fetch_all(&mut *tx)
        .await?;
        let similar_users: Vec<Uuid> = sqlx::query_scalar(
            r#"SELECT users.id FROM "users" AS users
                WHERE email = any ($1) and is_sso_user = false"#,
        )
        .bind(&verified_emails)
        .fetch_all(&mut *tx)
        .await?;
        let linking: Vec<Uuid> = similar_identities
            .iter()
            .filter(|(_, p)| linking_domain(p) == linking_domain(provider))
            .map(|(user_id, _)| *user_id)
            .collect();
        let target = if linking.is_empty() {
            match similar_users.len() {
                0 => None,
                1 => Some(similar_users[0]),
                _ => return Err(refused("Multiple accounts with the same email address")),
            }
        } else if linking.iter().all(|u| *u == linking[0]) {
            Some(linking[0])
        } else {
            return Err(refused("Multiple accounts with the same email address"));
        };
        if let Some(user_id) = target {
            linked_user = Some(load_user(&mut tx, user_id).await?);
            decision = LinkingDecision::LinkAccount;
        }
    }

    // The user as GoTrue holds it in memory: its id, confirmation, metadata and the identities
    // `FindUserByID` loaded eagerly (empty for a new user).
    let user_id;
    let confirmed;
    let banned_until;
    let mut state;
    let new_identity;
    match decision {
        LinkingDecision::LinkAccount => {
            let user = linked_user.expect("a user to link to");
            user_id = user.id;
            confirmed = user.email_confirmed_at.is_some();
            banned_until = user.banned_until;
            state = Memory {
                user_metadata: object_opt(&user.raw_user_meta_data),
                app_metadata: object_opt(&user.raw_app_meta_data),
                identities: load_identities(&mut tx, user_id).await?,
            };
            new_identity = insert_identity(&mut tx, user_id, provider, &mut identity_data).await?;
            let mut meta = state.user_metadata.clone();
            merge(&mut meta, &identity_data);
            update_only(
                &mut tx,
                "users",
                user_id,
                vec![("raw_user_meta_data", Val::Json(Value::Object(meta.clone())))],
            )
            .await?;
            state.user_metadata = meta;
            update_app_meta_data_providers(&mut tx, user_id, &mut state.app_metadata).await?;
            // skipped: INSERT INTO "audit_log_entries" (identity_linked).
        }
        LinkingDecision::CreateAccount => {
            user_id = Uuid::new_v4();
            confirmed = false;
            banned_until = None;
            let app = json!({"provider": provider, "providers": [provider]});
            // The insert carries the claims as the provider sent them (the email's case too).
            signup_new_user(
                &mut tx,
                &NewUser {
                    id: user_id,
                    email: (!candidate_email.is_empty()).then(|| candidate_email.clone()),
                    phone: None,
                    encrypted_password: Some(String::new()),
                    app_metadata: app.clone(),
                    user_metadata: Value::Object(identity_data.clone()),
                    is_anonymous: false,
                },
            )
            .await?;
            // Identity.BeforeCreate lower-cases identity_data.email in the very map the user
            // holds as its metadata: what follows writes the lower-cased email.
            new_identity = insert_identity(&mut tx, user_id, provider, &mut identity_data).await?;
            state = Memory {
                user_metadata: identity_data.clone(),
                app_metadata: object(&app),
                identities: vec![],
            };
        }
        LinkingDecision::AccountExists => {
            let user = linked_user.expect("the identity's user");
            let found = existing_identity.expect("the identity");
            user_id = user.id;
            confirmed = user.email_confirmed_at.is_some();
            banned_until = user.banned_until;
            state = Memory {
                user_metadata: object_opt(&user.raw_user_meta_data),
                app_metadata: object_opt(&user.raw_app_meta_data),
                identities: load_identities(&mut tx, user_id).await?,
            };
            // identity.IdentityData = claims; tx.UpdateOnly(identity, "identity_data",
            // "last_sign_in_at"): BeforeUpdate lower-cases the email; last_sign_in_at is written
            // back unchanged (GoTrue never bumps it here).
            lowercase_email(&mut identity_data);
            update_only(
                &mut tx,
                "identities",
                found.id,
                vec![
                    (
                        "identity_data",
                        Val::Json(Value::Object(identity_data.clone())),
                    ),
                    ("last_sign_in_at", Val::Time(found.last_sign_in_at)),
                ],
            )
            .await?;
            let mut meta = state.user_metadata.clone();
            merge(&mut meta, &identity_data);
            update_only(
                &mut tx,
                "users",
                user_id,
                vec![("raw_user_meta_data", Val::Json(Value::Object(meta.clone())))],
            )
            .await?;
            state.user_metadata = meta;
            update_app_meta_data_providers(&mut tx, user_id, &mut state.app_metadata).await?;
            new_identity = found.id;
        }
    }

    if banned_until.is_some_and(|until| until > Utc::now()) {
        // GoTrue returns the error: the transaction rolls back.
        return Err(refused("User is banned"));
    }

    if !confirmed {
        remove_unconfirmed_identities(
            &mut tx,
            user_id,
            &mut state,
            new_identity,
            provider,
            &identity_data,
        )
        .await?;
        if email_verified {
            // skipped: INSERT INTO "audit_log_entries" (user_signedup).
            confirm(&mut tx, user_id, &mut state.user_metadata).await?;
        } else {
            if !candidate_email.is_empty() {
                send_confirmation(&mut tx, user_id).await?;
            }
            // GOTRUE_MAILER_ALLOW_UNVERIFIED_EMAIL_SIGN_INS off: storage.NewCommitWithError, the
            // transaction commits and no session is issued.
            tx.commit().await?;
            return Ok(OAuthOutcome {
                user_id,
                decision,
                signed_in: false,
            });
        }
    } else {
        // skipped: INSERT INTO "audit_log_entries" (login).
    }
    issue_refresh_token(&mut tx, user_id).await?;
    // skipped: (only when a flow_state exists) DELETE FROM "flow_state" AS flow_state WHERE ...
    tx.commit().await?;
    Ok(OAuthOutcome {
        user_id,
        decision,
        signed_in: true,
    })
}

/// `api/admin.go · adminUserCreate` (`auth.admin.createUser`). One transaction, in this order:
/// insert (role `''`, app metadata `{provider, providers}`), the `email` identity, the `phone`
/// identity, audit, the role, the custom app metadata merged, then `email_confirm`
/// ([`SignUp::confirm`]) confirms and `phone_confirm` confirms the phone. The identity comes
/// before the role. The user metadata is written as given (no identity data, no
/// `email_verified` unless confirmed).
pub async fn admin_create_user(db: &PgPool, user: &SignUp) -> Result<Uuid, sqlx::Error> {
    let email = user.email.to_lowercase();
    let phone = match &user.phone {
        Some(phone) => Some(validate_phone(phone)?),
        None => None,
    };
    let mut providers = vec![];
    if !email.is_empty() {
        providers.push("email");
    }
    if phone.is_some() {
        providers.push("phone");
    }
    if providers.is_empty() {
        return Err(refused(
            "Cannot create a user without either an email or phone",
        ));
    }
    // read: IsDuplicatedEmail, IsDuplicatedPhone. A random password is generated and hashed when
    // none is given.
    let app = json!({"provider": providers[0], "providers": providers});
    let mut tx = db.begin().await?;
    insert_user(
        &mut tx,
        &NewUser {
            id: user.id,
            email: (!email.is_empty()).then(|| email.clone()),
            phone: phone.clone(),
            encrypted_password: Some(PASSWORD_HASH.to_owned()),
            app_metadata: app.clone(),
            user_metadata: Value::Object(object(&user.user_metadata)),
            is_anonymous: false,
        },
    )
    .await?;
    if !email.is_empty() {
        let mut data = claims(user.id, Some(&email), None, false, false);
        insert_identity(&mut tx, user.id, "email", &mut data).await?;
    }
    if let Some(phone) = &phone {
        let mut data = claims(user.id, None, Some(phone), false, false);
        insert_identity(&mut tx, user.id, "phone", &mut data).await?;
    }
    // skipped: INSERT INTO "audit_log_entries" (user_signedup, actor: the admin).
    set_role(&mut tx, user.id, DEFAULT_ROLE).await?;
    if let Some(custom) = &user.custom_app_metadata {
        let mut app_metadata = object(&app);
        merge(&mut app_metadata, &object(custom));
        update_only(
            &mut tx,
            "users",
            user.id,
            vec![("raw_app_meta_data", Val::Json(Value::Object(app_metadata)))],
        )
        .await?;
    }
    if user.confirm {
        let mut user_metadata = object(&user.user_metadata);
        confirm(&mut tx, user.id, &mut user_metadata).await?;
        if phone.is_some() {
            confirm_phone(&mut tx, user.id).await?;
        }
    }
    tx.commit().await?;
    Ok(user.id)
}

/// Turns an anonymous user into a permanent one the way GoTrue's docs and code do it:
/// `updateUser({ email })` (PUT /user), then the email-change link. With `autoconfirm`
/// (`GOTRUE_MAILER_AUTOCONFIRM` on) PUT /user runs `emailChangeVerify` inline: one transaction,
/// no session, and `raw_app_meta_data` keeps `{}`. Without it (the default), PUT /user records
/// an email change (no current-address token: the user has no email) and the link's
/// verification does the rest, rewrites the providers and signs in.
pub async fn convert_anonymous(
    db: &PgPool,
    id: Uuid,
    email: &str,
    autoconfirm: bool,
) -> Result<(), sqlx::Error> {
    let email = email.to_lowercase();
    if !autoconfirm {
        request_email_change(db, id, &email).await?;
        verify_email_change(db, id, EmailChangeLink::New).await?;
        return Ok(());
    }
    // read (requireAuthentication): the user; IsDuplicatedEmail.
    let user = load_user_outside(db, id).await?;
    if !user.is_anonymous {
        return Err(refused(
            "the user is not anonymous: use request_email_change",
        ));
    }
    let mut tx = db.begin().await?;
    // UserUpdate: user.EmailChange = params.Email (in memory only), then emailChangeVerify.
    confirm_email_change_tx(&mut tx, &user, &email).await?;
    // skipped: INSERT INTO "audit_log_entries" (user_modified).
    tx.commit().await
}

/// Anonymous (or any) user links an OAuth identity (`linkIdentity`, the callback's
/// `linkIdentityToUser`), implicit flow, one transaction: the new identity; for a user without
/// email, `UpdateUserEmailFromIdentities` takes the identity's email and clears every pending
/// token, then a verified provider email confirms the user and clears `is_anonymous` (an
/// unverified one sends a confirmation mail and commits without signing in); the providers are
/// rewritten and the session issued. The provider's claims are NOT merged into
/// `raw_user_meta_data`. Returns whether a session was issued.
pub async fn link_identity(
    db: &PgPool,
    id: Uuid,
    identity: &OAuthIdentity,
) -> Result<bool, sqlx::Error> {
    let provider = identity.provider.as_str();
    let mut identity_data = object(&identity.claims);
    let sub = match identity_data.get("sub") {
        Some(Value::String(sub)) => sub.clone(),
        _ => return Err(refused("error missing provider id")),
    };
    let email_verified = identity_data.get("email_verified") == Some(&Value::Bool(true));
    // read: the target user, from the access token that started the link.
    let user = load_user_outside(db, id).await?;
    let mut user_metadata = object_opt(&user.raw_user_meta_data);
    let mut app_metadata = object_opt(&user.raw_app_meta_data);
    let mut tx = db.begin().await?;
    if find_identity(&mut tx, &sub, provider).await?.is_some() {
        return Err(refused("Identity is already linked"));
    }
    insert_identity(&mut tx, id, provider, &mut identity_data).await?;
    // skipped: INSERT INTO "audit_log_entries" (identity_linked).
    if user.email.clone().unwrap_or_default().is_empty() {
        // User.UpdateUserEmailFromIdentities(tx, mailerAutoconfirm = false)
        let mut identities = load_identities(&mut tx, id).await?;
        if !identities
            .iter()
            .any(|i| i.email.clone().unwrap_or_default().is_empty())
        {
            let rank = |i: &IdentityRow| {
                if i.email.clone().unwrap_or_default().is_empty() {
                    2
                } else if object(&i.identity_data).get("email_verified") == Some(&Value::Bool(true))
                {
                    0
                } else {
                    1
                }
            };
            identities.sort_by(|a, b| {
                rank(a)
                    .cmp(&rank(b))
                    .then(a.created_at.cmp(&b.created_at))
                    .then(a.id.to_string().cmp(&b.id.to_string()))
            });
            let mut primary = None;
            for i in &identities {
                let email = i.email.clone().unwrap_or_default();
                if find_user_by_email_and_audience(&mut *tx, &email)
                    .await?
                    .is_none()
                {
                    primary = Some(i);
                    break;
                }
            }
            let Some(primary) = primary else {
                return Err(refused("UserEmailUniqueConflictError"));
            };
            let primary_email = primary.email.clone().unwrap_or_default();
            let primary_verified =
                object(&primary.identity_data).get("email_verified") == Some(&Value::Bool(true));
            // SetEmail
            update_only(
                &mut tx,
                "users",
                id,
                vec![("email", Val::Text(Some(primary_email.clone())))],
            )
            .await?;
            clear_all_pending_tokens(&mut tx, id).await?;
            if primary_email.is_empty() || !primary_verified {
                update_only(
                    &mut tx,
                    "users",
                    id,
                    vec![("email_confirmed_at", Val::Time(None))],
                )
                .await?;
                merge(
                    &mut user_metadata,
                    &object(&json!({"email_verified": false})),
                );
                update_only(
                    &mut tx,
                    "users",
                    id,
                    vec![(
                        "raw_user_meta_data",
                        Val::Json(Value::Object(user_metadata.clone())),
                    )],
                )
                .await?;
            }
        }
        if !email_verified {
            send_confirmation(&mut tx, id).await?;
            // storage.NewCommitWithError: committed, no session.
            tx.commit().await?;
            return Ok(false);
        }
        confirm(&mut tx, id, &mut user_metadata).await?;
        no_longer_anonymous(&mut tx, &user).await?;
    }
    providers_and_session(&mut tx, id, &mut app_metadata).await?;
    tx.commit().await?;
    Ok(true)
}

/// `PUT /user` with a new email (`updateUser({ email })`), secure email change on (GoTrue's
/// default): see [`request_email_change_with`].
pub async fn request_email_change(
    db: &PgPool,
    id: Uuid,
    new_email: &str,
) -> Result<(), sqlx::Error> {
    request_email_change_with(db, id, new_email, true).await
}

/// `api/user.go · UserUpdate` → `api/mail.go · sendEmailChange`, implicit flow. One
/// transaction: `UPDATE "users" SET email_change = <new, lower-cased>, email_change_confirm_status
/// = 0, email_change_sent_at, email_change_token_current (a token for the current address when
/// `secure` and the user has an email; otherwise left as it was), email_change_token_new,
/// updated_at`, the one-time tokens, the audit. `email` itself is untouched until confirmation.
pub async fn request_email_change_with(
    db: &PgPool,
    id: Uuid,
    new_email: &str,
    secure: bool,
) -> Result<(), sqlx::Error> {
    let new_email = new_email.to_lowercase();
    // read (requireAuthentication): the user; IsDuplicatedEmail.
    let user = load_user_outside(db, id).await?;
    let current = user.email.clone().unwrap_or_default();
    let mut tx = db.begin().await?;
    if new_email != current {
        // skipped: (PKCE only) INSERT INTO "flow_state".
        let token_current = if secure && !current.is_empty() {
            token_hash()
        } else {
            user.email_change_token_current.clone().unwrap_or_default()
        };
        let token_new = token_hash();
        let sent_at = go_now();
        update_only(
            &mut tx,
            "users",
            id,
            vec![
                (
                    "email_change_token_current",
                    Val::Str(token_current.clone()),
                ),
                ("email_change_token_new", Val::Str(token_new)),
                ("email_change", Val::Str(new_email.clone())),
                ("email_change_sent_at", Val::Time(Some(sent_at))),
                ("email_change_confirm_status", Val::Small(0)),
            ],
        )
        .await?;
        if !token_current.is_empty() {
            // skipped: DELETE FROM "one_time_tokens" ... token_type = 'email_change_token_current';
            //          INSERT INTO "one_time_tokens" (relates_to = the current email).
        }
        // skipped: DELETE FROM "one_time_tokens" ... token_type = 'email_change_token_new';
        //          INSERT INTO "one_time_tokens" (relates_to = the new email).
    }
    // skipped: INSERT INTO "audit_log_entries" (user_modified).
    tx.commit().await
}

/// Follows the email-change links until the change is done: with a secure change pending
/// (`email_change_token_current` set, status 0, the user has an email), the current address's
/// link first, then the new one's: two transactions; otherwise the new address's link only.
pub async fn confirm_email_change(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let user = load_user_outside(db, id).await?;
    if is_secure_pending(&user) {
        verify_email_change(db, id, EmailChangeLink::Current).await?;
    }
    if verify_email_change(db, id, EmailChangeLink::New).await? {
        Ok(())
    } else {
        Err(refused("the email change is still waiting for a link"))
    }
}

/// `api/verify.go · verifyPost` with `type=email_change` and a token hash: ONE link, one
/// transaction. The first of two secure links only records it (`email_change_confirm_status =
/// 1`, its token cleared) and returns `false`. Otherwise (`emailChangeVerify`): the `email`
/// identity updated (or created, verified), `is_anonymous` cleared, `ConfirmEmailChange`
/// (`email` takes `email_change`, the change columns reset), `Confirm` if the user was
/// unconfirmed, the identity's data rewritten, the providers rewritten, a session issued
/// (`last_sign_in_at`); returns `true`.
pub async fn verify_email_change(
    db: &PgPool,
    id: Uuid,
    link: EmailChangeLink,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    // read: FindUserByEmailChangeToken (one_time_tokens, then the user with its identities).
    let user = load_user(&mut tx, id).await?;
    let email_change = user.email_change.clone().unwrap_or_default();
    if email_change.is_empty() {
        return Err(refused("Email link is invalid or has expired"));
    }
    if is_secure_pending(&user) {
        // read: FindOneTimeToken(current), FindOneTimeToken(new).
        let mut current = user.email_change_token_current.clone().unwrap_or_default();
        let mut new = user.email_change_token_new.clone().unwrap_or_default();
        match link {
            EmailChangeLink::Current => {
                current = String::new();
                // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens
                //          WHERE token_type = $1 and user_id = $2 (email_change_token_current).
            }
            EmailChangeLink::New => {
                new = String::new();
                // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens
                //          WHERE token_type = $1 and user_id = $2 (email_change_token_new).
            }
        }
        update_only(
            &mut tx,
            "users",
            id,
            vec![
                ("email_change_confirm_status", Val::Small(1)),
                ("email_change_token_current", Val::Str(current)),
                ("email_change_token_new", Val::Str(new)),
            ],
        )
        .await?;
        tx.commit().await?;
        return Ok(false);
    }
    let mut app_metadata = confirm_email_change_tx(&mut tx, &user, &email_change).await?;
    providers_and_session(&mut tx, id, &mut app_metadata).await?;
    tx.commit().await?;
    Ok(true)
}

/// `api/user.go · UserUpdate` with a new phone → `api/phone.go · sendPhoneConfirmation(
/// phoneChangeVerification)` (`GOTRUE_SMS_AUTOCONFIRM` off). One transaction: `UPDATE "users" SET
/// phone_change, phone_change_sent_at, phone_change_token, updated_at`, the one-time token, the
/// audit. `phone` is untouched until confirmation.
pub async fn request_phone_change(db: &PgPool, id: Uuid, phone: &str) -> Result<(), sqlx::Error> {
    let phone = validate_phone(phone)?;
    // read (requireAuthentication): the user; IsDuplicatedPhone.
    let user = load_user_outside(db, id).await?;
    let mut tx = db.begin().await?;
    if user.phone.clone().unwrap_or_default() != phone {
        let token = token_hash();
        let sent_at = go_now();
        update_only(
            &mut tx,
            "users",
            id,
            vec![
                ("phone_change", Val::Str(phone.clone())),
                ("phone_change_token", Val::Str(token)),
                ("phone_change_sent_at", Val::Time(Some(sent_at))),
            ],
        )
        .await?;
        // skipped: DELETE FROM "one_time_tokens" ... token_type = 'phone_change_token';
        //          INSERT INTO "one_time_tokens" (relates_to = the new phone).
    }
    // skipped: INSERT INTO "audit_log_entries" (user_modified).
    tx.commit().await
}

/// `api/verify.go · verifyPost` with `type=phone_change` (the SMS OTP) → `smsVerify`. One
/// transaction: the `phone` identity updated or created (verified), `ConfirmPhoneChange`
/// (`phone` takes `phone_change`, `phone_confirmed_at` from the Go clock), the identity's data
/// rewritten, `is_anonymous` cleared, the providers rewritten, a session (`last_sign_in_at`).
pub async fn confirm_phone_change(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    // read: FindUserByPhoneChangeAndAudience
    //       (instance_id = $1 and phone_change = $2 and aud = $3 and is_sso_user = false).
    let user = load_user(&mut tx, id).await?;
    let phone = user.phone_change.clone().unwrap_or_default();
    if phone.is_empty() {
        return Err(refused("Token has expired or is invalid"));
    }
    // skipped: INSERT INTO "audit_log_entries" (user_modified).
    match find_identity(&mut tx, &id.to_string(), "phone").await? {
        None => {
            let mut data = claims(id, None, Some(&phone), false, true);
            insert_identity(&mut tx, id, "phone", &mut data).await?;
        }
        Some(identity) => {
            let mut data = object(&identity.identity_data);
            merge(
                &mut data,
                &object(&json!({"phone": phone, "phone_verified": true})),
            );
            update_identity_data_raw(&mut tx, identity.id, &data).await?;
        }
    }
    // User.ConfirmPhoneChange
    let confirmed_at = go_now();
    update_only(
        &mut tx,
        "users",
        id,
        vec![
            ("phone", Val::Text(Some(phone.clone()))),
            ("phone_change", Val::Str(String::new())),
            ("phone_change_token", Val::Str(String::new())),
            ("phone_confirmed_at", Val::Time(Some(confirmed_at))),
        ],
    )
    .await?;
    // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE user_id = $1.
    if let Some(identity) = find_identity(&mut tx, &id.to_string(), "phone").await? {
        let mut data = object(&identity.identity_data);
        if data.contains_key("phone") {
            data.insert("phone".into(), Value::String(phone.clone()));
        }
        lowercase_email(&mut data);
        update_only(
            &mut tx,
            "identities",
            identity.id,
            vec![("identity_data", Val::Json(Value::Object(data)))],
        )
        .await?;
    }
    no_longer_anonymous(&mut tx, &user).await?;
    // read: tx.Load(user, "Identities").
    let mut app_metadata = object_opt(&user.raw_app_meta_data);
    providers_and_session(&mut tx, id, &mut app_metadata).await?;
    tx.commit().await
}

/// `api/user.go · UserUpdate` with `data` (`updateUser({ data })`): the keys merged into
/// `raw_user_meta_data` in Go (a `null` removes its key; nested objects are replaced, not
/// merged) and the whole object written; then the audit. One transaction.
pub async fn update_user_metadata(db: &PgPool, id: Uuid, data: Value) -> Result<(), sqlx::Error> {
    let user = load_user_outside(db, id).await?;
    let mut user_metadata = object_opt(&user.raw_user_meta_data);
    merge(&mut user_metadata, &object(&data));
    let mut tx = db.begin().await?;
    update_only(
        &mut tx,
        "users",
        id,
        vec![(
            "raw_user_meta_data",
            Val::Json(Value::Object(user_metadata)),
        )],
    )
    .await?;
    // skipped: INSERT INTO "audit_log_entries" (user_modified).
    tx.commit().await
}

/// `api/admin.go · adminUserUpdate` with `app_metadata` (`auth.admin.updateUserById`): the user
/// is loaded outside the transaction, the keys merged in Go (a `null` removes its key), the
/// whole object written, then the audit. One transaction.
pub async fn set_app_metadata(
    db: &PgPool,
    id: Uuid,
    app_metadata: Value,
) -> Result<(), sqlx::Error> {
    let user = load_user_outside(db, id).await?;
    let mut merged = object_opt(&user.raw_app_meta_data);
    merge(&mut merged, &object(&app_metadata));
    let mut tx = db.begin().await?;
    update_only(
        &mut tx,
        "users",
        id,
        vec![("raw_app_meta_data", Val::Json(Value::Object(merged)))],
    )
    .await?;
    // skipped: INSERT INTO "audit_log_entries" (user_modified).
    tx.commit().await
}

/// `api/admin.go · adminUserDelete` (`auth.admin.deleteUser(id)`): the audit, then
/// `DELETE FROM "users" AS users WHERE users.id = $1`; identities, sessions (and through them
/// refresh tokens and AMR claims), factors and one-time tokens go by `on delete cascade`. One
/// transaction.
pub async fn delete_user(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    // read (loadUser): FindUserByID.
    load_user_outside(db, id).await?;
    let mut tx = db.begin().await?;
    // skipped: INSERT INTO "audit_log_entries" (user_deleted).
    sqlx::query(r#"DELETE FROM "users" AS users WHERE users.id = $1"#)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// `api/admin.go · adminUserDelete` with `should_soft_delete: true`
/// (`auth.admin.deleteUser(id, true)`). One transaction:
///
/// 1. audit (skipped);
/// 2. `User.SoftDeleteUser`: one `UPDATE "users"` of `confirmation_token = ''`, `deleted_at` (Go
///    clock), `email`, `email_change` = `base64url(sha256(id || value))` (43 characters; computed
///    even from an empty value, so a phone-only user gets one too), `email_change_token_current
///    = ''`, `email_change_token_new = ''`, `encrypted_password = NULL`, `phone`, `phone_change` =
///    the first 15 characters of the same hash, `phone_change_token = ''`, `recovery_token =
///    ''`, `updated_at`; then the one-time tokens deleted; then `raw_user_meta_data = '{}'` and
///    `raw_app_meta_data = '{}'` in two more updates; then the sessions deleted;
/// 3. `User.SoftDeleteUserIdentities`: per identity, `identity_data = '{}'` then `provider_id =
///    base64url(sha256(user_id || provider || ':' || provider_id))`, raw updates (no
///    `updated_at`); identities are kept;
/// 4. factors, WebAuthn credentials and sessions deleted (skipped).
///
/// A user already soft-deleted: only the audit, nothing written.
pub async fn soft_delete_user(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    // loadUser (outside the transaction). GoTrue obfuscates in Go
    // (`obfuscateValue`: RawURLEncoding(sha256(id.String() + value))); Postgres computes the same
    // bytes here, in the read GoTrue does anyway.
    // (deleted_at, email, phone, email_change, phone_change), the last four obfuscated.
    type Obfuscated = (Option<DateTime<Utc>>, String, String, String, String);
    let row: Option<Obfuscated> = sqlx::query_as(
        r#"select deleted_at,
                  rtrim(translate(encode(sha256(convert_to(id::text || coalesce(email, ''), 'UTF8')), 'base64'), '+/', '-_'), '='),
                  left(rtrim(translate(encode(sha256(convert_to(id::text || coalesce(phone, ''), 'UTF8')), 'base64'), '+/', '-_'), '='), 15),
                  rtrim(translate(encode(sha256(convert_to(id::text || coalesce(email_change, ''), 'UTF8')), 'base64'), '+/', '-_'), '='),
                  left(rtrim(translate(encode(sha256(convert_to(id::text || coalesce(phone_change, ''), 'UTF8')), 'base64'), '+/', '-_'), '='), 15)
             from users where instance_id = $1 and id = $2 limit 1"#,
    )
    .bind(INSTANCE_ID)
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some((deleted_at, email, phone, email_change, phone_change)) = row else {
        return Err(refused("User not found"));
    };
    let mut tx = db.begin().await?;
    // skipped: INSERT INTO "audit_log_entries" (user_deleted).
    if deleted_at.is_some() {
        return tx.commit().await;
    }
    // User.SoftDeleteUser
    let deleted_at = go_now();
    update_only(
        &mut tx,
        "users",
        id,
        vec![
            ("email", Val::Text(Some(email))),
            ("phone", Val::Text(Some(phone))),
            ("encrypted_password", Val::Text(None)),
            ("email_change", Val::Str(email_change)),
            ("phone_change", Val::Str(phone_change)),
            ("confirmation_token", Val::Str(String::new())),
            ("recovery_token", Val::Str(String::new())),
            ("email_change_token_current", Val::Str(String::new())),
            ("email_change_token_new", Val::Str(String::new())),
            ("phone_change_token", Val::Str(String::new())),
            ("deleted_at", Val::Time(Some(deleted_at))),
        ],
    )
    .await?;
    // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE user_id = $1.
    update_only(
        &mut tx,
        "users",
        id,
        vec![("raw_user_meta_data", Val::Json(json!({})))],
    )
    .await?;
    update_only(
        &mut tx,
        "users",
        id,
        vec![("raw_app_meta_data", Val::Json(json!({})))],
    )
    .await?;
    // skipped: DELETE FROM sessions WHERE user_id = $1 (models.Logout).
    // User.SoftDeleteUserIdentities: FindIdentitiesByUserID, then per identity two raw updates.
    let identities: Vec<(Uuid, String)> = sqlx::query_as(
        r#"SELECT identities.id,
                  rtrim(translate(encode(sha256(convert_to(user_id::text || provider || ':' || provider_id, 'UTF8')), 'base64'), '+/', '-_'), '=')
             FROM "identities" AS identities WHERE user_id = $1"#,
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    for (identity_id, obfuscated_provider_id) in identities {
        update_identity_data_raw(&mut tx, identity_id, &Map::new()).await?;
        sqlx::query("update identities set provider_id = $1 where id = $2")
            .bind(obfuscated_provider_id)
            .bind(identity_id)
            .execute(&mut *tx)
            .await?;
    }
    // skipped: DELETE FROM mfa_factors WHERE user_id = $1 (models.DeleteFactorsByUserId).
    // skipped: DELETE FROM webauthn_credentials WHERE user_id = $1.
    // skipped: DELETE FROM sessions WHERE user_id = $1 (models.Logout, again).
    tx.commit().await
}

/// `models/cleanup.go · Cleanup.Clean`, the anonymous-users statement (with
/// `GOTRUE_DB_CLEANUP_ENABLED` and anonymous sign-ins on, one of the cleanup statements GoTrue
/// runs in turn after successful POST/PUT/PATCH/DELETE requests): a hard delete of up to 100
/// anonymous users older than 30 days by the DATABASE clock. Returns the rows deleted.
pub async fn cleanup_anonymous_users(db: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let deleted = sqlx::query(
        r#"delete from "users" where id in (select id from "users" where created_at < now() - interval '30 days' and is_anonymous is true limit 100 for update skip locked);"#,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

// ---------------------------------------------------------------------------------------------
// Shared steps (models/*.go methods and api helpers)
// ---------------------------------------------------------------------------------------------

/// The Go clock as GoTrue's writes carry it: microseconds (pop truncates its
/// `created_at`/`updated_at` with `Truncate(time.Microsecond)`; the driver sends microseconds).
fn go_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A stand-in for `crypto.GenerateTokenHash(emailOrPhone, otp)`: `sha224` as 56 hex digits.
fn token_hash() -> String {
    let hex = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    hex[..56].to_owned()
}

fn refused(why: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("GoTrue would refuse: {why}"))
}

/// `api/phone.go · validatePhone`: `+` and spaces removed, E.164 digits required.
fn validate_phone(phone: &str) -> Result<String, sqlx::Error> {
    let phone = phone.strip_prefix('+').unwrap_or(phone).replace(' ', "");
    let valid = (2..=15).contains(&phone.len())
        && phone.bytes().all(|b| b.is_ascii_digit())
        && !phone.starts_with('0');
    if valid {
        Ok(phone)
    } else {
        Err(refused("Invalid phone number format (E.164 required)"))
    }
}

/// `models.GetAccountLinkingDomain` with no `GOTRUE_EXPERIMENTAL_PROVIDER_LINKING_DOMAINS`.
fn linking_domain(provider: &str) -> &str {
    if provider.starts_with("sso:") {
        provider
    } else {
        "default"
    }
}

/// A JSON object as Go's `map[string]interface{}` (anything else, `null` included, is empty).
fn object(value: &Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    }
}

fn object_opt(value: &Option<Value>) -> Map<String, Value> {
    value.as_ref().map(object).unwrap_or_default()
}

/// `UpdateUserMetaData`/`UpdateAppMetaData`/`UpdateIdentityData`: each key of `updates` set,
/// a `null` deleting its key; top level only.
fn merge(target: &mut Map<String, Value>, updates: &Map<String, Value>) {
    for (key, value) in updates {
        if value.is_null() {
            target.remove(key);
        } else {
            target.insert(key.clone(), value.clone());
        }
    }
}

/// `Identity.BeforeCreate`/`BeforeUpdate`: `identity_data.email` lower-cased.
fn lowercase_email(data: &mut Map<String, Value>) {
    if let Some(Value::String(email)) = data.get_mut("email") {
        *email = email.to_lowercase();
    }
}

/// `structs.Map(provider.Claims{Subject, Email, Phone, EmailVerified, PhoneVerified})`: empty
/// strings omitted, both booleans always present.
fn claims(
    sub: Uuid,
    email: Option<&str>,
    phone: Option<&str>,
    email_verified: bool,
    phone_verified: bool,
) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("sub".into(), Value::String(sub.to_string()));
    if let Some(email) = email.filter(|e| !e.is_empty()) {
        map.insert("email".into(), Value::String(email.to_owned()));
    }
    if let Some(phone) = phone.filter(|p| !p.is_empty()) {
        map.insert("phone".into(), Value::String(phone.to_owned()));
    }
    map.insert("email_verified".into(), Value::Bool(email_verified));
    map.insert("phone_verified".into(), Value::Bool(phone_verified));
    map
}

/// A bound value of a pop update.
enum Val {
    /// A Go `string` column: never NULL.
    Str(String),
    /// A `storage.NullString` or `*string` column: `""`/nil is NULL.
    Text(Option<String>),
    Time(Option<DateTime<Utc>>),
    Json(Value),
    Bool(bool),
    Small(i16),
}

/// pop's `Update(model, excluded...)` as `storage.UpdateOnly(model, cols...)` calls it:
/// `UPDATE "<table>" AS <table> SET "<col>" = $1, ..., "updated_at" = $n WHERE <table>.id = $m`,
/// the columns sorted, `updated_at` set by pop from the Go clock after the values were read.
async fn update_only(
    tx: &mut Tx,
    table: &str,
    id: Uuid,
    mut cols: Vec<(&'static str, Val)>,
) -> Result<(), sqlx::Error> {
    cols.push(("updated_at", Val::Time(Some(go_now()))));
    cols.sort_by(|a, b| a.0.cmp(b.0));
    let set = cols
        .iter()
        .enumerate()
        .map(|(i, (col, _))| format!("\"{col}\" = ${}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE \"{table}\" AS {table} SET {set} WHERE {table}.id = ${}",
        cols.len() + 1
    );
    let mut query = sqlx::query(&sql);
    for (_, value) in cols {
        query = match value {
            Val::Str(v) => query.bind(v),
            Val::Text(v) => query.bind(v),
            Val::Time(v) => query.bind(v),
            Val::Json(v) => query.bind(v),
            Val::Bool(v) => query.bind(v),
            Val::Small(v) => query.bind(v),
        };
    }
    query.bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// A new `models.User` as `NewUser`/`ToUserModel` build it.
struct NewUser {
    id: Uuid,
    email: Option<String>,
    phone: Option<String>,
    /// `*string`: `Some("")` for a user without a password, as `NewUser` leaves it.
    encrypted_password: Option<String>,
    app_metadata: Value,
    user_metadata: Value,
    is_anonymous: bool,
}

/// `tx.Create(&user)`: every `db`-tagged field of `models.User` but the read-only
/// `confirmed_at`, sorted (33 of the 35 columns: `is_super_admin` is not in the struct and stays
/// NULL). `created_at` = `updated_at` = one Go-clock reading.
async fn insert_user(tx: &mut Tx, user: &NewUser) -> Result<(), sqlx::Error> {
    let now = go_now();
    let none: Option<DateTime<Utc>> = None;
    sqlx::query(
        r#"INSERT INTO "users" ("aud", "banned_until", "confirmation_sent_at", "confirmation_token", "created_at", "deleted_at", "email", "email_change", "email_change_confirm_status", "email_change_sent_at", "email_change_token_current", "email_change_token_new", "email_confirmed_at", "encrypted_password", "id", "instance_id", "invited_at", "is_anonymous", "is_sso_user", "last_sign_in_at", "phone", "phone_change", "phone_change_sent_at", "phone_change_token", "phone_confirmed_at", "raw_app_meta_data", "raw_user_meta_data", "reauthentication_sent_at", "reauthentication_token", "recovery_sent_at", "recovery_token", "role", "updated_at") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)"#,
    )
    .bind(AUD) // aud
    .bind(none) // banned_until
    .bind(none) // confirmation_sent_at
    .bind("") // confirmation_token
    .bind(now) // created_at
    .bind(none) // deleted_at
    .bind(&user.email) // email (NullString: "" is NULL)
    .bind("") // email_change
    .bind(0i16) // email_change_confirm_status
    .bind(none) // email_change_sent_at
    .bind("") // email_change_token_current
    .bind("") // email_change_token_new
    .bind(none) // email_confirmed_at
    .bind(&user.encrypted_password) // encrypted_password
    .bind(user.id) // id
    .bind(INSTANCE_ID) // instance_id
    .bind(none) // invited_at
    .bind(user.is_anonymous) // is_anonymous
    .bind(false) // is_sso_user
    .bind(none) // last_sign_in_at
    .bind(&user.phone) // phone (NullString)
    .bind("") // phone_change
    .bind(none) // phone_change_sent_at
    .bind("") // phone_change_token
    .bind(none) // phone_confirmed_at
    .bind(&user.app_metadata) // raw_app_meta_data
    .bind(&user.user_metadata) // raw_user_meta_data
    .bind(none) // reauthentication_sent_at
    .bind("") // reauthentication_token
    .bind(none) // recovery_sent_at
    .bind("") // recovery_token
    .bind("") // role: '' until SetRole
    .bind(now) // updated_at
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `User.SetRole`.
async fn set_role(tx: &mut Tx, id: Uuid, role: &str) -> Result<(), sqlx::Error> {
    update_only(
        tx,
        "users",
        id,
        vec![("role", Val::Str(role.trim().to_owned()))],
    )
    .await
}

/// `api/signup.go · signupNewUser` (a nested `Transaction`, i.e. the caller's): insert, role,
/// then `conn.Reload(user)` (read).
async fn signup_new_user(tx: &mut Tx, user: &NewUser) -> Result<(), sqlx::Error> {
    insert_user(tx, user).await?;
    set_role(tx, user.id, DEFAULT_ROLE).await
}

/// `api/external.go · createNewIdentity` → `models.NewIdentity` + `tx.Create(identity)`:
/// `last_sign_in_at` is `NewIdentity`'s Go-clock reading, `created_at` = `updated_at` pop's
/// later one, the id drawn by pop, `provider_id` = `identity_data.sub`, `identity_data.email`
/// lower-cased (in place, as `BeforeCreate` does to the shared Go map). The `email` column is
/// generated. Returns the identity's id.
async fn insert_identity(
    tx: &mut Tx,
    user_id: Uuid,
    provider: &str,
    data: &mut Map<String, Value>,
) -> Result<Uuid, sqlx::Error> {
    let provider_id = match data.get("sub") {
        Some(Value::String(sub)) => sub.clone(),
        _ => return Err(refused("error missing provider id")),
    };
    let last_sign_in_at = go_now();
    lowercase_email(data);
    let id = Uuid::new_v4();
    let now = go_now();
    sqlx::query(
        r#"INSERT INTO "identities" ("created_at", "id", "identity_data", "last_sign_in_at", "provider", "provider_id", "updated_at", "user_id") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
    )
    .bind(now)
    .bind(id)
    .bind(Value::Object(data.clone()))
    .bind(last_sign_in_at)
    .bind(provider)
    .bind(provider_id)
    .bind(now)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// `Identity.UpdateIdentityData`'s raw query: no `updated_at`.
async fn update_identity_data_raw(
    tx: &mut Tx,
    identity_id: Uuid,
    data: &Map<String, Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query("update identities set identity_data = $1 where id = $2")
        .bind(Value::Object(data.clone()))
        .bind(identity_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What GoTrue holds of a user in memory across a handler.
struct Memory {
    user_metadata: Map<String, Value>,
    app_metadata: Map<String, Value>,
    /// `user.Identities` as loaded (eagerly) before the handler's own identity.
    identities: Vec<IdentityRow>,
}

/// `User.UpdateAppMetaDataProviders`: the providers of the user's identities, by `created_at`,
/// de-duplicated; `provider` = the first of them; merged and written whole.
async fn update_app_meta_data_providers(
    tx: &mut Tx,
    id: Uuid,
    app_metadata: &mut Map<String, Value>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<String> = sqlx::query_scalar(
        r#"SELECT provider FROM "identities" AS identities WHERE user_id = $1 ORDER BY created_at asc"#,
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    let mut providers: Vec<String> = vec![];
    for provider in rows {
        if !providers.contains(&provider) {
            providers.push(provider);
        }
    }
    let mut payload = Map::new();
    payload.insert("providers".into(), json!(providers));
    if let Some(first) = providers.first() {
        payload.insert("provider".into(), Value::String(first.clone()));
    }
    merge(app_metadata, &payload);
    update_only(
        tx,
        "users",
        id,
        vec![(
            "raw_app_meta_data",
            Val::Json(Value::Object(app_metadata.clone())),
        )],
    )
    .await
}

/// `User.RemoveUnconfirmedIdentities`: a non-email/phone provider nulls the password; the
/// identity's data becomes the user's metadata (written through `UpdateUserMetaData`, so its
/// `null` keys are dropped); every other identity GoTrue holds is destroyed; the providers are
/// rewritten.
async fn remove_unconfirmed_identities(
    tx: &mut Tx,
    id: Uuid,
    state: &mut Memory,
    identity_id: Uuid,
    provider: &str,
    identity_data: &Map<String, Value>,
) -> Result<(), sqlx::Error> {
    if provider != "email" && provider != "phone" {
        update_only(
            tx,
            "users",
            id,
            vec![("encrypted_password", Val::Text(None))],
        )
        .await?;
    }
    let mut meta = identity_data.clone();
    meta.retain(|_, v| !v.is_null());
    update_only(
        tx,
        "users",
        id,
        vec![("raw_user_meta_data", Val::Json(Value::Object(meta.clone())))],
    )
    .await?;
    state.user_metadata = meta;
    for other in &state.identities {
        if other.id != identity_id {
            sqlx::query(r#"DELETE FROM "identities" AS identities WHERE identities.id = $1"#)
                .bind(other.id)
                .execute(&mut **tx)
                .await?;
        }
    }
    update_app_meta_data_providers(tx, id, &mut state.app_metadata).await
}

/// `User.Confirm`: `confirmation_token = ''`, `email_confirmed_at` from the Go clock;
/// `email_verified: true` merged into the metadata GoTrue holds and written whole; the one-time
/// tokens deleted.
async fn confirm(
    tx: &mut Tx,
    id: Uuid,
    user_metadata: &mut Map<String, Value>,
) -> Result<(), sqlx::Error> {
    let now = go_now();
    update_only(
        tx,
        "users",
        id,
        vec![
            ("confirmation_token", Val::Str(String::new())),
            ("email_confirmed_at", Val::Time(Some(now))),
        ],
    )
    .await?;
    merge(user_metadata, &object(&json!({"email_verified": true})));
    update_only(
        tx,
        "users",
        id,
        vec![(
            "raw_user_meta_data",
            Val::Json(Value::Object(user_metadata.clone())),
        )],
    )
    .await?;
    // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE user_id = $1.
    Ok(())
}

/// `User.ConfirmPhone`.
async fn confirm_phone(tx: &mut Tx, id: Uuid) -> Result<(), sqlx::Error> {
    let now = go_now();
    update_only(
        tx,
        "users",
        id,
        vec![
            ("confirmation_token", Val::Str(String::new())),
            ("phone_confirmed_at", Val::Time(Some(now))),
        ],
    )
    .await?;
    // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE user_id = $1.
    Ok(())
}

/// `api/mail.go · sendConfirmation` (implicit flow): the token and `confirmation_sent_at` (read
/// from the Go clock before the mail is sent), then the one-time token.
async fn send_confirmation(tx: &mut Tx, id: Uuid) -> Result<(), sqlx::Error> {
    let token = token_hash();
    let sent_at = go_now();
    update_only(
        tx,
        "users",
        id,
        vec![
            ("confirmation_token", Val::Str(token)),
            ("confirmation_sent_at", Val::Time(Some(sent_at))),
        ],
    )
    .await?;
    // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE token_type = $1 and
    //          user_id = $2; INSERT INTO "one_time_tokens" (confirmation_token).
    Ok(())
}

/// `User.ClearAllPendingTokens`.
async fn clear_all_pending_tokens(tx: &mut Tx, id: Uuid) -> Result<(), sqlx::Error> {
    let none: Option<DateTime<Utc>> = None;
    update_only(
        tx,
        "users",
        id,
        vec![
            ("confirmation_token", Val::Str(String::new())),
            ("confirmation_sent_at", Val::Time(none)),
            ("recovery_token", Val::Str(String::new())),
            ("recovery_sent_at", Val::Time(none)),
            ("email_change", Val::Str(String::new())),
            ("email_change_token_current", Val::Str(String::new())),
            ("email_change_token_new", Val::Str(String::new())),
            ("email_change_sent_at", Val::Time(none)),
            ("email_change_confirm_status", Val::Small(0)),
            ("phone_change", Val::Str(String::new())),
            ("phone_change_token", Val::Str(String::new())),
            ("phone_change_sent_at", Val::Time(none)),
            ("reauthentication_token", Val::Str(String::new())),
            ("reauthentication_sent_at", Val::Time(none)),
        ],
    )
    .await?;
    // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE user_id = $1.
    Ok(())
}

/// `tokens.Service.IssueRefreshToken`, refresh token algorithm 0 (`models.createRefreshToken`):
/// `last_sign_in_at` is read from the Go clock first, then the session, the refresh token, and
/// `User.UpdateLastSignInAt`, then the AMR claim.
async fn issue_refresh_token(tx: &mut Tx, id: Uuid) -> Result<(), sqlx::Error> {
    let last_sign_in_at = go_now();
    // skipped: INSERT INTO "sessions" ("aal", "created_at", "factor_id", "id", "ip", "not_after",
    //          "oauth_client_id", "refresh_token_counter", "refresh_token_hmac_key",
    //          "refreshed_at", "scopes", "tag", "updated_at", "user_agent", "user_id") VALUES (...)
    // skipped: INSERT INTO "refresh_tokens" ("created_at", "instance_id", "parent", "revoked",
    //          "session_id", "token", "updated_at", "user_id") VALUES (...) returning id
    update_only(
        tx,
        "users",
        id,
        vec![("last_sign_in_at", Val::Time(Some(last_sign_in_at)))],
    )
    .await?;
    // skipped: INSERT INTO mfa_amr_claims(id, session_id, created_at, updated_at,
    //          authentication_method) values (...) ON CONFLICT ON CONSTRAINT
    //          mfa_amr_claims_session_id_authentication_method_pkey DO UPDATE SET updated_at = $6
    Ok(())
}

/// `emailChangeVerify` past the secure two-link stage (also run inline by PUT /user for an
/// anonymous user under autoconfirm): returns the app metadata GoTrue holds.
async fn confirm_email_change_tx(
    tx: &mut Tx,
    user: &UserRow,
    email_change: &str,
) -> Result<Map<String, Value>, sqlx::Error> {
    let id = user.id;
    // skipped: INSERT INTO "audit_log_entries" (user_modified).
    match find_identity(tx, &id.to_string(), "email").await? {
        None => {
            let mut data = claims(id, Some(email_change), None, true, false);
            insert_identity(tx, id, "email", &mut data).await?;
        }
        Some(identity) => {
            let mut data = object(&identity.identity_data);
            merge(
                &mut data,
                &object(&json!({"email": email_change, "email_verified": true})),
            );
            update_identity_data_raw(tx, identity.id, &data).await?;
        }
    }
    no_longer_anonymous(tx, user).await?;
    // read: tx.Load(user, "Identities").
    // User.ConfirmEmailChange(tx, zeroConfirmation)
    update_only(
        tx,
        "users",
        id,
        vec![
            ("email", Val::Text(Some(email_change.to_owned()))),
            ("email_change", Val::Str(String::new())),
            ("email_change_token_current", Val::Str(String::new())),
            ("email_change_token_new", Val::Str(String::new())),
            ("email_change_confirm_status", Val::Small(0)),
        ],
    )
    .await?;
    // skipped: DELETE FROM "one_time_tokens" AS one_time_tokens WHERE user_id = $1.
    if user.email_confirmed_at.is_none() {
        let mut user_metadata = object_opt(&user.raw_user_meta_data);
        confirm(tx, id, &mut user_metadata).await?;
    }
    if let Some(identity) = find_identity(tx, &id.to_string(), "email").await? {
        let mut data = object(&identity.identity_data);
        if data.contains_key("email") {
            data.insert("email".into(), Value::String(email_change.to_owned()));
            lowercase_email(&mut data);
            update_only(
                tx,
                "identities",
                identity.id,
                vec![("identity_data", Val::Json(Value::Object(data)))],
            )
            .await?;
        }
    }
    Ok(object_opt(&user.raw_app_meta_data))
}

/// A secure email change whose first link is still to be followed (`emailChangeVerify`'s test,
/// with `email_change_token_current` standing for the configuration that set it).
fn is_secure_pending(user: &UserRow) -> bool {
    user.email_change_confirm_status.unwrap_or(0) == 0
        && !user.email.clone().unwrap_or_default().is_empty()
        && !user
            .email_change_token_current
            .clone()
            .unwrap_or_default()
            .is_empty()
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: Option<String>,
    phone: Option<String>,
    email_change: Option<String>,
    phone_change: Option<String>,
    email_change_token_current: Option<String>,
    email_change_token_new: Option<String>,
    email_change_confirm_status: Option<i16>,
    email_confirmed_at: Option<DateTime<Utc>>,
    banned_until: Option<DateTime<Utc>>,
    raw_app_meta_data: Option<Value>,
    raw_user_meta_data: Option<Value>,
    is_anonymous: bool,
}

const USER_COLUMNS: &str = "id, email, phone, email_change, phone_change, \
     email_change_token_current, email_change_token_new, email_change_confirm_status, \
     email_confirmed_at, banned_until, raw_app_meta_data, raw_user_meta_data, is_anonymous";

/// `models.FindUserByID` (`instance_id = $1 and id = $2`), inside the transaction.
async fn load_user(tx: &mut Tx, id: Uuid) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM \"users\" AS users WHERE instance_id = $1 and id = $2 LIMIT 1"
    ))
    .bind(INSTANCE_ID)
    .bind(id)
    .fetch_one(&mut **tx)
    .await
}

/// `models.FindUserByID` outside any transaction (GoTrue's `loadUser`/`requireAuthentication`).
async fn load_user_outside(db: &PgPool, id: Uuid) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM \"users\" AS users WHERE instance_id = $1 and id = $2 LIMIT 1"
    ))
    .bind(INSTANCE_ID)
    .bind(id)
    .fetch_one(db)
    .await
}

/// What the password grant reads: id, `encrypted_password`, `email_confirmed_at`, `banned_until`.
type PasswordUser = (
    Uuid,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// `models.FindUserByEmailAndAudience`, GoTrue's email lookup:
/// `instance_id = $1 and LOWER(email) = $2 and aud = $3 and is_sso_user = false`, the email
/// lower-cased in Go.
async fn find_user_by_email_and_audience<'e, E>(
    executor: E,
    email: &str,
) -> Result<Option<PasswordUser>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    sqlx::query_as(
        r#"SELECT users.id, users.encrypted_password, users.email_confirmed_at, users.banned_until FROM "users" AS users WHERE instance_id = $1 and LOWER(email) = $2 and aud = $3 and is_sso_user = false LIMIT 1"#,
    )
    .bind(INSTANCE_ID)
    .bind(email.to_lowercase())
    .bind(AUD)
    .fetch_optional(executor)
    .await
}

/// `models.IsDuplicatedEmail` with no current user: identities by (lower-cased) email whose
/// user is in the audience, then `FindUserByEmailAndAudience`.
async fn is_duplicated_email(tx: &mut Tx, email: &str) -> Result<bool, sqlx::Error> {
    let by_identity: Option<Uuid> = sqlx::query_scalar(
        r#"SELECT users.id FROM "identities" AS identities JOIN "users" AS users ON users.id = identities.user_id
            WHERE identities.email = $1 and users.aud = $2 and identities.provider not like 'sso:%' LIMIT 1"#,
    )
    .bind(email.to_lowercase())
    .bind(AUD)
    .fetch_optional(&mut **tx)
    .await?;
    if by_identity.is_some() {
        return Ok(true);
    }
    Ok(find_user_by_email_and_audience(&mut **tx, email)
        .await?
        .is_some())
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    id: Uuid,
    user_id: Uuid,
    identity_data: Value,
    email: Option<String>,
    last_sign_in_at: Option<DateTime<Utc>>,
    created_at: Option<DateTime<Utc>>,
}

const IDENTITY_COLUMNS: &str = "identities.id, identities.user_id, identities.identity_data, \
     identities.email, identities.last_sign_in_at, identities.created_at";

/// `models.FindIdentityByIdAndProvider`.
async fn find_identity(
    tx: &mut Tx,
    provider_id: &str,
    provider: &str,
) -> Result<Option<IdentityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {IDENTITY_COLUMNS} FROM \"identities\" AS identities \
          WHERE provider_id = $1 AND provider = $2 LIMIT 1"
    ))
    .bind(provider_id)
    .bind(provider)
    .fetch_optional(&mut **tx)
    .await
}

/// `models.FindIdentitiesByUserID` (and the eager `Identities` of `FindUserByID`).
async fn load_identities(tx: &mut Tx, user_id: Uuid) -> Result<Vec<IdentityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {IDENTITY_COLUMNS} FROM \"identities\" AS identities WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await
}

/// `user.UpdateIsAnonymous(false)` where GoTrue verifies an anonymous user's first identity:
/// the user is permanent from then on.
async fn no_longer_anonymous(tx: &mut Tx, user: &UserRow) -> Result<(), sqlx::Error> {
    if user.is_anonymous {
        update_only(
            tx,
            "users",
            user.id,
            vec![("is_anonymous", Val::Bool(false))],
        )
        .await?;
    }
    Ok(())
}

/// The tail of every verification GoTrue signs the user in at: the providers rewritten from
/// the identities (`UpdateAppMetaDataProviders`), then, after `tx.Reload(user)`, the session
/// (`IssueRefreshToken`).
async fn providers_and_session(
    tx: &mut Tx,
    id: Uuid,
    app_metadata: &mut Map<String, Value>,
) -> Result<(), sqlx::Error> {
    update_app_meta_data_providers(tx, id, app_metadata).await?;
    issue_refresh_token(tx, id).await
}
