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
        (name = "status", description = "Project-wide drift status and the drifted rows"),
        (name = "reconciliations", description = "Batch reconciliation runs"),
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

/// Documents, on every operation, the answers the edge can give before a handler runs: 413
/// (body limit) and 431 (header limit) anywhere, and 503 (overloaded, timed out, database
/// unavailable) on the API routes. Handlers document what only they can say.
pub fn document_edge_responses(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type,
    };

    let problem = |description: &str, retry_after: bool| -> RefOr<Response> {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        if retry_after {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("Seconds to wait before retrying"))
                    .build(),
            );
        }
        response.build().into()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        let api = path.starts_with("/v1/");
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut operation.responses.responses;
            responses
                .entry("413".into())
                .or_insert_with(|| problem("The request body is larger than the limit", false));
            responses.entry("431".into()).or_insert_with(|| {
                problem("The request's headers are larger than the limit", false)
            });
            if api {
                responses.entry("503".into()).or_insert_with(|| {
                    problem(
                        "Overloaded, timed out, or the database is unavailable",
                        true,
                    )
                });
            }
        }
    }
}
