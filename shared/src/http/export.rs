//! `GET /api/chat/conversations/{id}/export`: one conversation to take
//! away, as JSON (every message of every branch) or Markdown (the active
//! path, to read).

use std::collections::BTreeMap;

use lambda_http::{
    http::{header, HeaderValue},
    Body, Request, RequestExt, Response,
};
use serde::Serialize;

use super::{
    conversations::{MessageView, SettingsView},
    extract::{authenticate, path_conversation_id},
    handle, ApiError,
};
use crate::{
    app::App,
    domain::{format_timestamp, Message, MessageId, MessageStatus, Role},
    store::{Store, Tree},
};

/// What `?format=` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Markdown,
}

impl Format {
    fn of(req: &Request) -> Result<Self, ApiError> {
        let query = req.query_string_parameters_ref();
        match query.and_then(|q| q.first("format")) {
            None | Some("json") => Ok(Self::Json),
            Some("markdown") => Ok(Self::Markdown),
            Some(_) => Err(ApiError::bad_request(
                "invalid_format",
                "format is json (the default) or markdown",
            )),
        }
    }
}

#[derive(Serialize)]
struct Export {
    id: String,
    title: String,
    settings: SettingsView,
    created_at: String,
    messages: Vec<MessageView>,
}

/// One of the caller's conversations as a file: `?format=json` (the
/// default) or `?format=markdown`.
pub async fn export_conversation<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("export-conversation", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let format = Format::of(&req)?;
        let tree = app.chat.export(&user, id).await?;
        let name = file_name(tree.conversation.title.as_str());
        let (body, kind, extension) = match format {
            Format::Json => {
                let export = Export {
                    id: tree.conversation.id.to_string(),
                    title: tree.conversation.title.as_str().to_owned(),
                    created_at: format_timestamp(tree.conversation.created_at),
                    messages: every_message(tree.path, tree.off)
                        .into_iter()
                        .map(MessageView::from)
                        .collect(),
                    settings: SettingsView::of(tree.conversation.settings, app.chat.catalogue()),
                };
                let bytes = serde_json::to_vec(&export).unwrap_or_default();
                (bytes, "application/json", "json")
            }
            Format::Markdown => (
                markdown(&tree).into_bytes(),
                "text/markdown; charset=utf-8",
                "md",
            ),
        };
        let mut resp = Response::new(Body::from(body));
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        let disposition = format!("attachment; filename=\"{name}.{extension}\"");
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(resp)
    })
    .await
}

/// Every message of every branch, oldest first, each with its parent and
/// its versions (the messages with the same parent).
fn every_message(path: Vec<Message>, off: Vec<Message>) -> Vec<Message> {
    let mut all: Vec<Message> = path.into_iter().chain(off).collect();
    all.sort_by_key(|m| m.id);
    let mut versions: BTreeMap<Option<MessageId>, Vec<MessageId>> = BTreeMap::new();
    for m in &all {
        versions.entry(m.parent).or_default().push(m.id);
    }
    for m in &mut all {
        m.versions = versions[&m.parent].clone();
    }
    all
}

/// The active path as Markdown: the title, then each message under its
/// author and time.
fn markdown(tree: &Tree) -> String {
    let mut out = format!("# {}\n", tree.conversation.title.as_str());
    for m in &tree.path {
        let who = match m.role {
            Role::User => "You",
            Role::Assistant => "Assistant",
        };
        out.push_str(&format!(
            "\n## {who} · {}\n\n",
            format_timestamp(m.created_at)
        ));
        match &m.status {
            MessageStatus::Complete => {}
            MessageStatus::Pending { .. } => out.push_str("_(still being written)_\n\n"),
            MessageStatus::Failed { error } => out.push_str(&format!("_(failed: {error})_\n\n")),
            MessageStatus::Cancelled => out.push_str("_(stopped)_\n\n"),
        }
        if !m.content.is_empty() {
            out.push_str(m.content.trim_end());
            out.push('\n');
        }
    }
    out
}

/// A file name from the title: letters and digits kept (lower case, ASCII),
/// every run of anything else one `-`, at most 60 characters.
fn file_name(title: &str) -> String {
    let mut name = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
        if name.len() >= 60 {
            break;
        }
    }
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "conversation".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_slugs_of_the_title() {
        assert_eq!(
            file_name("How do I organize patient files?"),
            "how-do-i-organize-patient-files"
        );
        assert_eq!(file_name("  Ünïcode — only  "), "n-code-only");
        assert_eq!(file_name("\"; rm -rf /"), "rm-rf");
        assert_eq!(file_name("???"), "conversation");
        assert!(file_name(&"a".repeat(500)).len() <= 60);
    }
}
