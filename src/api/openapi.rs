//! The OpenAPI 3.1 document, generated from the handlers' annotations and the views' types,
//! served at `/api/v1/openapi.json`: the full reference of the API, and what Schemathesis
//! fuzzes the running server from.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{files, problem, threads, writes};
use crate::store::views;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Go!Chat inbox API",
        version = "1",
        description = "Threads, their feed and agent actions. Authenticate with \
            `Authorization: Bearer <API key>` (`gochat api-key create`). Errors are \
            `application/problem+json`. Writes publish jobs and answer 202 (or 200 with \
            `?wait=`)."
    ),
    paths(
        threads::list,
        threads::detail,
        threads::feed,
        threads::customer_inbox,
        files::attachment,
        files::raw,
        writes::reply,
        writes::comment,
        writes::update_thread,
        writes::upsert_customer,
    ),
    components(schemas(
        problem::Problem,
        views::ThreadCard,
        views::FeedItem,
        views::MessageItem,
        views::CommentItem,
        views::EventItem,
        views::AttachmentItem,
        views::CustomerDetail,
        views::ContactItem,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "threads", description = "The inbox, threads and their feed"),
        (name = "files", description = "Attachments and raw mail"),
        (name = "writes", description = "Agent actions, as jobs"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `gochat api-key create`"))
                    .build(),
            ),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
