//! `GET /api/chat/conversations/{id}/export`: one conversation to take
//! away, as JSON (every message of every branch) or Markdown (the active
//! path, to read).

use std::{collections::BTreeMap, sync::Arc};

use futures::{
    channel::mpsc::{channel, Receiver, Sender},
    SinkExt, StreamExt,
};
use http_body::Frame;
use http_body_util::StreamBody;
use lambda_http::{
    http::{header, HeaderValue},
    Body, Request, RequestExt, Response,
};
use serde::Serialize;
use tracing::Instrument;

use super::{
    conversations::{MessageView, SettingsView},
    extract::{authenticate, cursor, path_conversation_id, RequestMeta},
    handle,
    stream::{streamed, Chunk},
    ApiError,
};
use crate::{
    app::App,
    catalogue::Catalogue,
    domain::{format_timestamp, Conversation, Message, MessageId, MessageStatus, Role, UserId},
    store::{Page, PageRequest, Store, Tree},
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

impl Export {
    /// The conversation with every message of every branch.
    fn of(tree: Tree, catalogue: &Catalogue) -> Self {
        Self {
            id: tree.conversation.id.to_string(),
            title: tree.conversation.title.as_str().to_owned(),
            created_at: format_timestamp(tree.conversation.created_at),
            messages: every_message(tree.path, tree.off)
                .into_iter()
                .map(MessageView::from)
                .collect(),
            settings: SettingsView::of(tree.conversation.settings, catalogue),
        }
    }
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
                let bytes =
                    serde_json::to_vec(&Export::of(tree, app.chat.catalogue())).unwrap_or_default();
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

/// Lines the export of every conversation holds between its reads and the
/// client: when the client (or Lambda's 2 MB/s after the first 6 MB) is
/// slower than the reads, the reads wait, so memory holds this many lines
/// and [`crate::chat::EXPORT_READS_AT_ONCE`] trees, however many conversations there are.
const LINES_BUFFERED: usize = 4;

/// Conversations per page of the list an export walks; an export that
/// stops early stops between pages, so a cursor is never inside one.
const EXPORT_PAGE: u32 = 25;

/// An export with less than this left before its deadline ends with a
/// cursor instead of reading another page: the line that says so must
/// reach a client that may be draining a full buffer at 2 MB/s.
const EXPORT_STOP_BEFORE: std::time::Duration = std::time::Duration::from_secs(30);

/// The body of the export of every conversation: lines as they are read.
pub type NdjsonBody = StreamBody<Receiver<Chunk>>;

/// The last line of an export of every conversation: whether it is whole.
#[derive(Serialize)]
struct End {
    /// `complete`; `partial` (go on with `next_cursor`); `failed` (a read
    /// failed: `error` says why, and `next_cursor` goes on from the page
    /// it was reading, whose first conversations may come again).
    end: &'static str,
    /// Conversation lines this response sent.
    conversations: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

/// `GET /api/chat/export`: every one of the caller's conversations, most
/// recently updated first, as NDJSON (each line what the one-conversation
/// JSON export holds), written as it is read; then a last line
/// `{"end": ...}`. A token, a cursor or the first page that fails is an
/// ordinary JSON error before the stream.
pub async fn export_all<M, S>(app: Arc<App<M, S>>, req: Request) -> Response<NdjsonBody>
where
    M: Send + Sync + 'static,
    S: Store + Send + 'static,
{
    let (tx, rx) = channel(LINES_BUFFERED);
    let writer = tx.clone();
    let started = handle("export-all", &app, req, |req, meta| {
        let app = app.clone();
        async move {
            let user = authenticate(&app, &req)?;
            let cursor = cursor(&req);
            let first = PageRequest {
                limit: EXPORT_PAGE,
                cursor: cursor.clone(),
            };
            // Read before the 200: a forged cursor is a 400, a store that
            // does not answer a 503, like any list.
            let page = app.chat.list_conversations(&user, &first).await?;
            let lines = Lines {
                tx: writer,
                bytes: 0,
                conversations: 0,
            };
            let export = write_all(app, user, page, cursor, lines, meta);
            tokio::spawn(export.instrument(tracing::Span::current()));
            let mut resp = Response::new(Body::Empty);
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"conversations.ndjson\""),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
    })
    .await;
    // A new channel has room for a message from each sender: the refusal fits.
    streamed(started, StreamBody::new(rx), move |refusal| {
        let mut tx = tx;
        let _ = tx.try_send(refusal);
    })
}

/// Writes the export's lines into the response body.
struct Lines {
    tx: Sender<Chunk>,
    bytes: usize,
    conversations: u64,
}

impl Lines {
    /// Sends one line, waiting for room; `false` when the client has gone.
    async fn send(&mut self, value: &impl Serialize) -> bool {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.bytes += line.len();
        self.tx.send(Ok(Frame::data(line.into()))).await.is_ok()
    }
}

/// The export after its first page: each page's conversations, then the
/// next page, until the list ends, the byte or time budget runs out, or a
/// read fails; then the `end` line.
async fn write_all<M, S>(
    app: Arc<App<M, S>>,
    user: UserId,
    mut page: Page<Conversation>,
    mut cursor: Option<String>,
    mut lines: Lines,
    meta: RequestMeta,
) where
    M: Send + Sync + 'static,
    S: Store + Send + 'static,
{
    let catalogue = app.chat.catalogue();
    let mut failed = None;
    let end = 'pages: loop {
        let trees = app.chat.export_each(&user, std::mem::take(&mut page.items));
        futures::pin_mut!(trees);
        while let Some(tree) = trees.next().await {
            match tree {
                Ok(tree) => {
                    if !lines.send(&Export::of(tree, catalogue)).await {
                        tracing::info!(
                            conversations = lines.conversations,
                            "export: the client left"
                        );
                        return;
                    }
                    lines.conversations += 1;
                }
                Err(e) => {
                    failed = Some(ApiError::from(e));
                    break 'pages "failed";
                }
            }
        }
        let Some(next) = page.next_cursor.take() else {
            break "complete";
        };
        cursor = Some(next);
        let late = tokio::time::Instant::now() + EXPORT_STOP_BEFORE >= meta.deadline;
        if late || lines.bytes >= app.config.export_max_bytes {
            break "partial";
        }
        let request = PageRequest {
            limit: EXPORT_PAGE,
            cursor: cursor.clone(),
        };
        match app.chat.list_conversations(&user, &request).await {
            Ok(next) => page = next,
            Err(e) => {
                failed = Some(ApiError::from(e));
                break "failed";
            }
        }
    };
    if let Some(e) = &failed {
        e.log();
    }
    tracing::info!(
        end,
        conversations = lines.conversations,
        bytes = lines.bytes,
        "export done"
    );
    let conversations = lines.conversations;
    lines
        .send(&End {
            end,
            conversations,
            next_cursor: if end == "complete" { None } else { cursor },
            error: failed.map(|e| e.body(&meta.request_id)["error"].take()),
        })
        .await;
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
