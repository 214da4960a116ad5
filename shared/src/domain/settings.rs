//! A conversation's settings: which model of the catalogue answers it, the
//! instructions it gets instead of the deployment's `SYSTEM_PROMPT`, and
//! its sampling values; and a change to them, as a send or a `PATCH` gives it.

use std::{fmt, sync::Arc};

use serde_json::{Map, Value};

/// Longest `instructions`, in characters.
pub const INSTRUCTIONS_MAX_CHARS: usize = 8_000;

/// `temperature` and `top_p` are kept to this many decimal places: far
/// finer than any sampler tells apart (vLLM samples in 32-bit floats), and
/// every value so kept is a number DynamoDB can hold (it refuses a magnitude
/// below 1e-130, which a JSON number such as 5e-324 is).
const SAMPLING_DECIMALS: i32 = 6;

/// The least `top_p`: above 0, and kept (six decimals) above 0 too.
const TOP_P_MIN: f64 = 0.000_001;

fn kept(x: f64) -> f64 {
    let scale = 10f64.powi(SAMPLING_DECIMALS);
    (x * scale).round() / scale
}

/// A model's id in the catalogue: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`.
/// Shared, not copied: every reply a send stores names its model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelId(Arc<str>);

impl ModelId {
    /// `raw`, when it is a well-formed id.
    pub fn parse(raw: &str) -> Option<Self> {
        let valid = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        valid.then(|| Self(Arc::from(raw)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a conversation chose; `None` is the deployment's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// The catalogue's model that answers.
    pub model: Option<ModelId>,
    /// Replaces `SYSTEM_PROMPT`; an empty text sends no instructions at all.
    pub instructions: Option<String>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// Nucleus sampling, above 0 and at most 1.
    pub top_p: Option<f64>,
    /// The reply's token limit, 1 to the model's `max_output_tokens`.
    pub max_tokens: Option<u32>,
}

/// What a change does to one setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Change<T> {
    /// Not named: the stored value stays.
    #[default]
    Keep,
    /// Named as `null`: back to the default.
    Reset,
    /// A new value.
    Set(T),
}

impl<T: Clone> Change<T> {
    fn apply(&self, to: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Reset => *to = None,
            Change::Set(v) => *to = Some(v.clone()),
        }
    }
}

/// A change to a conversation's settings, each field checked on its own
/// (the model's own limits are the catalogue's to check).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsPatch {
    /// The model.
    pub model: Change<ModelId>,
    /// The instructions.
    pub instructions: Change<String>,
    /// The temperature.
    pub temperature: Change<f64>,
    /// The nucleus.
    pub top_p: Change<f64>,
    /// The reply's token limit.
    pub max_tokens: Change<u32>,
}

/// Why a `settings` object is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A model the catalogue does not hold (422 `unknown_model`).
    #[error("unknown model {0:?}: GET /api/chat/models lists the models")]
    UnknownModel(String),
    /// A field that is unknown, of the wrong type or out of range (422 `invalid_settings`).
    #[error("settings{}{field} {reason}", if .field.is_empty() { "" } else { "." })]
    Invalid {
        /// The field, as the body names it.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SettingsError {
    /// `field` is refused for `reason`.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The fields `settings` knows, in the order the errors list them.
pub const SETTINGS_FIELDS: [&str; 5] = [
    "model",
    "instructions",
    "temperature",
    "top_p",
    "max_tokens",
];

impl SettingsPatch {
    /// Reads a body's `settings` object; a field it does not know (a typo
    /// such as `temprature`) is refused, never ignored.
    pub fn parse(value: &Value) -> Result<Self, SettingsError> {
        let Value::Object(fields) = value else {
            return Err(SettingsError::invalid("", "must be an object"));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !SETTINGS_FIELDS.contains(&k.as_str()))
        {
            return Err(SettingsError::invalid(
                unknown,
                format!(
                    "is not a setting; the settings are {}",
                    SETTINGS_FIELDS.join(", ")
                ),
            ));
        }
        Ok(Self {
            model: change(fields, "model", |v| {
                let raw = v.as_str().ok_or("must be a string or null")?;
                ModelId::parse(raw).ok_or("unknown")
            })
            .map_err(|e| match e {
                SettingsError::Invalid { reason, .. } if reason == "unknown" => {
                    SettingsError::UnknownModel(fields["model"].as_str().unwrap_or("").to_owned())
                }
                other => other,
            })?,
            instructions: change(fields, "instructions", |v| {
                let text = v.as_str().ok_or("must be a string or null")?;
                if text.chars().count() > INSTRUCTIONS_MAX_CHARS {
                    return Err("must be at most 8000 characters");
                }
                Ok(text.to_owned())
            })?,
            temperature: change(fields, "temperature", |v| {
                let t = v.as_f64().ok_or("must be a number or null")?;
                if (0.0..=2.0).contains(&t) {
                    Ok(kept(t))
                } else {
                    Err("must be from 0 to 2")
                }
            })?,
            top_p: change(fields, "top_p", |v| {
                let p = v.as_f64().ok_or("must be a number or null")?;
                if (TOP_P_MIN..=1.0).contains(&p) {
                    Ok(kept(p))
                } else {
                    Err("must be from 0.000001 to 1")
                }
            })?,
            max_tokens: change(fields, "max_tokens", |v| {
                let n = v
                    .as_u64()
                    .ok_or("must be a whole number of at least 1, or null")?;
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("must be a whole number of at least 1, or null")
            })?,
        })
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `settings` with this change made.
    pub fn applied_to(&self, settings: &Settings) -> Settings {
        let mut out = settings.clone();
        self.model.apply(&mut out.model);
        self.instructions.apply(&mut out.instructions);
        self.temperature.apply(&mut out.temperature);
        self.top_p.apply(&mut out.top_p);
        self.max_tokens.apply(&mut out.max_tokens);
        out
    }
}

/// One field of a `settings` object: absent, `null`, or a value `read` accepts.
fn change<T>(
    fields: &Map<String, Value>,
    name: &str,
    read: impl FnOnce(&Value) -> Result<T, &'static str>,
) -> Result<Change<T>, SettingsError> {
    match fields.get(name) {
        None => Ok(Change::Keep),
        Some(Value::Null) => Ok(Change::Reset),
        Some(v) => read(v)
            .map(Change::Set)
            .map_err(|reason| SettingsError::invalid(name, reason)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<SettingsPatch, SettingsError> {
        SettingsPatch::parse(&v)
    }

    #[test]
    fn model_ids_are_short_lowercase_words() {
        assert!(ModelId::parse("llama-3.1_8b").is_some());
        for bad in ["", "Large", "a b", "x/y", &"a".repeat(65)] {
            assert!(ModelId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn fields_are_kept_reset_or_set() {
        let p = parse(json!({"model": "large", "temperature": 0.5, "top_p": null})).unwrap();
        assert_eq!(p.model, Change::Set(ModelId::parse("large").unwrap()));
        assert_eq!(p.temperature, Change::Set(0.5));
        assert_eq!(p.top_p, Change::Reset);
        assert_eq!(p.max_tokens, Change::Keep);
        let stored = Settings {
            top_p: Some(0.9),
            max_tokens: Some(100),
            ..Settings::default()
        };
        let after = p.applied_to(&stored);
        assert_eq!(after.top_p, None);
        assert_eq!(after.max_tokens, Some(100));
        assert_eq!(after.temperature, Some(0.5));
        assert!(parse(json!({})).unwrap().is_empty());
    }

    #[test]
    fn every_refusal_names_its_field() {
        let cases = [
            (json!({"temprature": 1}), "temprature"),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_p": 1.5}), "top_p"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": 1.5}), "max_tokens"),
            (json!({"instructions": "x".repeat(8_001)}), "instructions"),
            (json!({"instructions": 7}), "instructions"),
            (json!({"model": 7}), "model"),
        ];
        for (body, field) in cases {
            match parse(body.clone()) {
                Err(SettingsError::Invalid { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(
            parse(json!({"model": "No Such"})),
            Err(SettingsError::UnknownModel("No Such".into()))
        );
        assert!(parse(json!([1])).is_err());
        // Kept to six decimals: a value DynamoDB cannot hold never reaches it.
        let tiny = parse(json!({"temperature": 5e-324, "top_p": 0.1234567})).unwrap();
        assert_eq!(
            (tiny.temperature, tiny.top_p),
            (Change::Set(0.0), Change::Set(0.123457))
        );
        assert!(parse(json!({"top_p": 5e-324})).is_err());
        assert!(parse(json!({"top_p": 0.000001})).is_ok());
        assert!(parse(json!({"temperature": 2.0000004})).is_err());
        assert!(parse(json!({"instructions": "x".repeat(8_000)})).is_ok());
    }
}
