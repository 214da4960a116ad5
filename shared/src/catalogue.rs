//! The models a deployment offers (`RUNPOD_MODELS`), each on its own
//! RunPod endpoint, read and checked once per cold start: a catalogue that
//! breaks a rule stops the function there, naming the entry and the rule.
//!
//! Without `RUNPOD_MODELS` the catalogue is one model, `default`, built
//! from `RUNPOD_ENDPOINT_ID`, `RUNPOD_INPUT_FORMAT`, `RUNPOD_MAX_TOKENS`
//! and `RUNPOD_CONTEXT_TOKENS`, so a deployment configured before the
//! catalogue existed works unchanged.

use std::sync::Arc;

use serde::Deserialize;

use crate::{
    config::{ConfigError, InputFormat},
    domain::{ModelId, Settings, SettingsError},
    runpod::is_runpod_id,
};

/// One model of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// What clients choose it by.
    pub id: ModelId,
    /// Its display name.
    pub name: String,
    /// What it is good for.
    pub description: String,
    /// The RunPod endpoint its jobs go to; never shown to clients.
    pub endpoint_id: String,
    /// How a conversation is sent to its worker.
    pub input_format: InputFormat,
    /// Its context window, in tokens: the prompt and the reply together.
    pub context_tokens: u32,
    /// The most tokens one reply may have (and its default `max_tokens`).
    pub max_output_tokens: u32,
    /// Whether conversations that chose no model use it.
    pub default: bool,
}

/// The models, exactly one of them the default.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    /// Shared with every send that asks them, never copied.
    models: Vec<Arc<ModelSpec>>,
    default: usize,
    /// `SYSTEM_PROMPT`: the instructions of conversations that set none.
    pub system_prompt: Option<Arc<str>>,
}

/// An entry of `RUNPOD_MODELS` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: String,
    endpoint_id: String,
    #[serde(default)]
    input_format: Option<String>,
    context_tokens: u32,
    max_output_tokens: u32,
    #[serde(default)]
    default: bool,
}

/// The context window assumed without `RUNPOD_CONTEXT_TOKENS`: Llama 3's
/// 8 192 (vLLM's `MAX_MODEL_LEN` is often set lower than a model allows).
pub const DEFAULT_CONTEXT_TOKENS: u32 = 8_192;

const VAR: &str = "RUNPOD_MODELS";

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid { name: VAR, reason }
}

/// `RUNPOD_INPUT_FORMAT`'s and an entry's `input_format` words.
pub fn input_format(raw: Option<&str>) -> Result<InputFormat, String> {
    match raw {
        None | Some("messages") => Ok(InputFormat::Messages),
        Some("prompt") => Ok(InputFormat::Prompt),
        Some(other) => Err(format!("{other:?} is neither \"messages\" nor \"prompt\"")),
    }
}

impl Catalogue {
    /// Reads `RUNPOD_MODELS` through `get`, or builds the one-model
    /// catalogue from the older variables. Empty and unset are the same.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let system_prompt = var("SYSTEM_PROMPT").map(Arc::from);
        let models: Vec<Arc<ModelSpec>> = match var(VAR) {
            Some(json) => parse(&json)?,
            None => vec![legacy(&var)?],
        }
        .into_iter()
        .map(Arc::new)
        .collect();
        let default = models.iter().position(|m| m.default).unwrap_or(0);
        Ok(Self {
            models,
            default,
            system_prompt,
        })
    }

    /// The models, in the order the catalogue lists them.
    pub fn models(&self) -> &[Arc<ModelSpec>] {
        &self.models
    }

    /// The model of conversations that chose none.
    pub fn default_model(&self) -> &Arc<ModelSpec> {
        &self.models[self.default]
    }

    /// The model `id` names, if the catalogue holds it.
    pub fn get(&self, id: &ModelId) -> Option<&Arc<ModelSpec>> {
        self.models.iter().find(|m| &m.id == id)
    }

    /// The model that answers a conversation with `settings`: its own, or
    /// the default when it chose none or its model left the catalogue.
    pub fn model_for(&self, settings: &Settings) -> &Arc<ModelSpec> {
        self.model_or_default(settings.model.as_ref())
    }

    /// The model `id` names, or the default for none or one that left the
    /// catalogue (a reply stored before the catalogue names none).
    pub fn model_or_default(&self, id: Option<&ModelId>) -> &Arc<ModelSpec> {
        id.and_then(|id| self.get(id))
            .unwrap_or_else(|| self.default_model())
    }

    /// Checks `settings` against the catalogue: the model must be one of
    /// it, `max_tokens` within that model's `max_output_tokens`.
    pub fn check(&self, settings: &Settings) -> Result<&Arc<ModelSpec>, SettingsError> {
        let model = match &settings.model {
            Some(id) => self
                .get(id)
                .ok_or_else(|| SettingsError::UnknownModel(id.to_string()))?,
            None => self.default_model(),
        };
        match settings.max_tokens {
            Some(n) if n > model.max_output_tokens => Err(SettingsError::invalid(
                "max_tokens",
                format!(
                    "must be at most {} for model {}",
                    model.max_output_tokens, model.id
                ),
            )),
            _ => Ok(model),
        }
    }
}

/// `RUNPOD_MODELS`, every rule checked.
fn parse(json: &str) -> Result<Vec<ModelSpec>, ConfigError> {
    let entries: Vec<Entry> = serde_json::from_str(json)
        .map_err(|e| invalid(format!("not a JSON array of models: {e}")))?;
    if entries.is_empty() {
        return Err(invalid("lists no model".into()));
    }
    let mut models: Vec<ModelSpec> = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let at = |rule: String| invalid(format!("entry {i} ({:?}): {rule}", e.id));
        let id = ModelId::parse(&e.id)
            .ok_or_else(|| at("id must be 1 to 64 of a-z, 0-9, '.', '_' and '-'".into()))?;
        if models.iter().any(|m| m.id == id) {
            return Err(at("id is listed twice".into()));
        }
        if !is_runpod_id(&e.endpoint_id) {
            return Err(at(
                "endpoint_id must be 1 to 128 letters, digits, '-' or '_'".into(),
            ));
        }
        let input_format =
            input_format(e.input_format.as_deref()).map_err(|r| at(format!("input_format {r}")))?;
        if e.max_output_tokens == 0 || e.max_output_tokens >= e.context_tokens {
            return Err(at(
                "max_output_tokens must be at least 1 and below context_tokens".into(),
            ));
        }
        models.push(ModelSpec {
            name: e.name.unwrap_or_else(|| e.id.clone()),
            id,
            description: e.description,
            endpoint_id: e.endpoint_id,
            input_format,
            context_tokens: e.context_tokens,
            max_output_tokens: e.max_output_tokens,
            default: e.default,
        });
    }
    match models.iter().filter(|m| m.default).count() {
        1 => Ok(models),
        n => Err(invalid(format!(
            "exactly one model must be \"default\": true ({n} are)"
        ))),
    }
}

/// The one model of a deployment without `RUNPOD_MODELS`. Its endpoint
/// may be unset in functions that never ask the model; those that do
/// refuse to start without it ([`crate::app::App::runpod`]).
fn legacy(var: &impl Fn(&str) -> Option<String>) -> Result<ModelSpec, ConfigError> {
    let number = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
        var(name).map_or(Ok(default), |raw| {
            raw.trim().parse().map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("{e}"),
            })
        })
    };
    let input_format = input_format(var("RUNPOD_INPUT_FORMAT").as_deref()).map_err(|reason| {
        ConfigError::Invalid {
            name: "RUNPOD_INPUT_FORMAT",
            reason,
        }
    })?;
    let endpoint_id = var("RUNPOD_ENDPOINT_ID").unwrap_or_default();
    if !endpoint_id.is_empty() && !is_runpod_id(&endpoint_id) {
        return Err(ConfigError::Invalid {
            name: "RUNPOD_ENDPOINT_ID",
            reason: "must be 1 to 128 letters, digits, '-' or '_'".into(),
        });
    }
    let max_output_tokens = number("RUNPOD_MAX_TOKENS", 1024)?;
    let context_tokens = number("RUNPOD_CONTEXT_TOKENS", DEFAULT_CONTEXT_TOKENS)?;
    if max_output_tokens == 0 || max_output_tokens >= context_tokens {
        return Err(ConfigError::Invalid {
            name: "RUNPOD_MAX_TOKENS",
            reason: "must be at least 1 and below RUNPOD_CONTEXT_TOKENS".into(),
        });
    }
    Ok(ModelSpec {
        id: ModelId::parse("default").expect("a valid id"),
        name: "Default model".into(),
        description: String::new(),
        endpoint_id,
        input_format,
        context_tokens,
        max_output_tokens,
        default: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Catalogue, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Catalogue::from_lookup(&|k: &str| {
            pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    const TWO: &str = r#"[
        {"id": "small", "name": "Llama 3.1 8B", "description": "Fast answers", "endpoint_id": "abc123",
         "input_format": "messages", "context_tokens": 8192, "max_output_tokens": 1024, "default": true},
        {"id": "large", "name": "Llama 3.1 70B", "endpoint_id": "def456", "input_format": "prompt",
         "context_tokens": 32768, "max_output_tokens": 4096}
    ]"#;

    #[test]
    fn a_catalogue_lists_its_models_and_one_default() {
        let c = read(&[("RUNPOD_MODELS", TWO), ("SYSTEM_PROMPT", "Be brief.")]).unwrap();
        assert_eq!(c.models().len(), 2);
        assert_eq!(c.default_model().id.as_str(), "small");
        let large = c.get(&ModelId::parse("large").unwrap()).unwrap();
        assert_eq!(
            (
                large.endpoint_id.as_str(),
                large.input_format,
                large.name.as_str()
            ),
            ("def456", InputFormat::Prompt, "Llama 3.1 70B")
        );
        assert_eq!(c.system_prompt.as_deref(), Some("Be brief."));
    }

    #[test]
    fn without_a_catalogue_the_older_variables_make_one_model() {
        let c = read(&[
            ("RUNPOD_ENDPOINT_ID", "ep"),
            ("RUNPOD_MAX_TOKENS", "256"),
            ("RUNPOD_INPUT_FORMAT", "prompt"),
        ])
        .unwrap();
        let m = c.default_model();
        assert_eq!(m.id.as_str(), "default");
        assert_eq!((m.endpoint_id.as_str(), m.max_output_tokens), ("ep", 256));
        assert_eq!(m.context_tokens, DEFAULT_CONTEXT_TOKENS);
        assert_eq!(m.input_format, InputFormat::Prompt);
        assert_eq!(read(&[]).unwrap().default_model().endpoint_id, "");
    }

    #[test]
    fn each_broken_rule_is_named_with_its_entry() {
        let entry = |fields: &str| {
            format!(
                r#"[{{"id": "a", "endpoint_id": "e", "context_tokens": 100, "max_output_tokens": 10, "default": true{fields}}}]"#
            )
        };
        let cases = [
            ("nope".to_owned(), "not a JSON array"),
            ("[]".to_owned(), "lists no model"),
            (entry(r#", "temprature": 1"#), "unknown field `temprature`"),
            (
                entry("").replace(r#""a""#, r#""A B""#),
                "entry 0 (\"A B\"): id",
            ),
            (
                entry("").replace(r#""e""#, r#""../x""#),
                "entry 0 (\"a\"): endpoint_id",
            ),
            (entry(r#", "input_format": "xml""#), "input_format"),
            (
                entry("").replace("\"max_output_tokens\": 10", "\"max_output_tokens\": 100"),
                "max_output_tokens",
            ),
            (entry("").replace("true", "false"), "exactly one model"),
            (
                TWO.replace(r#""id": "large""#, r#""id": "small""#),
                "entry 1 (\"small\"): id is listed twice",
            ),
            (
                TWO.replace(
                    r#""max_output_tokens": 4096"#,
                    r#""max_output_tokens": 4096, "default": true"#,
                ),
                "(2 are)",
            ),
        ];
        for (json, rule) in cases {
            let err = read(&[("RUNPOD_MODELS", &json)]).unwrap_err().to_string();
            assert!(
                err.contains("RUNPOD_MODELS") && err.contains(rule),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn settings_are_checked_against_their_model() {
        let c = read(&[("RUNPOD_MODELS", TWO)]).unwrap();
        let settings = |model: Option<&str>, max: Option<u32>| Settings {
            model: model.map(|m| ModelId::parse(m).unwrap()),
            max_tokens: max,
            ..Settings::default()
        };
        assert_eq!(
            c.check(&settings(None, Some(1024))).unwrap().id.as_str(),
            "small"
        );
        assert!(c.check(&settings(None, Some(1025))).is_err());
        assert!(c.check(&settings(Some("large"), Some(4096))).is_ok());
        assert_eq!(
            c.check(&settings(Some("huge"), None)),
            Err(SettingsError::UnknownModel("huge".into()))
        );
        assert_eq!(
            c.model_for(&settings(Some("huge"), None)).id.as_str(),
            "small"
        );
    }
}
