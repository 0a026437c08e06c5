//! Supabase Auth's own statement sequences (reference/supabase.md §1.5), replayed the way
//! GoTrue runs them: one transaction each, as `supabase_auth_admin` with its `search_path` of
//! `auth`, unqualified names, and no rights on `public`.

use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A new email user, as `signUp` sends it.
pub struct SignUp {
    pub id: Uuid,
    pub email: String,
    pub user_metadata: Value,
    /// App metadata an admin adds right after the insert (admin `createUser`); `None` for a
    /// plain sign-up, which has only `provider`/`providers`.
    pub custom_app_metadata: Option<Value>,
}

impl SignUp {
    pub fn new(email: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            email: email.to_owned(),
            user_metadata: json!({}),
            custom_app_metadata: None,
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
}

/// A transaction of Supabase Auth's: `db` is logged in as `supabase_auth_admin`, whose
/// role-level `search_path` is `auth`.
async fn as_auth_admin(db: &PgPool) -> Transaction<'static, Postgres> {
    db.begin().await.unwrap()
}

/// `signupNewUser` (or admin `createUser`): insert with an empty role and provider-only app
/// metadata, set the role, merge custom app metadata, record the confirmation mail, insert the
/// identity; one transaction. Returns the commit's result: the caller asserts it committed.
pub async fn sign_up(db: &PgPool, user: &SignUp) -> Result<Uuid, sqlx::Error> {
    let mut tx = as_auth_admin(db).await;
    let provider_only = json!({"provider": "email", "providers": ["email"]});
    sqlx::query(
        "insert into users (instance_id, id, aud, role, email, encrypted_password,
             confirmation_token, recovery_token, email_change_token_new, email_change,
             raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at,
             phone_change, phone_change_token, email_change_token_current,
             email_change_confirm_status, reauthentication_token, is_sso_user, is_anonymous)
         values ('00000000-0000-0000-0000-000000000000', $1, 'authenticated', '', $2,
             '$2a$10$abcdefghijklmnopqrstuuJ0rV0yqQ6m8m8m8m8m8m8m8m8m8m8m8', '', '', '', '',
             $3, $4, false, now(), now(), '', '', '', 0, '', false, false)",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&provider_only)
    .bind(&user.user_metadata)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update users set role = 'authenticated', updated_at = now() where id = $1")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    if let Some(custom) = &user.custom_app_metadata {
        let mut merged = provider_only.clone();
        merged
            .as_object_mut()
            .unwrap()
            .extend(custom.as_object().unwrap().clone());
        sqlx::query("update users set raw_app_meta_data = $2, updated_at = now() where id = $1")
            .bind(user.id)
            .bind(&merged)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "update users set confirmation_token = $2, confirmation_sent_at = now(),
                          updated_at = now()
          where id = $1",
    )
    .bind(user.id)
    .bind(format!("pkce_{}", Uuid::new_v4().simple()))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into identities (provider_id, user_id, identity_data, provider,
             last_sign_in_at, created_at, updated_at)
         values ($1::text, $1, $2, 'email', now(), now(), now())",
    )
    .bind(user.id)
    .bind(json!({"sub": user.id.to_string(), "email": user.email, "email_verified": false}))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(user.id)
}

/// A sign-in: `last_sign_in_at` and `updated_at` bumped; for an OAuth sign-in, the provider's
/// claims merged into `raw_user_meta_data` as well.
pub async fn sign_in(db: &PgPool, id: Uuid, provider_claims: Option<Value>) {
    let mut tx = as_auth_admin(db).await;
    if let Some(claims) = provider_claims {
        sqlx::query(
            "update users set raw_user_meta_data = coalesce(raw_user_meta_data, '{}') || $2,
                              updated_at = now()
              where id = $1",
        )
        .bind(id)
        .bind(claims)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    sqlx::query("update users set last_sign_in_at = now(), updated_at = now() where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// `PUT /user` with a new email: the address waits in `email_change` until confirmed.
pub async fn request_email_change(db: &PgPool, id: Uuid, new_email: &str) {
    let mut tx = as_auth_admin(db).await;
    sqlx::query(
        "update users set email_change = $2, email_change_token_new = $3,
                          email_change_sent_at = now(), updated_at = now()
          where id = $1",
    )
    .bind(id)
    .bind(new_email)
    .bind(format!("tok_{}", Uuid::new_v4().simple()))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// `ConfirmEmailChange`: the pending address becomes `email`.
pub async fn confirm_email_change(db: &PgPool, id: Uuid) {
    let mut tx = as_auth_admin(db).await;
    sqlx::query(
        "update users set email = email_change, email_change = '', email_change_token_new = '',
                          email_change_confirm_status = 0, updated_at = now()
          where id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Admin `updateUserById` with new app metadata.
pub async fn set_app_metadata(db: &PgPool, id: Uuid, app_metadata: Value) {
    let mut tx = as_auth_admin(db).await;
    sqlx::query("update users set raw_app_meta_data = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(app_metadata)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Admin `deleteUser` (hard): the row goes, identities cascade.
pub async fn delete_user(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = as_auth_admin(db).await;
    sqlx::query("delete from users where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Admin `deleteUser` with `should_soft_delete`: `deleted_at` set, email and phone obfuscated,
/// identities removed.
pub async fn soft_delete_user(db: &PgPool, id: Uuid) {
    let mut tx = as_auth_admin(db).await;
    sqlx::query(
        "update users set deleted_at = now(), email = md5(email) || '@deleted.invalid',
                          phone = null, encrypted_password = '', updated_at = now()
          where id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("delete from identities where user_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}
