//! A local RunPod serverless endpoint for development and tests.
//! Configured by `RUNPOD_LOCAL_*` variables (see README); port from
//! `RUNPOD_LOCAL_PORT` (default 8002).

use chat_service_dev::runpod_local::{LocalRunPod, Responder, Settings, Vars};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vars = Vars::process();
    let settings = Settings::from_vars(&vars)?;
    let port: u16 = vars.number("RUNPOD_LOCAL_PORT")?.unwrap_or(8002);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let answers = match &settings.responder {
        Responder::Development => "the development responder (no AI model)".to_owned(),
        Responder::OpenAi {
            base_url, model, ..
        } => format!("{base_url} (model {model})"),
    };
    eprintln!("local RunPod endpoint on http://127.0.0.1:{port}, answering with {answers}");
    LocalRunPod::new(settings).serve(listener).await?;
    Ok(())
}
