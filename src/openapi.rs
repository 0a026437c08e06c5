//! The OpenAPI document: generated from the handlers' own annotations, served at
//! `/openapi.json`, printed by `usersync openapi`, and committed under `openapi/`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::auth::webhook::WEBHOOK_SECRET_HEADER;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "usersync",
        description = "Keeps Supabase's auth.users and the application's users table in step.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "users", description = "Sync one user; one user's drift"),
        (name = "status", description = "Project-wide drift status"),
        (name = "hooks", description = "Sync signals from Supabase"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// `bearer`: a Supabase access token, a `service_role` key, or a secret key.
/// `apikey`: a secret key (`sb_secret_...`) in the `apikey` header.
/// `webhook_secret`: the configured `USERSYNC_WEBHOOK_SECRET` (database webhooks only).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("apikey"))),
        );
        components.add_security_scheme(
            "webhook_secret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(WEBHOOK_SECRET_HEADER))),
        );
    }
}

/// The whole document, as served and committed.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::http::router_and_openapi().1
}
