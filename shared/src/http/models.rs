//! `GET /api/chat/models`: the catalogue as clients may see it (never an
//! endpoint id). Answered from the configuration: no table, no RunPod.

use lambda_http::{Body, Request, Response};
use serde::Serialize;

use super::{extract::authenticate, handle, ok_json};
use crate::{app::App, catalogue::ModelSpec};

#[derive(Serialize)]
struct ModelView<'a> {
    id: &'a str,
    name: &'a str,
    description: &'a str,
    context_tokens: u32,
    max_output_tokens: u32,
    default: bool,
}

impl<'a> From<&'a ModelSpec> for ModelView<'a> {
    fn from(m: &'a ModelSpec) -> Self {
        Self {
            id: m.id.as_str(),
            name: &m.name,
            description: &m.description,
            context_tokens: m.context_tokens,
            max_output_tokens: m.max_output_tokens,
            default: m.default,
        }
    }
}

#[derive(Serialize)]
struct ModelsResponse<'a> {
    models: Vec<ModelView<'a>>,
}

/// The models a conversation may choose, the default marked.
pub async fn list_models<M, S>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("list-models", app, req, |req, _meta| async move {
        authenticate(app, &req)?;
        let models = app.chat.catalogue().models();
        Ok(ok_json(&ModelsResponse {
            models: models.iter().map(|m| ModelView::from(&**m)).collect(),
        }))
    })
    .await
}
